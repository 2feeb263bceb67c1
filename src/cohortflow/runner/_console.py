"""Snakemake's output under ``cohortflow run``: every line goes to a log file; the console
gets one line per step (:class:`StepView`, live on a terminal), anything out of the ordinary
(an error block, a warning) without stack frames, and each failing step's error once, as one
line, at the end.  ``--verbose`` shows Snakemake's whole output, still without frames.

A job that raises prints its exception, message and stack frames; Snakemake then repeats
that the job failed.  :class:`ConsoleFilter` keeps those blocks off the console and collects
their messages; :meth:`ConsoleFilter.errors` gives one line per distinct (step, message).
A job whose output the head never sees (a SLURM job) is explained by the ``step failed:``
(or ``step crashed:``) line its own log ends with (see
:meth:`cohortflow.disclosure.Disclosure.step_log`).

:meth:`ConsoleFilter.bad_input` tells whether every failing step stopped on a
:class:`~cohortflow.errors.CohortflowError` (bad input, with its fix): ``cohortflow run``
then exits with status 2, like every other command refusing its input, whatever the
profile; any other failure keeps Snakemake's status.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from cohortflow import errors
from cohortflow.disclosure import STEP_CRASHED, STEP_FAILED
from cohortflow.runner import _snakemake_log as smk
from cohortflow.runner._progress import HIDDEN, NEWS, RunProgress, Step


def _ends_message(line: str) -> bool:
    """Whether a line is Snakemake's own progress, which ends an error message that has no
    stack frames."""
    return any(pattern.match(line) for pattern in (smk.STAMP, smk.JOB, smk.FAILED,
                                                    smk.SCHEDULING))


@dataclass
class ConsoleFilter:
    """Reads Snakemake's output line by line; :meth:`feed` says what the console shows.

    >>> f = ConsoleFilter()
    >>> shown = [line for line in [
    ...     "rule cohort_shard:", "RuleException:",
    ...     'StudySpecError in file "/w/cohort.smk", line 15:',
    ...     "concept_sets.x: none of the concepts 9 occurs; fix: check the ids",
    ...     '  File "/w/cohort.smk", line 15, in __rule_cohort_shard',
    ...     '  File "/w/steps.py", line 97, in cohort_shard',
    ...     "Exiting because a job execution failed. Look above for error messages",
    ...     "Error in rule cohort_shard:"] if f.feed(line)]
    >>> shown
    ['rule cohort_shard:', 'Error in rule cohort_shard:']
    >>> f.errors()
    ['step cohort_shard failed: concept_sets.x: none of the concepts 9 occurs; fix: check the ids']
    """

    _state: str = "plain"  # plain, header (message lines next), frames, traceback
    _kind: str = ""
    _rule: str | None = None
    _message: list[str] = field(default_factory=list)
    _found: list[tuple[str | None, str]] = field(default_factory=list)
    _bad_input: dict[tuple[str | None, str], bool] = field(default_factory=dict)
    _failed: list[tuple[str, list[str]]] = field(default_factory=list)  # rule, its logs
    _in_failure: bool = False

    def feed(self, line: str) -> bool:
        """Take one line (without its newline); True when the console should show it."""
        if self._state in ("header", "frames"):
            frame = smk.FRAME.match(line)
            if frame:
                self._state = "frames"
                name = frame[1] or ""
                if self._rule is None and name.startswith("__rule_"):
                    self._rule = name.removeprefix("__rule_")
                return False
            if self._state == "frames" and line.startswith("    "):
                return False  # a frame's source line
            if self._state == "header" and line.strip() and line not in smk.POINTERS \
                    and not _ends_message(line):
                self._message.append(line.strip())
                return False
            self._close()
        elif self._state == "traceback":
            if line.startswith((" ", "\t")) or not line.strip():
                return False
            match = smk.EXCEPTION.match(line)
            if match:
                self._kind, self._message = match[1], [match[2] or ""]
                self._close()
                return False
            self._close()
        self._note_failure(line)
        if line in smk.POINTERS:
            return False
        if header := smk.EXCEPTION_HEADER.match(line):
            self._state, self._kind, self._rule, self._message = "header", header[1], None, []
            return False
        if line.startswith(smk.TRACEBACK):
            self._state, self._kind, self._rule, self._message = "traceback", "", None, []
            return False
        return True

    def _close(self) -> None:
        message = " ".join(part for part in self._message if part)
        ours = bool(self._kind) and _is_cohortflow_error(self._kind)
        if self._kind and not ours:
            message = f"{self._kind}: {message}" if message else self._kind
        if message and (self._rule, message) not in self._found:
            self._found.append((self._rule, message))
            self._bad_input[self._rule, message] = ours
        self._state, self._kind, self._rule, self._message = "plain", "", None, []

    def _note_failure(self, line: str) -> None:
        """Remember each ``Error in rule`` block's rule and log files."""
        if failed := smk.FAILED.match(line):
            self._failed.append((failed[1], []))
            self._in_failure = True
        elif self._in_failure and line.startswith("    "):
            if (logs := smk.FIELD.match(line)) and logs[1] == "log":
                self._failed[-1][1].extend(smk.log_files(logs[2]))
        else:
            self._in_failure = False

    def errors(self) -> list[str]:
        """One line per distinct failing step and message, in the order they occurred;
        a failed step with no message in the output gets the one its log ends with."""
        return [f"step {rule} failed: {message}" if rule else f"the workflow failed: {message}"
                for rule, message, _ in self._failures()]

    def bad_input(self) -> bool:
        """Whether the run failed on bad input only: at least one failing step, each with
        a cohortflow error (its message, with the fix, is the user's to act on), and no
        other error (a crash, a lost job, a failure nothing explains)."""
        failures = self._failures()
        explained = {rule for rule, _, _ in failures}
        return bool(failures) and all(ours for _, _, ours in failures) \
            and all(rule in explained for rule, _ in self._failed)

    def _failures(self) -> list[tuple[str | None, str, bool]]:
        """(step, message, bad input) of each distinct failure, in the order they occurred;
        a failed step with no message in the output gets the one its log ends with."""
        if self._state != "plain":
            self._close()
        found = [(rule, message, self._bad_input[rule, message])
                 for rule, message in self._found]
        explained = {rule for rule, _, _ in found}
        for rule, logs in self._failed:
            logged = None if rule in explained else _logged_error(logs)
            if logged is not None and logged[0] not in {m for _, m, _ in found}:
                found.append((rule, *logged))
        return found


