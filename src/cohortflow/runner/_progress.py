"""What ``cohortflow run`` shows while Snakemake runs: one line per step (rule) with its
jobs done of planned, elapsed time and failures, and a closing summary of what ran and what
was reused.

:class:`RunProgress` reads Snakemake's output line by line (its plain text, so any Snakemake
9 log does) and sorts every line into one of three kinds: ``HIDDEN`` (the DAG listing that
``cohortflow run`` asks for with ``--debug-dag`` to learn which jobs were up to date: in no
log), ``ROUTINE`` (Snakemake's usual progress: the log file only) and ``NEWS`` (anything
else: errors, warnings, a locked directory; the console shows it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cohortflow.runner import _snakemake_log as smk

HIDDEN, ROUTINE, NEWS = "hidden", "routine", "news"
DEBUG_DAG = "--debug-dag"
"""The Snakemake option whose DAG listing names every job of the run, up to date or not."""
TARGET_RULES = frozenset({"all"})
"""Rules that only name the study's final outputs: not a step of their own."""


@dataclass
class Step:
    """One rule's jobs in this run."""

    rule: str
    planned: int = 0
    started: int = 0
    done: int = 0
    failed: int = 0
    reused: int = 0
    jobs: int = 0  # distinct job ids seen starting
    began: float | None = None  # when its first job started (the caller's clock)
    ended: float | None = None  # when its last planned job ended

    @property
    def finished(self) -> bool:
        return self.planned > 0 and self.done + self.failed >= self.planned

    def elapsed(self, now: float) -> float:
        if self.began is None:
            return 0.0
        return (self.ended if self.ended is not None else now) - self.began

    def line(self, now: float) -> str:
        """The step in one line.

        >>> Step("cohort_shard", planned=4, done=3, failed=1, began=0.0, ended=75.0).line(90)
        'cohort_shard: 3/4 done, 1 failed, 1m15s'
        """
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.rule}: {self.done}/{self.planned} done{failed}, " \
               f"{duration(self.elapsed(now))}"


