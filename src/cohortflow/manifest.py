"""Run manifests: what a run read, ran with and wrote, so it can be verified years later.

A manifest records the study file (path, hash, digest), every analysis of the study (id,
target, outcome, time at risk) and the cohorts built for them, an input fingerprint per source
table (row count and content hash, taken at ingest), the cohortflow version and git commit,
the version of every installed package and the hash of the lock they were installed from
(see :mod:`cohortflow.environment`), the profile, the seeds, a checksum of every output and
the step timings (the wall time a user waited for each job, and its compute).
:func:`compare` tells, output by output, whether a rerun is identical, and why not.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cohortflow import __version__, environment, events

if TYPE_CHECKING:
    from cohortflow.disclosure import Disclosure
    from cohortflow.study import Study

# Files a tool adds beside the data that say nothing about the content.
IGNORED_NAMES = frozenset({".snakemake_timestamp"})
METRIC_TOLERANCE = 1e-9


def file_digest(path: Path) -> str:
    """SHA-256 of one file, streamed."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (or of ``root`` itself), keyed by relative path.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "a.txt").write_text("a")
    ...     tree_digests(Path(tmp))["a.txt"][:12]
    'ca978112ca1b'
    """
    root = Path(root)
    if root.is_file():
        return {root.name: file_digest(root)}
    return {
        path.relative_to(root).as_posix(): file_digest(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in IGNORED_NAMES
    }


def tree_digest(root: Path) -> dict[str, Any]:
    """One checksum for a file or a whole directory: the hash of its sorted file digests."""
    files = tree_digests(root)
    listing = "".join(f"{name}\t{digest}\n" for name, digest in files.items())
    return {"sha256": hashlib.sha256(listing.encode()).hexdigest(), "files": len(files)}


def package_versions() -> dict[str, str]:
    """The Python version and the version of every installed package (normalised names).

    >>> versions = package_versions()
    >>> versions["python"] == platform.python_version(), versions["cohortflow"] == __version__
    (True, True)
    """
    return {"python": platform.python_version(), **environment.installed_versions()}


def git_state(root: Path) -> dict[str, Any]:
    """The commit of the cohortflow checkout and whether it has uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if commit else None}


SNAKEMAKE_LOGS = Path(".snakemake") / "log"
"""Where Snakemake keeps one log per run, relative to its working directory."""
_STAMP = re.compile(r"^\[(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\]$")
_JOB = re.compile(r"^(?:local)?rule (\S+):$")
_FIELD = re.compile(r"^    (jobid|benchmark): (.+)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)\b")


def job_walls(logs: list[Path]) -> dict[str, float]:
    r"""Seconds each job took from its start to its finish as Snakemake saw them (its
    start-up included: Python, cohortflow, the study, Dask; on a cluster, the queue too),
    keyed by the job's absolute benchmark path; the latest finished run of each job wins.

    Snakemake logs these times to the second.

    >>> import tempfile
    >>> text = ("[Tue Dec  1 13:03:39 2026]\nrule ingest:\n    jobid: 2\n"
    ...         "    benchmark: b/ingest.tsv\n[Tue Dec  1 13:03:48 2026]\n"
    ...         "Finished jobid: 2 (Rule: ingest)\n")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "run.log").write_text(text)
    ...     list(job_walls([Path(tmp) / "run.log"]).values())
    [9.0]
    """
    walls: dict[str, float] = {}
    for path in sorted(logs):
        stamp: float | None = None
        job: dict[str, str] = {}
        started: dict[str, tuple[float, str]] = {}
        for line in Path(path).read_text(errors="replace").splitlines():
            if found := _STAMP.match(line):
                stamp = time.mktime(time.strptime(found[1], "%a %b %d %H:%M:%S %Y"))
            elif _JOB.match(line):
                job = {}
            elif (found := _FIELD.match(line)) and stamp is not None:
                job[found[1]] = found[2].strip()
                if "jobid" in job and "benchmark" in job:
                    started[job["jobid"]] = (stamp, str(Path(job["benchmark"]).resolve()))
            elif (found := _FINISHED.match(line)) and stamp is not None \
                    and found[1] in started:
                start, benchmark = started.pop(found[1])
                walls[benchmark] = stamp - start
    return walls


