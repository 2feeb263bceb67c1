"""The lines of Snakemake's log that cohortflow reads, each kind of line described once.

Snakemake 9 prints plain text (on the head's output, and in the
``.snakemake/log/*.snakemake.log`` it writes).  Three readers follow it: the step progress
(:mod:`._progress`), the console filter (:mod:`._console`) and the SLURM fault reader
(:mod:`._slurm_faults`); they share these patterns, so a change in Snakemake's wording is
fixed here for all of them.

>>> JOB.match("localrule cohort_shard:")[1], FAILED.match("Error in rule features:")[1]
('cohort_shard', 'features')
>>> FIELD.match("    jobid: 8").groups()
('jobid', '8')
>>> bool(STAMP.fullmatch("[Tue Dec  1 16:13:10 2026]")), bool(SCHEDULING.match("Execute 2 jobs..."))
(True, True)
"""

from __future__ import annotations

import re

ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""A terminal colour code, which Snakemake may put around a line."""

# ----------------------------------------------------------------- the run's preamble
BANNER = "SNAKEMAKE"
"""The line that opens the header block (date, version) under the profile notes."""
JOB_STATS = "Job stats:"
"""The line before the table of planned jobs per rule; planning is over."""
STATS_ROW = re.compile(r"^(\S+)\s+(\d+)$")
"""A row of the job stats table: ``cohort_shard   2`` (and ``total   4``)."""
DRY_RUN = "This was a dry-run"
NOTHING_TO_DO = "Nothing to be done"

# ------------------------------------------- the DAG listing asked for with --debug-dag
DAG_JOB = re.compile(r"^(candidate|selected) job (\S+)$")
DAG_WILDCARDS = re.compile(r"^    wildcards:(.*)$")
"""The wildcards of a DAG job, on the line under it (empty for a rule without any)."""
DAG_FILE = re.compile(r"^file .+:$")
"""A file of the DAG (how it is produced), with indented notes under it."""

# ------------------------------------------------------------------------ jobs
STAMP = re.compile(r"^\[\w{3} \w{3} [ \d]\d [\d:]{8} \d{4}\]")
"""The time stamp alone on the line above a job block (or before a line's text)."""
JOB = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
"""The head of a job block: ``rule features:``, ``localrule ingest:``, ``checkpoint x:``."""
FIELD = re.compile(r"^\s*(\w+): (.*)$")
"""A field of a job or error block, indented under it: ``    jobid: 8``."""
GROUP_JOB = re.compile(r"^(?:\[[^]]*\] )?Group job \S+")
"""The head of a group job (a SLURM job of several rules), its job heads indented."""
FINISHED = re.compile(r"^Finished job(?:id:)? (\d+)(?: \(Rule: (\S+)\))?")
"""A job that ended well: ``Finished jobid: 4 (Rule: ingest)`` (older: ``Finished job 4.``)."""
SUBMITTED = re.compile(r"^Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$")
"""A job handed to SLURM: its jobid, its SLURM job id and that job's own log."""
FAILED = re.compile(r"^Error in rule (\S+):$")
"""The head of a failed job's error block (fields: message, jobid, log, external_jobid)."""
SLURM_FAILED = re.compile(r"SLURM-job '(\d+)' failed.*?SLURM status is: '(\w+)'")
"""In an error block's message: the SLURM job that failed and the state it ended in."""
RESTART = re.compile(r"^Trying to restart job (\S+)\.$")
"""A failed job that the profile's ``retries`` run again."""

_LOG_NOTE = " (check log file(s) for error details)"


def log_files(value: str) -> list[str]:
    """The paths of an error block's ``log`` field.

    >>> log_files("logs/a.log, logs/b.log (check log file(s) for error details)")
    ['logs/a.log', 'logs/b.log']
    """
    return [part.strip() for part in value.removesuffix(_LOG_NOTE).split(",") if part.strip()]


# ------------------------------------------------------ the scheduler between jobs
SCHEDULING = re.compile(r"^(?:Select jobs to execute|Execute \d+ jobs|Finished job(?:id:)? \d+|"
                        r"\d+ of \d+ steps? \(|Elapsed time:|Complete log|Shutting down)")
"""The scheduler's own lines between job blocks (they end any block before them)."""
STOPPING = re.compile(r"^(?:Exiting because|Will exit after|WorkflowError|Removing output)")
"""Lines of a run that stops after a failed job."""
ROUTINE = re.compile(
    r"^(?:Using workflow specific profile |Assuming |SNAKEMAKE$|=+$|Building DAG of jobs|"
    r"Using shell:|Provided (?:cores|resources|remote nodes)|Rules claiming more threads|"
    r"Nothing to be done|Waiting at most \d+ seconds|Storing output|Job \d+ has been submitted|"
    r"host: |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - \S+ - (?:DEBUG|INFO|WARNING) - )|"
    + SCHEDULING.pattern)
"""Snakemake's usual progress and notes (and a Dask worker's log records below warning):
lines nobody needs to see while a run goes well."""

# ---------------------------------------------------------- a job's exception
EXCEPTION_HEADER = re.compile(r'^([A-Za-z_][\w.]*) in file "[^"]*", line \d+:$')
"""Snakemake's head of a job's exception: ``StudySpecError in file "x.smk", line 15:``,
its message on the lines below, then its stack frames."""
TRACEBACK = "Traceback (most recent call last):"
FRAME = re.compile(r'^  File "[^"]*", line \d+(?:, in (\S+))?')
"""A stack frame (its source line follows, indented further)."""
EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::\s?(.*))?$")
"""The last line of a traceback: the exception's type and message."""
POINTERS = frozenset({
    "RuleException:",
    "WorkflowError:",
    "At least one job did not complete successfully.",
    "Exiting because a job execution failed. Look above for error messages",
})
"""Lines Snakemake prints around a failed job that only point at the error above them."""
