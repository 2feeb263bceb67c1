"""Running a study's workflow with Snakemake: ``cohortflow run``, ``verify`` and ``status``.

- :func:`run_workflow` starts Snakemake for a study under a profile, releases the lock of a
  killed earlier run, writes Snakemake's whole output to a log file and shows one line per
  step on the console (:class:`ConsoleFilter`, :class:`StepView`, :class:`RunProgress`),
  with a line of its own for each SLURM job that ran out of memory or time
  (:class:`LimitWatch`).
- :func:`verify` reruns the study of a manifest and compares every output.
- :func:`status` says which steps are done, pending or out of date, and why.
- :func:`snakemake_command` and :func:`workflow_root`: the command line and the checkout
  (Snakefile, profiles/) it runs.

Every line of Snakemake's log that these read is described once, in
:mod:`cohortflow.runner._snakemake_log`.
"""

from cohortflow.disclosure import STEP_FAILED
from cohortflow.runner._command import snakemake_command, workflow_root
from cohortflow.runner._console import ConsoleFilter, StepView
from cohortflow.runner._lock import process_alive
from cohortflow.runner._progress import (
    DEBUG_DAG,
    HIDDEN,
    NEWS,
    ROUTINE,
    RunProgress,
    Step,
    duration,
)
from cohortflow.runner._run import run_workflow
from cohortflow.runner._slurm_faults import (
    Limit,
    LimitReader,
    LimitWatch,
    classify,
    resource_caps,
)
from cohortflow.runner._status import StepState, status
from cohortflow.runner._verify import verify

__all__ = [
    "DEBUG_DAG",
    "HIDDEN",
    "NEWS",
    "ROUTINE",
    "STEP_FAILED",
    "ConsoleFilter",
    "Limit",
    "LimitReader",
    "LimitWatch",
    "RunProgress",
    "Step",
    "StepState",
    "StepView",
    "classify",
    "duration",
    "process_alive",
    "resource_caps",
    "run_workflow",
    "snakemake_command",
    "status",
    "verify",
    "workflow_root",
]
