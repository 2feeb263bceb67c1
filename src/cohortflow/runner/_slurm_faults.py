"""SLURM jobs that ran out of memory or time, told in one line that names the rule and the fix.

Snakemake's SLURM executor reports any failed job the same way -- ``SLURM-job '7' failed,
SLURM status is: 'FAILED'`` -- and the status alone rarely says why: a job killed by
``JobAcctGatherParams=OverMemoryKill`` (or whose task the kernel's OOM killer ended) may
end FAILED, and without accounting (``slurm-status-command: squeue``) the executor gives
no reason at all.  The job's own SLURM log does: ``Exceeded job memory limit``,
``oom-kill``, ``CANCELLED ... DUE TO TIME LIMIT``.

:class:`LimitReader` follows Snakemake's log line by line (the head's stderr, or the
``.snakemake/log/*.snakemake.log`` it writes), reads the SLURM log of every failed job,
and returns one line per job that hit its memory or time limit, naming the rule, the
amount asked for, whether the profile's ``retries`` gave it another attempt with more,
and the fix.  :class:`LimitWatch` runs one next to a Snakemake process.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cohortflow.runner import _snakemake_log as smk

__all__ = ["Limit", "LimitReader", "LimitWatch", "classify", "resource_caps"]

Limit = Literal["memory", "time"]

#: SLURM log lines (lower-cased) of a job ended for its memory: jobacct_gather's
#: OverMemoryKill, task/cgroup's OOM events, the kernel's OOM killer.
_MEMORY_MARKS = ("exceeded job memory limit", "exceeded step memory limit",
                 "exceeded memory limit", "oom-kill", "oom killed", "out of memory")
_TIME_MARKS = ("due to time limit",)
_KILLED_AT = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)")
_RESOURCE = {"memory": "mem_mb", "time": "runtime"}
_DEFAULT = {"memory": 2000, "time": 60}  # what to double when the ask is unknown


def classify(status: str, slurm_log: str) -> tuple[Limit, int | None] | None:
    """Which limit ended a failed SLURM job, and the bytes it had reached if SLURM said.

    >>> classify("FAILED", "slurmstepd: error: StepId=7.batch exceeded memory limit "
    ...          "(220766208 > 157286400), being killed\\nslurmstepd: error: Exceeded job "
    ...          "memory limit")
    ('memory', 220766208)
    >>> classify("OUT_OF_MEMORY", "")
    ('memory', None)
    >>> classify("TIMEOUT", "*** JOB 9 ON node1 CANCELLED AT 2026-01-01T00:01:02 "
    ...          "DUE TO TIME LIMIT ***")
    ('time', None)
    >>> classify("FAILED", "Traceback (most recent call last): ...") is None
    True
    """
    text = slurm_log.lower()
    if status == "OUT_OF_MEMORY" or any(mark in text for mark in _MEMORY_MARKS):
        reached = [int(m.group(1)) for m in _KILLED_AT.finditer(text)]
        return "memory", max(reached) if reached else None
    if status == "TIMEOUT" or any(mark in text for mark in _TIME_MARKS):
        return "time", None
    return None


def _limit_bytes(slurm_log: str) -> int | None:
    """The memory limit SLURM enforced, from its ``(used > limit)`` line."""
    found = _KILLED_AT.search(slurm_log.lower())
    return int(found.group(2)) if found else None


def _resources(text: str) -> dict[str, str]:
    """``tmpdir=<TBD>, mem_mb=150, mem=150 MB, runtime=1`` -> ``{"mem_mb": "150", ...}``.

    >>> _resources("tmpdir=<TBD>, mem_mb=150, mem=150 MB, runtime=1")["runtime"]
    '1'
    """
    pairs = (item.partition("=") for item in text.split(", "))
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _number(value: str | None) -> int | None:
    try:
        return math.ceil(float(value)) if value is not None else None
    except ValueError:
        return None


def _more(value: int) -> int:
    """Twice ``value``, rounded up to two significant digits.

    >>> _more(150), _more(2000), _more(1), _more(4321)
    (300, 4000, 2, 8700)
    """
    doubled = 2 * value
    step: int = 10 ** max(0, len(str(doubled)) - 2)
    return -(-doubled // step) * step


@dataclass
class _Attempt:
    """One submission of a rule's job, as Snakemake's job-info block describes it."""

    rule: str
    jobid: str = ""
    wildcards: str = ""
    resources: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    """A SLURM job that hit a limit, waiting to be told."""

    rule: str
    wildcards: str
    jobid: str
    slurm_job: str
    limit: Limit
    asked: int | None
    reached_mb: int | None
    attempt: int
    retried: bool = False
    retried_with: int | None = None

    @property
    def resource(self) -> str:
        return _RESOURCE[self.limit]

    def _what(self) -> str:
        rule = f"rule {self.rule}" + (f" ({self.wildcards})" if self.wildcards else "")
        asked = f"{self.resource}={self.asked}" if self.asked is not None else "its default"
        if self.limit == "memory":
            reached = f", and was killed at {self.reached_mb} MB" if self.reached_mb else ""
            return (f"{rule} ran out of memory: SLURM job {self.slurm_job} "
                    f"(attempt {self.attempt}) asked for {asked}{reached}")
        minutes = " minutes" if self.asked is not None else ""
        return (f"{rule} ran out of time: SLURM job {self.slurm_job} (attempt "
                f"{self.attempt}) asked for {asked}{minutes} and was cancelled at its limit")

    def message(self, caps: dict[str, int]) -> str:
        if not self.retried:
            base = max(self.asked or 0, self.reached_mb or 0) or _DEFAULT[self.limit]
            return f"{self._what()}, on its last attempt; fix: {self._fix(_more(base), caps)}"
        if self.retried_with is None:
            return f"{self._what()}; the profile's retries run it again"
        again = (f"{self._what()}; the profile's retries run it again with "
                 f"{self.resource}={self.retried_with}")
        if self.asked is not None and self.retried_with <= self.asked:
            base = max(self.asked, self.reached_mb or 0)
            return f"{again}, no more than before; fix: {self._fix(_more(base), caps)}"
        return (f"{again}; to need no retry, start there: --set-resources "
                f"{self.rule}:{self.resource}={self.retried_with}")

    def _fix(self, value: int, caps: dict[str, int]) -> str:
        fix = (f"rerun with more, e.g. `--set-resources {self.rule}:{self.resource}={value}` "
               f"on the command line (or under set-resources: in the profile)")
        cap = caps.get(self.resource)
        if cap is not None and value > cap:
            fix += (f", and raise the profile's `resources: [{self.resource}={cap}]`: Snakemake "
                    f"silently caps every job at it")
        return fix


def resource_caps(entries: list[str] | None) -> dict[str, int]:
    """Snakemake's global ``resources`` (``["mem_mb=16000"]``) as numbers: every job's
    resources are silently capped at them.

    >>> resource_caps(["mem_mb=16000", "gpu=1", "bad"])
    {'mem_mb': 16000, 'gpu': 1}
    """
    caps: dict[str, int] = {}
    for entry in entries or []:
        key, sep, value = str(entry).partition("=")
        number = _number(value.strip()) if sep else None
        if number is not None:
            caps[key.strip()] = number
    return caps


class LimitReader:
    """Reads Snakemake's log line by line; :meth:`feed` returns the lines to tell.

    A job that is retried is told once its next attempt's resources are known; one that
    is not, as soon as Snakemake moves on without restarting it.  :meth:`close` tells
    whatever is still held.

    >>> lines = '''\\
    ... rule features:
    ...     jobid: 8
    ...     resources: tmpdir=<TBD>, mem_mb=150, runtime=60
    ... Job 8 has been submitted with SLURM jobid 7 (log: /nonexistent/7.log).
    ... Error in rule features:
    ...     message: SLURM-job '7' failed, SLURM status is: 'OUT_OF_MEMORY'. Reason: x.
    ...     jobid: 8
    ...     external_jobid: 7
    ... Shutting down, this might take some time.'''.splitlines()
    >>> reader = LimitReader()
    >>> [message for line in lines for message in reader.feed(line)]  # doctest: +ELLIPSIS
    ['rule features ran out of memory: SLURM job 7 (attempt 1) asked for mem_mb=150, on ...']
    """

    def __init__(self, caps: dict[str, int] | None = None,
                 read_log: Callable[[Path], str] | None = None) -> None:
        self.caps = caps or {}
        self._read_log = read_log or _read_tail
        self._attempts: dict[str, list[_Attempt]] = {}
        self._submitted: dict[str, tuple[str, Path]] = {}  # SLURM id -> (jobid, log)
        self._info: _Attempt | None = None
        self._error: dict[str, str] | None = None
        self._waiting: _Fault | None = None  # told, unless "Trying to restart" follows
        self._retrying: dict[str, _Fault] = {}  # jobid -> fault told with the next attempt

    def feed(self, line: str) -> list[str]:
        text = smk.ANSI.sub("", line).rstrip()
        stripped = text.strip()
        if not stripped:
            return []
        told: list[str] = []
        if self._error is not None:
            field_match = smk.FIELD.match(stripped)
            if text[:1].isspace() and field_match:
                self._error.setdefault(field_match.group(1), field_match.group(2))
                return told
            told += self._settle_waiting(None)
            self._waiting = self._fault(self._error)
            self._error = None
        if (restart := smk.RESTART.match(stripped)) is not None:
            return told + self._settle_waiting(restart.group(1))
        if (error := smk.FAILED.match(stripped)) is not None:
            told += self._settle_waiting(None)
            self._info = None
            self._error = {"rule": error.group(1)}
            return told
        if (info := smk.JOB.match(stripped)) is not None:
            told += self._settle_waiting(None)
            self._info = _Attempt(info.group(1))
            return told
        if (submitted := smk.SUBMITTED.match(stripped)) is not None:
            told += self._settle_waiting(None)
            self._submitted[submitted.group(2)] = (submitted.group(1),
                                                   Path(submitted.group(3)))
            return told
        if self._info is not None and (field_match := smk.FIELD.match(stripped)):
            key, value = field_match.groups()
            if key == "jobid":
                self._info.jobid = value
                self._attempts.setdefault(value, []).append(self._info)
            elif key == "wildcards":
                self._info.wildcards = value
            elif key == "resources":
                self._info.resources = _resources(value)
                told += self._tell_retry(self._info)
            return told
        if not text[:1].isspace():
            self._info = None
            if smk.SCHEDULING.match(stripped) or smk.STOPPING.match(stripped):
                told += self._settle_waiting(None)
        return told

    def close(self) -> list[str]:
        """Tell what is still held (the run ended before a retry was submitted)."""
        told: list[str] = []
        if self._error is not None:
            told += self._settle_waiting(None)
            self._waiting = self._fault(self._error)
            self._error = None
        told += self._settle_waiting(None)
        for fault in self._retrying.values():
            told.append(fault.message(self.caps))
        self._retrying.clear()
        return told

    # ------------------------------------------------------------------ internals
    def _settle_waiting(self, restarted: str | None) -> list[str]:
        fault, self._waiting = self._waiting, None
        if fault is None:
            return []
        if restarted is not None and restarted == fault.jobid:
            fault.retried = True
            self._retrying[fault.jobid] = fault
            return []
        return [fault.message(self.caps)]

    def _tell_retry(self, attempt: _Attempt) -> list[str]:
        fault = self._retrying.pop(attempt.jobid, None)
        if fault is None:
            return []
        fault.retried_with = _number(attempt.resources.get(fault.resource))
        return [fault.message(self.caps)]

    def _fault(self, error: dict[str, str]) -> _Fault | None:
        failed = smk.SLURM_FAILED.search(error.get("message", ""))
        if failed is None:
            return None
        slurm_job, status = failed.groups()
        jobid = error.get("jobid", "")
        log_path = self._submitted.get(slurm_job, ("", None))[1]
        named = smk.log_files(error.get("log", ""))
        if log_path is None and named and named[-1].endswith(".log"):
            log_path = Path(named[-1])
        slurm_log = self._read_log(log_path) if log_path is not None else ""
        found = classify(status, slurm_log)
        if found is None:
            return None
        limit, reached = found
        attempts = self._attempts.get(jobid, [])
        resource = _RESOURCE[limit]
        asked = _number(attempts[-1].resources.get(resource)) if attempts else None
        if asked is None and limit == "memory" and (enforced := _limit_bytes(slurm_log)):
            asked = enforced // 2**20
        wildcards = attempts[-1].wildcards if attempts else ""
        return _Fault(rule=error["rule"], wildcards=wildcards, jobid=jobid,
                      slurm_job=slurm_job, limit=limit,
                      asked=asked, reached_mb=-(-reached // 2**20) if reached else None,
                      attempt=max(1, len(attempts)))


def _read_tail(path: Path, limit: int = 65536) -> str:
    """The last ``limit`` bytes of a SLURM log ('' when it cannot be read)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


class LimitWatch:
    """Follows the Snakemake log file that appears in ``log_dir`` while a run goes on, and
    hands every line :class:`LimitReader` returns to ``tell`` as soon as it is known.

    Reading the file Snakemake writes anyway leaves its terminal output untouched.
    """

    def __init__(self, log_dir: Path, tell: Callable[[str], None],
                 caps: dict[str, int] | None = None, interval: float = 0.5) -> None:
        self.log_dir = log_dir
        self.tell = tell
        self.reader = LimitReader(caps)
        self.interval = interval
        self._known = set(self._logs())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="limit-watch", daemon=True)
        self._path: Path | None = None
        self._offset = 0
        self._partial = b""

    def __enter__(self) -> LimitWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._read()  # what was written after the last poll
        for message in self.reader.close():
            self.tell(message)

    def _logs(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.snakemake.log"))

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def _read(self) -> None:
        if self._path is None:
            new = [p for p in self._logs() if p not in self._known]
            if not new:
                return
            self._path = new[-1]
        try:
            with self._path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            for message in self.reader.feed(line.decode(errors="replace")):
                self.tell(message)