def step_timings(benchmarks: list[Path], logs: list[Path] | None = None,
                 root: Path | None = None) -> dict[str, dict[str, float | None]]:
    """Each step's time as a user waited for it and its compute, keyed by step: the
    benchmark file's path under ``root`` without ``.tsv`` (``model/<analysis>``, as a step
    of one analysis, cohort or shard is named), or its stem without a ``root``.

    ``wall_s`` is the job from its start to its finish in Snakemake's logs ``logs``
    (default: those of the working directory), start-up included, to the second; null
    where no log records the job.  ``compute_s`` and ``max_rss_mib`` are the step's own
    work, from its Snakemake benchmark file (which leaves the job's start-up out).
    """
    if logs is None:
        logs = sorted(SNAKEMAKE_LOGS.glob("*.snakemake.log"))
    walls = job_walls(logs)
    timings: dict[str, dict[str, float | None]] = {}
    for path in sorted(benchmarks):
        with Path(path).open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            rss = rows[-1].get("max_rss", "NA")
            compute = round(float(rows[-1]["s"]), 3)
            wall = walls.get(str(Path(path).resolve()))
            timings[_step_name(Path(path), root)] = {
                # a job lasts at least its own work, which a log to the second can hide
                "wall_s": None if wall is None else max(wall, compute),
                "compute_s": compute,
                "max_rss_mib": round(float(rss), 1) if rss not in ("NA", "-", "") else math.nan,
            }
    return timings


def build(*, disclosure: Disclosure, study_path: Path, study_digest: str,
          seeds: dict[str, int], profile: str, workflow_root: Path, results: Path,
          outputs: list[Path], source: dict[str, Any], inputs: dict[str, Any],
          metrics: dict[str, Any], benchmarks: list[Path],
          snakemake_logs: list[Path] | None = None,
          analyses: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of one finished run (outputs are checksummed here), as it may leave
    the compute.

    ``source`` says where the data came from (never with a credential); ``inputs`` holds
    each source table's fingerprint, exact: the row counts of the source tables are counts
    too (a death table of 3 rows), suppressed here by ``disclosure``; ``metrics`` the test
    metrics of each analysis's chosen model as they may be shared (:func:`shared_test`),
    by analysis id; ``analyses`` the study's
    analyses and cohorts (:func:`analyses_record`); ``snakemake_logs`` give each step's
    wall time (see :func:`step_timings`; steps are named under ``results/benchmarks``)."""
    packages = package_versions()
    return {
        "manifest_version": 3,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "study": {"path": str(Path(study_path).resolve()), "sha256": file_digest(study_path),
                  "digest": study_digest},
        "profile": profile,
        "seeds": seeds,
        "cohortflow": {"version": __version__, **git_state(workflow_root)},
        "packages": packages,
        "lock": environment.lock_record(workflow_root, packages),
        **(analyses or {"analyses": [], "cohorts": []}),
        "source": source,
        "inputs": disclosure.counts(inputs, frozenset({"rows"})),
        "outputs": {Path(p).relative_to(results).as_posix(): tree_digest(p) for p in outputs},
        "metrics": metrics,
        "steps": step_timings(benchmarks, snakemake_logs, Path(results) / "benchmarks"),
    }


def _step_name(path: Path, root: Path | None) -> str:
    """A benchmark file's step: its path under ``root`` without the suffix.

    >>> _step_name(Path("b/model/a__o__1y.tsv"), Path("b")), _step_name(Path("b/x.tsv"), None)
    ('model/a__o__1y', 'x')
    """
    if root is None or not path.is_relative_to(root):
        return path.stem
    return path.relative_to(root).with_suffix("").as_posix()


def analyses_record(study: Study) -> dict[str, Any]:
    """Every analysis of the study (id, target, outcome, time at risk) in the study's order,
    and the cohorts built for them (targets and outcome cohorts, sorted)."""
    return {"analyses": [{"id": a.id, "target": a.target, "outcome": a.outcome,
                          "time_at_risk": a.time_at_risk} for a in study.analysis_list()],
            "cohorts": study.cohorts_used()}


@dataclass(frozen=True)
class OutputVerdict:
    """The verdict on one output of a rerun."""

    output: str
    verdict: str  # "identical", "different" or "missing"


def compare(recorded: dict[str, Any], rerun: dict[str, Any]
            ) -> tuple[list[OutputVerdict], list[str]]:
    """Output-by-output verdicts, and the recorded causes that can explain a difference.

    >>> a = {"outputs": {"x": {"sha256": "1"}}, "metrics": {"auroc": 0.7}, "inputs": {},
    ...      "cohortflow": {}, "packages": {}, "study": {"sha256": "s"}}
    >>> b = {**a, "outputs": {"x": {"sha256": "2"}}, "inputs": {"person": {"rows": 3}}}
    >>> findings, causes = compare(a, b)
    >>> findings[0].verdict, findings[-1].verdict, causes
    ('different', 'identical', ['input changed: person (table added)'])
    """
    findings = []
    for name, digest in recorded["outputs"].items():
        other = rerun["outputs"].get(name)
        if other is None:
            findings.append(OutputVerdict(name, "missing"))
        else:
            same = other["sha256"] == digest["sha256"]
            findings.append(OutputVerdict(name, "identical" if same else "different"))
    same_metrics = _close(recorded.get("metrics"), rerun.get("metrics"))
    findings.append(OutputVerdict("metrics (to 1e-9)",
                                  "identical" if same_metrics else "different"))
    return findings, causes(recorded, rerun)


def causes(recorded: dict[str, Any], rerun: dict[str, Any]) -> list[str]:
    """What changed between two runs' recorded inputs, study, code and packages."""
    found = []
    if recorded["study"]["sha256"] != rerun["study"]["sha256"]:
        found.append("study file changed")
    for table in sorted(set(recorded["inputs"]) | set(rerun["inputs"])):
        before, after = recorded["inputs"].get(table), rerun["inputs"].get(table)
        if before is None:
            found.append(f"input changed: {table} (table added)")
        elif after is None:
            found.append(f"input changed: {table} (table removed)")
        elif before != after:
            found.append(f"input changed: {table} (content hash differs)")
    code_keys = ("version", "commit", "dirty")
    for key in code_keys:
        if recorded["cohortflow"].get(key) != rerun["cohortflow"].get(key):
            found.append(f"code changed: cohortflow {key} {recorded['cohortflow'].get(key)} "
                         f"-> {rerun['cohortflow'].get(key)}")
    return found + environment.changes(recorded, rerun)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=0, abs_tol=METRIC_TOLERANCE)
    return bool(a == b)