def duration(seconds: float) -> str:
    """Seconds as a short, whole-second duration.

    >>> duration(4.4), duration(75), duration(3725)
    ('4s', '1m15s', '1h02m05s')
    """
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class RunProgress:
    """Each step's jobs (planned, started, done, failed, reused) from Snakemake's output.

    ``own_dag_listing``: the ``--debug-dag`` listing was asked for by ``cohortflow run``
    (not by the user), so its lines are ``HIDDEN``.

    >>> p = RunProgress()
    >>> kinds = [p.feed(line, now) for line, now in [
    ...     ("selected job ingest", 0), ("    wildcards: ", 0),
    ...     ("Job stats:", 0), ("job      count", 0), ("-----  -------", 0),
    ...     ("ingest       1", 0), ("total        1", 0),
    ...     ("[Tue Dec  1 16:13:10 2026]", 1), ("localrule ingest:", 1), ("    jobid: 4", 1),
    ...     ("Finished jobid: 4 (Rule: ingest)", 11), ("MissingOutputException: x", 12)]]
    >>> kinds[:2], set(kinds[2:-1]), kinds[-1]
    (['hidden', 'hidden'], {'routine'}, 'news')
    >>> [step.line(20) for step in p.completed()]
    ['ingest: 1/1 done, 10s']
    """

    own_dag_listing: bool = True
    steps: dict[str, Step] = field(default_factory=dict)
    nothing_to_do: bool = False
    dry_run: bool = False
    _in_dag: dict[str, set[str]] = field(default_factory=dict)  # rule -> wildcards
    _jobs: dict[str, str] = field(default_factory=dict)  # jobid -> rule
    _block: str = ""  # header, stats, job, error, dag, dag_file
    _dag_rule: str | None = None
    _current: str = ""  # the rule of the job block being read
    _planning: bool = True  # before the job stats: the DAG is being built
    _reported: set[str] = field(default_factory=set)

    def feed(self, line: str, now: float) -> str:
        """Take one line of Snakemake's output (no newline) at time ``now``; its kind."""
        block, self._block = self._block, ""
        if (block in ("dag", "dag_file") and line.startswith("    ")) or (
                block == "dag_file" and not line.strip()):
            if block == "dag" and self._dag_rule and (listed := smk.DAG_WILDCARDS.match(line)):
                self._in_dag.setdefault(self._dag_rule, set()).add(listed[1].strip())
            self._block, self._dag_rule = block, None
            return HIDDEN if self.own_dag_listing else ROUTINE
        if dag := smk.DAG_JOB.match(line):
            self._block, self._dag_rule = "dag", dag[2] if dag[1] == "selected" else None
            return HIDDEN if self.own_dag_listing else ROUTINE
        if self._planning and smk.DAG_FILE.match(line):
            self._block = "dag_file"
            return HIDDEN if self.own_dag_listing else ROUTINE
        if block == "stats":
            return self._stats_row(line)
        if block == "header" and (line.startswith("  ") or smk.ROUTINE.match(line)):
            self._block = "header"
            return ROUTINE
        if block == "group" and not line.strip():
            self._block = block
            return ROUTINE
        if block in ("job", "error", "group") and line.startswith("    "):
            self._block = block
            if block == "group" and (job := smk.JOB.match(line.strip())):
                self._start(job[1], now)
            elif ((jobid := smk.FIELD.match(line)) and jobid[1] == "jobid"
                  and jobid[2] not in self._jobs):
                self._jobs[jobid[2]] = self._current
                if block == "job":
                    self._new_job(self._step(self._current))
            return NEWS if block == "error" else ROUTINE
        return self._plain(line, now)

    def _stats_row(self, line: str) -> str:
        row = smk.STATS_ROW.match(line)
        if row and row[1] == "total":
            return ROUTINE
        self._block = "stats"
        if row and row[1] != "job":
            self._step(row[1]).planned = int(row[2])
        return ROUTINE

    def _plain(self, line: str, now: float) -> str:
        if line == smk.BANNER:
            self._block = "header"
        elif line == smk.JOB_STATS:
            self._block, self._planning = "stats", False
        elif line.startswith(smk.DRY_RUN):
            self.dry_run = True
        elif line.startswith(smk.NOTHING_TO_DO):
            self.nothing_to_do, self._planning = True, False
        elif job := smk.JOB.match(line):
            self._start(job[1], now)
            self._block = "job"
        elif smk.GROUP_JOB.match(line):
            self._block = "group"
        elif finished := smk.FINISHED.match(line):
            rule = finished[2] or self._jobs.get(finished[1])
            if rule is not None:
                self._end(self._step(rule), now, failed=False)
        elif failed := smk.FAILED.match(line):
            self._block, self._current = "error", failed[1]
            self._end(self._step(failed[1]), now, failed=True)
            return NEWS
        elif not (line.strip() and not smk.STAMP.fullmatch(line) and not smk.ROUTINE.match(line)):
            return ROUTINE
        else:
            return NEWS
        return ROUTINE

    def _start(self, rule: str, now: float) -> None:
        step = self._step(rule)
        step.started += 1
        step.began = now if step.began is None else step.began
        self._current = rule

    def _new_job(self, step: Step) -> None:
        """A job id not seen before started: past the planned count, it is a job that a
        checkpoint's DAG update added after the job stats were printed (its rule's jobs
        were unknown then), so it is planned work, never a reused one."""
        step.jobs += 1
        step.planned = max(step.planned, step.jobs)

    def _step(self, rule: str) -> Step:
        return self.steps.setdefault(rule, Step(rule))

    def _end(self, step: Step, now: float, failed: bool) -> None:
        if failed:
            step.failed += 1
        else:
            step.done += 1
        if step.finished and step.ended is None:
            step.ended = now

    def shown(self) -> list[Step]:
        """The steps with jobs in this run, in Snakemake's order (target rules left out)."""
        return [step for step in self.steps.values()
                if step.rule not in TARGET_RULES and (step.planned or step.started)]

    def completed(self) -> list[Step]:
        """Steps finished since the last call, each once."""
        found = [step for step in self.shown()
                 if step.finished and step.rule not in self._reported]
        self._reported.update(step.rule for step in found)
        return found

    def reused(self) -> dict[str, int]:
        """Jobs of each rule that were up to date (in the DAG, not run), rules sorted.

        >>> p = RunProgress()
        >>> for line in ["selected job cohort_shard", "    wildcards: shard=0",
        ...              "selected job cohort_shard", "    wildcards: shard=1",
        ...              "selected job cohort_shard", "    wildcards: shard=0",
        ...              "selected job ingest", "    wildcards: ", "Job stats:",
        ...              "cohort_shard   1", "total   1"]:
        ...     _ = p.feed(line, 0)
        >>> p.reused()
        {'cohort_shard': 1, 'ingest': 1}
        """
        found = {}
        for rule in sorted(self._in_dag):
            planned = self.steps[rule].planned if rule in self.steps else 0
            if rule not in TARGET_RULES and len(self._in_dag[rule]) > planned:
                found[rule] = len(self._in_dag[rule]) - planned
        return found

    def summary(self, seconds: float, code: int) -> list[str]:
        """The lines that close a run: what ran, what was reused, how long it took.

        >>> p = RunProgress()
        >>> p.summary(3.0, 0)
        ['Nothing to be done: every step is up to date (3s).']
        """
        reused = ", ".join(f"{rule} {n}" for rule, n in self.reused().items())
        steps = self.shown()
        if not steps and code == 0:
            return [f"Nothing to be done: every step is up to date ({duration(seconds)})."
                    + (f" Reused: {reused}." if reused else "")]
        if self.dry_run and code == 0:
            planned = ", ".join(f"{step.rule} {step.planned}" for step in steps)
            return [f"dry run in {duration(seconds)}; would run: {planned}",
                    f"reused (up to date): {reused or 'nothing'}"]
        ran = ", ".join(f"{step.rule} {step.done}" for step in steps if step.done)
        failed = ", ".join(f"{step.rule} {step.failed}" for step in steps if step.failed)
        left = sum(max(step.planned - step.done - step.failed, 0) for step in steps)
        verdict = "finished" if code == 0 else f"failed (exit {code})"
        lines = [f"{verdict} in {duration(seconds)}; ran: {ran or 'nothing'}"]
        if failed or left:
            lines.append(f"failed: {failed or 'nothing'}; {left} planned job(s) not run")
        lines.append(f"reused (up to date): {reused or 'nothing'}")
        return lines