def _logged_error(logs: list[str]) -> tuple[str, bool] | None:
    """The error a step's log ends with (the last ``step failed:`` or ``step crashed:``
    line), and whether it was bad input (``step failed:``); None: none.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as fh:
    ...     _ = fh.write("2026 ERROR cohortflow.disclosure: step failed: bad id; fix: x\\n"
    ...                  "Traceback\\n")
    >>> _logged_error([fh.name]), _logged_error(["/nonexistent.log"])
    (('bad id; fix: x', True), None)
    """
    for log in logs:
        try:
            lines = Path(log).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            for marker, ours in ((STEP_FAILED, True), (STEP_CRASHED, False)):
                if marker in line:
                    return line.split(marker, 1)[1].strip(), ours
    return None


def _is_cohortflow_error(name: str) -> bool:
    """Whether an exception name is one of cohortflow's own errors, whose message is
    written for the user (other exceptions keep their type in the one-line error).

    >>> _is_cohortflow_error("StudySpecError"), _is_cohortflow_error("KeyError")
    (True, False)
    """
    found = getattr(errors, name.rsplit(".", 1)[-1], None)
    return isinstance(found, type) and issubclass(found, errors.CohortflowError)


class StepView:
    """The console of a run: Snakemake's lines that :class:`ConsoleFilter` lets through,
    all of them (``verbose``) or only the out-of-the-ordinary ones, and one line per step:
    redrawn live while stderr is a terminal, else printed once as each step completes."""

    def __init__(self, progress: RunProgress, verbose: bool = False) -> None:
        self.progress, self.verbose = progress, verbose
        self._lock = threading.Lock()  # lines come from the relay and the SLURM limit watch
        console = Console(stderr=True, highlight=False)
        self._live = None if verbose or not console.is_terminal else Live(
            _Board(progress), console=console, refresh_per_second=4,
            redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> StepView:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()

    def take(self, line: str, kind: str, shown: bool) -> None:
        """One line of Snakemake's output: its kind (see :mod:`cohortflow.runner._progress`)
        and whether :class:`ConsoleFilter` would show it."""
        for step in self.progress.completed():  # a failed job's step before its error
            if self._live is None and not self.verbose:
                self.write(step.line(time.monotonic()))
        if shown and (kind == NEWS or (self.verbose and kind != HIDDEN)):
            self.write(line)

    def write(self, line: str) -> None:
        """A line on the console, above the live steps if they are shown."""
        with self._lock:
            if self._live is not None:
                self._live.console.print(Text(line))
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()


@dataclass
class _Board:
    """The live lines of a run's steps, elapsed time as of each redraw."""

    progress: RunProgress

    def __rich__(self) -> Group:
        now = time.monotonic()
        return Group(*(Text(f"{_mark(step)} {step.line(now)}") for step in self.progress.shown()))


def _mark(step: Step) -> str:
    """✓ done, ✗ failed, ▸ running, · waiting."""
    if step.failed:
        return "✗"
    if step.finished:
        return "✓"
    return "▸" if step.started else "·"
