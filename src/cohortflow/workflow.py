"""Locating the workflow (Snakefile, profiles) and running it with Snakemake: runs, reruns
that verify a manifest, and the status of a study's steps."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from cohortflow import manifest, private, quality
from cohortflow.errors import CohortflowError
from cohortflow.run_output import ConsoleFilter, StepView
from cohortflow.run_progress import DEBUG_DAG, HIDDEN, ROUTINE, RunProgress
from cohortflow.slurm_faults import LimitWatch, resource_caps
from cohortflow.spec import demo_study_path, load_study

log = logging.getLogger(__name__)


def workflow_root() -> Path:
    """The directory holding the Snakefile and profiles/: this checkout of cohortflow."""
    for root in Path(__file__).resolve().parents:
        if (root / "Snakefile").is_file() and (root / "profiles").is_dir():
            return root
    raise CohortflowError(
        "the cohortflow workflow (Snakefile, profiles/) was not found next to the package; "
        "fix: install cohortflow from its repository with `pip install -e .`"
    )


def snakemake_command(study: Path | None, profile: str, results: Path,
                      extra: list[str]) -> list[str]:
    """The Snakemake command line for a study under a profile.

    ``extra`` (what follows ``--`` on ``cohortflow run``: targets, options) goes before
    ``--config``, whose list of entries would otherwise swallow a target.  A path under
    ``results`` given relative to this directory is made absolute, as the rules' outputs
    are.  A ``--config`` of its own is merged into cohortflow's, which wins for ``study``,
    ``results`` and ``profile``.

    >>> command = snakemake_command(None, "laptop", Path("r"), ["r/x.json", "-j", "2"])
    >>> target, *rest = command[command.index("--config") - 3:command.index("--config")]
    >>> target == str(Path("r/x.json").resolve()), rest
    (True, ['-j', '2'])
    >>> command = snakemake_command(None, "laptop", Path("r"), ["--config", "a=1", "-n"])
    >>> at = command.index("--config")
    >>> command[at - 1:at + 2], command[-1]
    (['-n', '--config', 'a=1'], 'profile=laptop')
    """
    root = workflow_root()
    profile_dir = root / "profiles" / profile
    if not (profile_dir / "config.yaml").is_file():
        known = sorted(p.name for p in (root / "profiles").iterdir() if p.is_dir())
        raise CohortflowError(
            f"profile '{profile}' not found in {root / 'profiles'}; fix: one of {', '.join(known)}"
        )
    study_path = (study or demo_study_path()).resolve()
    extra, config = _without_option(extra, "--config", "-C")
    extra = [str(Path(arg).resolve()) if _under(Path(arg), results) else arg for arg in extra]
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(root / "Snakefile"),
        "--workflow-profile", str(profile_dir),
        *extra,
        # --config replaces the profile's config list, so the profile name is repeated here.
        "--config", *config, f"study={study_path}", f"results={results.resolve()}",
        f"profile={profile}",
    ]


def _under(path: Path, root: Path) -> bool:
    """Whether a relative ``path`` lies under ``root`` (both as given on the command line).

    >>> _under(Path("results/demo/report.html"), Path("results")), _under(Path("all"), Path("."))
    (True, False)
    """
    # a target is at least <results>/<study>/<file>: a rule name has no slash
    return (not path.is_absolute() and not root.is_absolute() and "/" in str(path)
            and not str(path).startswith("-") and path.parts[:len(root.parts)] == root.parts)


def _without_option(extra: list[str], *names: str) -> tuple[list[str], list[str]]:
    """``extra`` without every option called one of ``names``, and those options' values.

    >>> _without_option(["t", "--config", "a=1", "b=2", "-n", "--config=c=3"], "--config")
    (['t', '-n'], ['a=1', 'b=2', 'c=3'])
    """
    kept: list[str] = []
    values: list[str] = []
    taking = False
    for arg in extra:
        name, eq, value = arg.partition("=")
        if name in names:
            taking = not eq
            values += [value] if eq else []
        elif taking and not arg.startswith("-"):
            values.append(arg)
        else:
            taking = False
            kept.append(arg)
    return kept, values


HEAD_FILE = Path(".cohortflow") / "head.json"


def run_workflow(study: Path | None, profile: str, results: Path, extra: list[str],
                 verbose: bool = False) -> int:
    """Validate the study, then run Snakemake in this directory; returns its exit status.

    A head process killed outright (SIGKILL, a lost login session) leaves Snakemake's
    directory lock behind.  The head's host and pid are kept in ``.cohortflow/head.json``
    while it runs, so the next run can tell a stale lock (same host, process gone) from a
    live run, release the stale one and resume without redoing finished steps.

    A SLURM job that runs out of memory or time gets one line of its own (rule, amount
    asked for, retried or not, the fix) next to Snakemake's output: see
    :mod:`cohortflow.slurm_faults`.

    Snakemake's whole output goes to ``<results>/<study>/logs/snakemake.log`` (rewritten by
    each run); the console shows one line per step, anything out of the ordinary without
    stack frames, each failing step's one-line error at the end, and a summary: what ran,
    what was reused, how long it took, where the report and the log are (see
    :mod:`cohortflow.run_output`).  ``verbose`` (or a dry run) shows all of Snakemake's
    output as well.
    """
    # one clear message for a bad study, before Snakemake starts
    loaded = load_study(study)
    # owner-only results (or the study's group), checked before anything is written
    private.protect(results.resolve() / loaded.name, loaded.share_with_group)
    full_log = results.resolve() / loaded.name / "logs" / "snakemake.log"
    own_listing = DEBUG_DAG not in extra  # which jobs are up to date, for the summary
    command = snakemake_command(study, profile, results,
                                [*extra, DEBUG_DAG] if own_listing else extra)
    if _stale_head():
        log.warning("the previous run in %s was killed; releasing its lock and resuming",
                    Path.cwd())
        subprocess.call([*command, "--unlock"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    console = ConsoleFilter()
    dry_run = any(arg in ("-n", "--dry-run", "--dryrun") for arg in extra)  # the plan is the news
    view = StepView(RunProgress(own_dag_listing=own_listing), verbose or dry_run)
    # above the live steps, not through logging's own handle on stderr
    watch = LimitWatch(_snakemake_dir(extra) / "log", lambda told: view.write(f"warning: {told}"),
                       resource_caps(_global_resources(profile, extra)))
    full_log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with watch, full_log.open("w") as sink:
        head = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace",
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        HEAD_FILE.parent.mkdir(exist_ok=True)
        HEAD_FILE.write_text(json.dumps({"host": socket.gethostname(), "pid": head.pid}))
        try:
            with view:
                code = _relay(head, sink, console, view)
        except BaseException:
            _relay(head, sink, None, None)  # Snakemake's shutdown: to the log, never a full pipe
            raise
    quality.show(study, results)  # the ingest's data-quality warnings, counts suppressed
    if code >= 0:  # a head killed by a signal keeps its record, so the lock can be released
        HEAD_FILE.unlink(missing_ok=True)
    for line in view.progress.summary(time.monotonic() - started, code):
        sys.stderr.write(line + "\n")
    report = full_log.parents[1] / "report.html"
    if code == 0 and report.is_file():
        sys.stderr.write(f"report: {report}\n")
    if code != 0:
        for line in console.errors():
            sys.stderr.write(f"error: {line}\n")
        sys.stderr.write(f"Snakemake's whole output, stack frames included: {full_log}\n")
    else:
        sys.stderr.write(f"Snakemake's whole output: {full_log}\n")
    return code


def _relay(head: subprocess.Popen[str], sink: IO[str], console: ConsoleFilter | None,
           view: StepView | None) -> int:
    """Copy the head's output to ``sink`` (all but the DAG listing asked for by
    :func:`run_workflow`) and, filtered, to the console, until it exits."""
    assert head.stdout is not None
    for line in head.stdout:
        text = line.rstrip("\n")
        kind = view.progress.feed(text, time.monotonic()) if view is not None else ROUTINE
        if kind == HIDDEN:
            continue
        sink.write(line)
        sink.flush()
        if console is not None and view is not None:
            view.take(text, kind, console.feed(text))
    return head.wait()


def _option(extra: list[str], *names: str) -> list[str] | None:
    """The values of the last Snakemake option called one of ``names`` in ``extra``.

    >>> _option(["--directory", "w", "-j", "2"], "--directory", "-d")
    ['w']
    >>> _option(["--resources=mem_mb=8000"], "--resources")
    ['mem_mb=8000']
    >>> _option(["--resources", "mem_mb=1", "gpu=1", "--until", "x"], "--resources")
    ['mem_mb=1', 'gpu=1']
    >>> _option([], "--directory") is None
    True
    """
    found = None
    for i, arg in enumerate(extra):
        name, eq, value = arg.partition("=")
        if name not in names:
            continue
        if eq:
            found = [value]
            continue
        values = []
        for following in extra[i + 1:]:
            if following.startswith("-"):
                break
            values.append(following)
        found = values
    return found


def _snakemake_dir(extra: list[str]) -> Path:
    """Where Snakemake keeps its state (``.snakemake``) for a run with these arguments."""
    directory = _option(extra, "--directory", "-d")
    return Path(directory[0] if directory else ".") / ".snakemake"


def _global_resources(profile: str, extra: list[str]) -> list[str]:
    """Snakemake's ``resources`` for a run: the command line's, else the profile's."""
    given = _option(extra, "--resources", "--res")
    if given is not None:
        return given
    config = yaml.safe_load((workflow_root() / "profiles" / profile / "config.yaml").read_text())
    return [str(entry) for entry in (config or {}).get("resources") or []]


