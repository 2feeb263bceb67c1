"""``cohortflow run``: Snakemake started for a study under a profile, its output relayed to
a log file and, filtered, to the console."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from cohortflow import private, quality
from cohortflow.disclosure import Disclosure
from cohortflow.runner._command import global_resources, snakemake_command, snakemake_dir
from cohortflow.runner._console import ConsoleFilter, StepView
from cohortflow.runner._lock import forget_head, record_head, release_stale_lock
from cohortflow.runner._progress import DEBUG_DAG, HIDDEN, ROUTINE, RunProgress
from cohortflow.runner._slurm_faults import LimitWatch, resource_caps
from cohortflow.study import load_study


def run_workflow(study: Path | None, profile: str, results: Path, extra: list[str],
                 verbose: bool = False) -> int:
    """Validate the study, then run Snakemake in this directory; returns its exit status.

    A head process killed outright (SIGKILL, a lost login session) leaves Snakemake's
    directory lock behind; the next run here releases it and resumes without redoing
    finished steps (see :mod:`cohortflow.runner._lock`).

    A SLURM job that runs out of memory or time gets one line of its own (rule, amount
    asked for, retried or not, the fix) next to Snakemake's output: see
    :mod:`cohortflow.runner._slurm_faults`.

    A run that failed only because a step refused its input (a cohortflow error, with its
    fix) exits with status 2, as the other commands do; any other failure keeps Snakemake's.

    Snakemake's whole output goes to ``<results>/<study>/logs/snakemake.log`` (rewritten by
    each run); the console shows one line per step, anything out of the ordinary without
    stack frames, each failing step's one-line error at the end, and a summary: what ran,
    what was reused, how long it took, where the report and the log are (see
    :mod:`cohortflow.runner._console`).  ``verbose`` (or a dry run) shows all of Snakemake's
    output as well.
    """
    # one clear message for a bad study, before Snakemake starts
    loaded = load_study(study)
    # owner-only results (or the study's group), checked before anything is written
    private.protect(results.resolve() / loaded.name, loaded.share_with_group)
    gate = Disclosure.of(loaded, results.resolve())
    full_log = gate.layout.snakemake_log
    own_listing = DEBUG_DAG not in extra  # which jobs are up to date, for the summary
    command = snakemake_command(study, profile, results,
                                [*extra, DEBUG_DAG] if own_listing else extra)
    release_stale_lock(command)
    console = ConsoleFilter()
    dry_run = any(arg in ("-n", "--dry-run", "--dryrun") for arg in extra)  # the plan is the news
    view = StepView(RunProgress(own_dag_listing=own_listing), verbose or dry_run)
    # above the live steps, not through logging's own handle on stderr
    watch = LimitWatch(snakemake_dir(extra) / "log", lambda told: view.write(f"warning: {told}"),
                       resource_caps(global_resources(profile, extra)))
    started = time.monotonic()
    with watch, gate.open_log(full_log) as sink:
        head = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace",
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        record_head(head.pid)
        try:
            with view:
                code = _relay(head, sink, console, view)
        except BaseException:
            _relay(head, sink, None, None)  # Snakemake's shutdown: to the log, never a full pipe
            raise
    quality.show(study, results)  # the ingest's data-quality warnings, counts suppressed
    if code > 0 and console.bad_input():  # refused input: the status of every command's refusal
        code = 2
    if code >= 0:  # a head killed by a signal keeps its record, so the lock can be released
        forget_head()
    for line in view.progress.summary(time.monotonic() - started, code):
        sys.stderr.write(line + "\n")
    report = gate.layout.report
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
