"""Snakemake's output under ``cohortflow run``: every line goes to a log file, the console
gets the usual progress without stack frames, and each failing step's error is shown once,
as one line, at the end.

A job that raises prints its exception, message and stack frames; Snakemake then repeats
that the job failed.  :class:`ConsoleFilter` keeps those blocks off the console and collects
their messages; :meth:`ConsoleFilter.errors` gives one line per distinct (step, message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cohortflow import errors

_HEADER = re.compile(r'^([A-Za-z_][\w.]*) in file "[^"]*", line \d+:$')
_FRAME = re.compile(r'^  File "[^"]*", line \d+(?:, in (\S+))?')
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::\s?(.*))?$")
# Lines Snakemake prints around a failed job that only point at the frames above.
_NOISE = frozenset({
    "RuleException:",
    "WorkflowError:",
    "At least one job did not complete successfully.",
    "Exiting because a job execution failed. Look above for error messages",
})


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

    def feed(self, line: str) -> bool:
        """Take one line (without its newline); True when the console should show it."""
        if self._state in ("header", "frames"):
            frame = _FRAME.match(line)
            if frame:
                self._state = "frames"
                name = frame[1] or ""
                if self._rule is None and name.startswith("__rule_"):
                    self._rule = name.removeprefix("__rule_")
                return False
            if self._state == "frames" and line.startswith("    "):
                return False  # a frame's source line
            if self._state == "header" and line.strip() and line not in _NOISE:
                self._message.append(line.strip())
                return False
            self._close()
        elif self._state == "traceback":
            if line.startswith((" ", "\t")) or not line.strip():
                return False
            match = _EXCEPTION_LINE.match(line)
            if match:
                self._kind, self._message = match[1], [match[2] or ""]
                self._close()
                return False
            self._close()
        if line in _NOISE:
            return False
        if header := _HEADER.match(line):
            self._state, self._kind, self._rule, self._message = "header", header[1], None, []
            return False
        if line.startswith("Traceback (most recent call last):"):
            self._state, self._kind, self._rule, self._message = "traceback", "", None, []
            return False
        return True

    def _close(self) -> None:
        message = " ".join(part for part in self._message if part)
        if self._kind and not _is_cohortflow_error(self._kind):
            message = f"{self._kind}: {message}" if message else self._kind
        if message and (self._rule, message) not in self._found:
            self._found.append((self._rule, message))
        self._state, self._kind, self._rule, self._message = "plain", "", None, []

    def errors(self) -> list[str]:
        """One line per distinct failing step and message, in the order they occurred."""
        if self._state != "plain":
            self._close()
        return [f"step {rule} failed: {message}" if rule else f"a step failed: {message}"
                for rule, message in self._found]


def _is_cohortflow_error(name: str) -> bool:
    """Whether an exception name is one of cohortflow's own errors, whose message is
    written for the user (other exceptions keep their type in the one-line error).

    >>> _is_cohortflow_error("StudySpecError"), _is_cohortflow_error("KeyError")
    (True, False)
    """
    found = getattr(errors, name.rsplit(".", 1)[-1], None)
    return isinstance(found, type) and issubclass(found, errors.CohortflowError)