def _stale_head() -> bool:
    """True when Snakemake's lock here belongs to a head on this host that no longer runs."""
    if not HEAD_FILE.is_file() or not any(Path(".snakemake/locks").glob("*")):
        return False
    try:
        head = json.loads(HEAD_FILE.read_text())
    except json.JSONDecodeError:
        return False
    if head.get("host") != socket.gethostname():
        return False  # another login node may still be running it: never steal its lock
    return not _alive(int(head["pid"]))


def _alive(pid: int) -> bool:
    """Whether a process runs on this host (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def verify(manifest_path: Path, profile: str | None = None, scratch: Path | None = None,
           keep_scratch: bool = False
           ) -> tuple[list[manifest.Finding], list[str], Path | None]:
    """Rerun the study of a manifest into a scratch directory and compare every output.

    Returns the verdicts, the recorded causes of any difference, and the rerun's manifest
    (None once removed).  A temporary scratch directory, which this function creates, is
    removed after the comparison unless ``keep_scratch``; one named by ``scratch`` is the
    caller's and is kept, and so is any scratch of a rerun that failed (its log is there).
    """
    recorded = manifest.read(manifest_path)
    study = Path(recorded["study"]["path"])
    if not study.is_file():
        raise CohortflowError(
            f"{manifest_path}: the study file {study} it records no longer exists; fix: "
            "restore it at that path (its sha256 is in the manifest) and verify again"
        )
    profiles = workflow_root() / "profiles"
    chosen = profile or recorded.get("profile", "laptop")
    if not (profiles / chosen / "config.yaml").is_file():
        chosen = "laptop"
    own_scratch = scratch is None
    scratch = Path(scratch or tempfile.mkdtemp(prefix="cohortflow-verify-")).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    with (scratch / "verify.log").open("w") as log:
        code = subprocess.call(
            snakemake_command(study, chosen, scratch / "results", ["--directory", str(scratch)]),
            stdout=log, stderr=subprocess.STDOUT,
        )
    rerun_path = scratch / "results" / load_study(study).name / "manifest.json"
    if code != 0 or not rerun_path.is_file():
        raise CohortflowError(
            f"{manifest_path}: the rerun in {scratch} failed (exit {code}); its log is "
            f"{scratch / 'verify.log'}"
        )
    findings, causes = manifest.compare(recorded, manifest.read(rerun_path))
    if own_scratch and not keep_scratch:
        shutil.rmtree(scratch)
        return findings, causes, None
    return findings, causes, rerun_path


@dataclass(frozen=True)
class StepState:
    """Where one rule's outputs stand."""

    rule: str
    outputs: int
    state: str  # "done", "pending" or "out of date"
    why: str


