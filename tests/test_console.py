"""The console of `cohortflow run`: one line per step, a summary, Snakemake's whole output in
a log file; the step progress read from hand-written Snakemake output."""

from __future__ import annotations

import re

import pytest

from cohortflow.runner import HIDDEN, NEWS, ROUTINE, ConsoleFilter, RunProgress, StepView

# A run of three steps as Snakemake 9 prints it (with --debug-dag): the ingest is up to date,
# two of three cohort shards rerun, one fails.
RUN = """\
Using workflow specific profile /w/profiles/laptop for setting default command line arguments.
Assuming unrestricted shared filesystem usage.

SNAKEMAKE
=========
  Date: 2026-12-01 16:13:05
  Snakemake version: 9.27.1

Building DAG of jobs...
candidate job all
    wildcards:
candidate job cohort_shard
    wildcards: shard=0
candidate job ingest
    wildcards:
selected job ingest
    wildcards:
selected job cohort_shard
    wildcards: shard=0
file /r/demo/omop:
    No producers found, but file is present on disk.
    MissingRuleException:
    No rule to produce /r/demo/omop

selected job cohort_shard
    wildcards: shard=1
selected job cohort_shard
    wildcards: shard=2
selected job ingest
    wildcards:
selected job attrition
    wildcards:
Using shell: /usr/bin/bash
Provided cores: 2
Rules claiming more threads will be scaled down.
Job stats:
job             count
------------  -------
cohort_shard        2
attrition           1
all                 1
total               4

Select jobs to execute...
Execute 2 jobs...

[Tue Dec  1 16:13:20 2026]
localrule cohort_shard:
    input: /r/demo/events
    output: /r/demo/cohorts/cohort/shards/0.parquet
    jobid: 3
    reason: Params have changed since last execution
    wildcards: shard=0
[Tue Dec  1 16:13:20 2026]
localrule cohort_shard:
    jobid: 5
    wildcards: shard=1
[Tue Dec  1 16:13:28 2026]
Finished jobid: 3 (Rule: cohort_shard)
1 of 4 steps (25%) done
2026-12-01 16:13:29,001 - distributed.nanny - WARNING - Worker process still alive
[Tue Dec  1 16:13:30 2026]
Error in rule cohort_shard:
    message: None
    jobid: 5
    log: /r/demo/logs/cohort_1.log (check log file(s) for error details)
Shutting down, this might take some time.
Exiting because a job execution failed. Look above for error messages
Complete log(s): /w/.snakemake/log/2026-12-01T161305.snakemake.log
"""

# the clock of each line: one second per line
TIMES = {i: float(i) for i in range(len(RUN.splitlines()))}


def fed(text: str = RUN, own: bool = True) -> tuple[RunProgress, list[str]]:
    progress = RunProgress(own_dag_listing=own)
    kinds = [progress.feed(line, TIMES.get(i, 0.0)) for i, line in enumerate(text.splitlines())]
    return progress, kinds


def test_each_step_counts_its_jobs_done_of_planned_and_its_failures() -> None:
    progress, _ = fed()
    steps = {step.rule: step for step in progress.shown()}
    assert list(steps) == ["cohort_shard", "attrition"]  # `all` is not a step
    shard = steps["cohort_shard"]
    assert (shard.planned, shard.started, shard.done, shard.failed) == (2, 2, 1, 1)
    assert shard.finished
    start = RUN.splitlines().index("localrule cohort_shard:")
    end = RUN.splitlines().index("Error in rule cohort_shard:")
    assert shard.elapsed(1000.0) == end - start  # from its first start to its last job
    assert shard.line(1000.0) == f"cohort_shard: 1/2 done, 1 failed, {end - start}s"
    assert (steps["attrition"].planned, steps["attrition"].started) == (1, 0)
    assert not steps["attrition"].finished


def test_a_step_is_reported_complete_once() -> None:
    progress = RunProgress()
    lines = ["Job stats:", "job count", "ingest 1", "total 1", "[Tue Dec  1 16:13:10 2026]",
             "rule ingest:", "    jobid: 4"]
    for line in lines:
        progress.feed(line, 5.0)
    assert progress.completed() == []
    progress.feed("Finished jobid: 4 (Rule: ingest)", 17.0)
    assert [step.line(99.0) for step in progress.completed()] == ["ingest: 1/1 done, 12s"]
    assert progress.completed() == []


def test_an_older_finished_line_is_matched_to_its_job_by_id() -> None:
    progress = RunProgress()
    for line in ["Job stats:", "model 1", "total 1", "rule model:", "    jobid: 7",
                 "Finished job 7."]:
        progress.feed(line, 0.0)
    assert progress.steps["model"].done == 1


def test_jobs_in_the_dag_but_not_run_are_reused() -> None:
    progress, _ = fed()
    # ingest once (selected twice), shards 0-2 in the DAG of which 2 run
    assert progress.reused() == {"cohort_shard": 1, "ingest": 1}