def source_record(study: Study) -> dict[str, Any]:
    """Where a study's data came from: a database url has no password (the study refuses
    one), a file source its resolved path."""
    if study.source.synth is not None:
        return {"kind": "synth", **study.source.synth.model_dump(mode="json")}
    if study.source.meds is not None:
        return {"kind": "meds", "location": str(study.source_path())}
    assert study.source.omop is not None
    spec = study.source.omop
    path = study.source_path()
    return {"kind": "omop", "location": spec.url if path is None else str(path),
            "format": spec.format, "schema": spec.schema_name}


def shared_test(metrics: dict[str, Any], disclosure: Disclosure) -> dict[str, Any]:
    """A chosen model's test metrics (its ``metrics.json``) as the manifest may hold them:
    all of them, or only why not (``{"test_withheld": ...}``) when its test split is too
    small to show them, the shared leaderboard's rule (:func:`models.withheld`)."""
    from cohortflow import models  # numpy and the study model: only for this step

    reason = models.withheld(metrics, disclosure)
    return dict(metrics["test"]) if reason is None else {models.WITHHELD: reason}


def write(study: Study, disclosure: Disclosure, study_path: Path, profile: str,
          workflow_root: Path, outputs: list[Path], benchmarks: list[Path]) -> None:
    """The study's run manifest (``manifest.json``), written through the disclosure gate:
    inputs (the source's tables; the genotype files and linkage of a study with
    ``genomics:``), code, packages, seeds, the analyses and cohorts, each analysis's test metrics
    (:func:`shared_test`), a checksum of each of ``outputs`` (a file or a folder, as
    given), step timings."""
    layout = disclosure.layout
    inputs = json.loads(events.source_fingerprint_path(layout.store).read_text())
    if study.genomics is not None:  # the genotype files and the linkage table, by content
        inputs["genomics"] = {"sha256": study.genomics_digest(),
                              "linkage_sha256": study.linkage_digest()}
    seeds = {"study": study.seed}
    if study.source.synth is not None:
        seeds["synth"] = study.source.synth.seed
    record = build(
        disclosure=disclosure, study_path=Path(study_path), study_digest=study.digest(),
        seeds=seeds, profile=profile, workflow_root=workflow_root, results=layout.root,
        outputs=[Path(p) for p in outputs], source=source_record(study),
        inputs=inputs,
        metrics={a.id: shared_test(json.loads(layout.model_metrics(a.id).read_text()),
                                   disclosure)
                 for a in study.analysis_list()},
        benchmarks=[Path(p) for p in benchmarks], analyses=analyses_record(study))
    disclosure.write_json(layout.manifest, record)


def read(path: Path) -> dict[str, Any]:
    """Load a manifest written by a run."""
    return dict(json.loads(Path(path).read_text()))