def status(study: Path | None, profile: str, results: Path) -> list[StepState]:
    """Which steps are done, pending or out of date, and why (Snakemake's summary)."""
    load_study(study)
    done = subprocess.run(
        snakemake_command(study, profile, results, ["--summary", "--quiet"]),
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise CohortflowError(f"snakemake --summary failed: {done.stderr.strip()[-2000:]}")
    lines = [line.split("\t") for line in done.stdout.splitlines() if "\t" in line]
    if not lines or lines[0][0] != "output_file":
        return []
    header = lines[0]
    by_rule: dict[str, list[tuple[str, str]]] = {}
    for row in lines[1:]:
        record = dict(zip(header, row, strict=False))
        by_rule.setdefault(record["rule"], []).append((record["status"], record["plan"]))
    return [_state(rule, rows) for rule, rows in by_rule.items()]


def _state(rule: str, rows: list[tuple[str, str]]) -> StepState:
    """One rule's state from its outputs' summary rows.

    >>> _state("model", [("ok", "no update"), ("missing", "update pending")]).state
    'pending'
    >>> _state("ingest", [("set of input files has changed", "update pending")]).why
    'set of input files has changed'
    """
    statuses = {status for status, _ in rows}
    if statuses == {"ok"} and all(plan == "no update" for _, plan in rows):
        return StepState(rule, len(rows), "done", "")
    if "missing" in statuses:
        return StepState(rule, len(rows), "pending", "output missing")
    reasons = sorted(s for s in statuses if s != "ok") or sorted({p for _, p in rows})
    return StepState(rule, len(rows), "out of date", "; ".join(reasons))