def test_the_dag_listing_is_hidden_and_only_the_unusual_is_news() -> None:
    lines = RUN.splitlines()
    _, kinds = fed()
    hidden = [line for line, kind in zip(lines, kinds, strict=True) if kind == HIDDEN]
    assert all(line.startswith(("candidate job", "selected job", "    ", "file "))
               or not line for line in hidden)
    assert len([line for line in hidden if line.startswith("selected job")]) == 6
    assert "file /r/demo/omop:" in hidden and "    No rule to produce /r/demo/omop" in hidden
    news = [line for line, kind in zip(lines, kinds, strict=True) if kind == NEWS]
    assert news == ["Error in rule cohort_shard:", "    message: None", "    jobid: 5",
                    "    log: /r/demo/logs/cohort_1.log (check log file(s) for error details)",
                    "Exiting because a job execution failed. Look above for error messages"]
    # the job's own details (reason, wildcards) are routine
    assert kinds[lines.index("    reason: Params have changed since last execution")] == ROUTINE


def test_a_dag_listing_the_user_asked_for_is_kept() -> None:
    _, kinds = fed(own=False)
    assert HIDDEN not in kinds


def test_the_summary_says_what_ran_failed_and_was_reused() -> None:
    progress, _ = fed()
    assert progress.summary(95.0, 1) == [
        "failed (exit 1) in 1m35s; ran: cohort_shard 1",
        "failed: cohort_shard 1; 1 planned job(s) not run",
        "reused (up to date): cohort_shard 1, ingest 1"]


def test_nothing_to_be_done_names_what_was_reused() -> None:
    progress = RunProgress()
    for line in ["selected job ingest", "    wildcards: ", "selected job report",
                 "    wildcards: ", "Nothing to be done (all requested files are present and "
                 "up to date)."]:
        progress.feed(line, 0.0)
    assert progress.nothing_to_do
    assert progress.summary(2.0, 0) == [
        "Nothing to be done: every step is up to date (2s). Reused: ingest 1, report 1."]


@pytest.mark.parametrize("verbose", [False, True])
def test_off_a_terminal_each_step_is_one_line_and_errors_show_in_full(
        verbose: bool, capsys: pytest.CaptureFixture[str]) -> None:
    view, console = StepView(RunProgress(), verbose=verbose), ConsoleFilter()
    with view:
        for line in RUN.splitlines():
            kind = view.progress.feed(line, 0.0)
            if kind != HIDDEN:
                view.take(line, kind, console.feed(line))
    shown = capsys.readouterr().err.splitlines()
    error = ["Error in rule cohort_shard:", "    message: None", "    jobid: 5",
             "    log: /r/demo/logs/cohort_1.log (check log file(s) for error details)"]
    if not verbose:
        assert shown == ["cohort_shard: 1/2 done, 1 failed, 0s", *error]
    else:  # Snakemake's output as it comes, less the DAG listing and the noise
        assert error == shown[-len(error) - 2:-2]
        assert "localrule cohort_shard:" in shown and "Job stats:" in shown
        assert not any(line.startswith(("selected job", "file ")) for line in shown)
        assert "Exiting because a job execution failed. Look above for error messages" \
            not in shown


def test_a_dry_run_says_what_would_run() -> None:
    progress = RunProgress()
    for line in ["selected job ingest", "    wildcards:", "selected job report", "    wildcards:",
                 "Job stats:", "job count", "report 1", "total 1", "[Tue Dec  1 16:13:10 2026]",
                 "rule report:", "    jobid: 1", "This was a dry-run (flag -n). The order of "
                 "jobs does not reflect the order of execution."]:
        progress.feed(line, 0.0)
    assert progress.summary(4.0, 0) == ["dry run in 4s; would run: report 1",
                                        "reused (up to date): ingest 1"]


# ---- the demo study's console (the session's laptop run) -------------------------------------

@pytest.mark.e2e
def test_the_demo_console_is_short_and_the_whole_log_is_on_disk(laptop_run: tuple) -> None:
    results, done = laptop_run
    console = (done.stdout + done.stderr).splitlines()
    assert len(console) < 40, "\n".join(console)
    full = results / "logs" / "snakemake.log"
    assert f"Snakemake's whole output: {full}" in console
    log = full.read_text()
    # Snakemake's own output, every job of it, and none of the DAG listing
    assert "Building DAG of jobs..." in log and "Job stats:" in log
    assert len(re.findall(r"^Finished jobid: \d+", log, re.M)) >= 10
    assert not re.search(r"^(candidate|selected) job ", log, re.M)
    assert f"report: {results / 'report.html'}" in console
    assert any(line.startswith("finished in ") for line in console)
    assert "reused (up to date): " in "\n".join(console)
    # one line per step, each step once, all of its jobs done
    steps = [line for line in console if re.match(r"\w+: \d+/\d+ done, ", line)]
    rules = [line.split(":")[0] for line in steps]
    assert len(rules) == len(set(rules)) >= 8
    assert {"cohort_shard", "features", "model", "report", "manifest"} <= set(rules)
    for line in steps:
        done_n, planned = map(int, re.findall(r"(\d+)/(\d+)", line)[0])
        assert done_n == planned, line
    assert 'File "' not in done.stderr and "Select jobs to execute" not in done.stderr

