"""`cohortflow run` and `cohortflow verify` around Snakemake: targets after `--`, the
console view of a failing step, the wall time of each step, the scratch of a verify."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from snakemake.cli import get_argument_parser
from typer.testing import CliRunner

from cohortflow import manifest, runner
from cohortflow.cli import app
from cohortflow.runner import ConsoleFilter, RunProgress
from tests.helpers import cohortflow, write_study

UNKNOWN_CONCEPT = 999999999


def parsed(command: list[str]) -> object:
    """Snakemake's own reading of a command line built by cohortflow."""
    assert command[1:3] == ["-m", "snakemake"]
    return get_argument_parser().parse_args(command[3:])


def test_targets_after_double_dash_are_snakemake_targets(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    command = runner.snakemake_command(None, "laptop", Path("results"), [
        "results/demo/cohorts/cohort/attrition.json", "results/demo/report.html", "--cores", "2"])
    args = parsed(command)
    assert args.targets == [str(tmp_path / "results/demo/cohorts/cohort/attrition.json"),
                            str(tmp_path / "results/demo/report.html")]
    assert str(args.cores) == "2"
    assert sorted(entry.split("=")[0] for entry in args.config) == [
        "profile", "results", "study"]


def test_rule_names_and_options_after_double_dash_stay_as_given() -> None:
    args = parsed(runner.snakemake_command(None, "laptop", Path("results"),
                                             ["features", "--until", "ingest", "-n"]))
    assert args.targets == ["features"]
    assert set(args.until) == {"ingest"}
    assert args.dryrun


def test_a_config_after_double_dash_is_merged_and_cannot_replace_the_study() -> None:
    args = parsed(runner.snakemake_command(None, "laptop", Path("results"), [
        "--config", "extra=1", "study=elsewhere.yaml", "--forceall"]))
    assert args.config[0] == "extra=1"
    studies = [entry for entry in args.config if entry.startswith("study=")]
    assert studies[-1] != "study=elsewhere.yaml"  # the last entry wins in Snakemake
    assert args.forceall


def test_console_filter_keeps_progress_and_gives_each_error_once() -> None:
    lines = [
        "[Tue Dec  1 13:09:23 2026]", "localrule features:", "    jobid: 4",
        "RuleException:", 'KeyError in file "/w/features.smk", line 9:', "'code'",
        '  File "/w/features.smk", line 9, in __rule_features',
        "    steps.features(STUDY)",
        "RuleException:", 'KeyError in file "/w/features.smk", line 9:', "'code'",
        '  File "/w/features.smk", line 9, in __rule_features',
        "Traceback (most recent call last):", '  File "/x/snakemake/cli.py", line 3, in main',
        "    run()", "OSError: [Errno 28] No space left on device",
        "Error in rule features:", "    jobid: 4", "WorkflowError:",
        "At least one job did not complete successfully.", "Complete log(s): /w/x.log",
    ]
    console = ConsoleFilter()
    shown = [line for line in lines if console.feed(line)]
    assert shown == ["[Tue Dec  1 13:09:23 2026]", "localrule features:", "    jobid: 4",
                     "Error in rule features:", "    jobid: 4", "Complete log(s): /w/x.log"]
    assert console.errors() == ["step features failed: KeyError: 'code'",
                                "the workflow failed: OSError: [Errno 28] No space left on "
                                "device"]
    assert not console.bad_input()  # crashes: Snakemake's own status stands


def test_a_step_failing_out_of_sight_is_explained_by_its_log(tmp_path: Path) -> None:
    """A SLURM job's output never reaches the head: its own log says why it failed."""
    log = tmp_path / "features.log"
    log.write_text("2026-12-01 13:00:01 INFO cohortflow.features: reading\n"
                   "2026-12-01 13:00:02 ERROR cohortflow.disclosure: step failed: "
                   "features.windows: no window; fix: add one\nTraceback (most recent call last):\n"
                   '  File "x.py", line 1, in f\n')
    console = ConsoleFilter()
    lines = ["[Tue Dec  1 13:09:43 2026]", "Error in rule features:", "    message: None",
             "    jobid: 4", f"    log: {log} (check log file(s) for error details)",
             "WorkflowError in file \"/w/Snakefile\", line 3:", "the job failed",
             "Shutting down, this might take some time."]
    shown = [line for line in lines if console.feed(line)]
    assert shown[-1] == "Shutting down, this might take some time."
    assert console.errors() == [
        "the workflow failed: WorkflowError: the job failed",
        "step features failed: features.windows: no window; fix: add one"]
    assert not console.bad_input()  # Snakemake's WorkflowError is no input's fault


@pytest.mark.parametrize(("logged", "bad_input"), [
    ("step failed: features.windows: no window; fix: add one", True),
    ("step crashed: KeyError: 'code'", False),
])
def test_a_run_failing_on_bad_input_alone_is_told_apart(tmp_path: Path, logged: str,
                                                        bad_input: bool) -> None:
    """`cohortflow run` exits 2 when every failing step refused its input (a cohortflow
    error, in the head's output or, out of sight, in the step's log), whatever the profile;
    a crash keeps Snakemake's status."""
    log = tmp_path / "features.log"
    log.write_text(f"2026-12-01 13:00:02 ERROR cohortflow.disclosure: {logged}\n")
    console = ConsoleFilter()
    for line in ["Error in rule features:", "    jobid: 4",
                 f"    log: {log} (check log file(s) for error details)",
                 "Shutting down, this might take some time."]:
        console.feed(line)
    assert console.errors() == [f"step features failed: {logged.split(': ', 1)[1]}"]
    assert console.bad_input() is bad_input
    seen = ConsoleFilter()  # the same refusal in a local job's own traceback
    for line in ["RuleException:", 'StudySpecError in file "/w/features.smk", line 9:',
                 "features.windows: no window; fix: add one",
                 '  File "/w/features.smk", line 9, in __rule_features',
                 "Error in rule features:", "    jobid: 4"]:
        seen.feed(line)
    assert seen.errors() == ["step features failed: features.windows: no window; fix: add one"]
    assert seen.bad_input()
    assert not ConsoleFilter().bad_input()  # no failure seen: nothing to call bad input


@pytest.fixture(scope="module")
def target_run(synth_omop: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A small study run up to a target given after `--`: its cohort attrition only."""
    workdir = tmp_path_factory.mktemp("target")
    study = write_study(workdir / "small.yaml", name="small", shards=2,
                        source={"omop": {"path": str(synth_omop)}})
    done = cohortflow("run", str(study), "--", "results/small/cohorts/cohort/attrition.json",
                      cwd=workdir)
    return workdir, done


@pytest.mark.e2e
def test_a_target_after_double_dash_runs_only_what_it_needs(target_run: tuple) -> None:
    workdir, done = target_run
    assert done.returncode == 0, done.stderr[-4000:]
    results = workdir / "results" / "small"
    assert json.loads((results / "cohorts" / "cohort" / "attrition.json").read_text())
    assert not (results / "features").exists()
    assert not (results / "report.html").exists()
    assert "Traceback" not in done.stdout + done.stderr
    # the console's lines are all in the whole output's log file
    assert "Finished jobid" in (results / "logs" / "snakemake.log").read_text()


def logged_jobs(workdir: Path, benchmarks: Path) -> dict[str, float]:
    """Seconds between each job's start and finish stamps in Snakemake's log, by benchmark
    file (its path under ``benchmarks`` without .tsv), read here independently of
    cohortflow's parser."""
    spans: dict[str, float] = {}
    for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        text = log.read_text()
        for block in re.finditer(r"\[([^\]]+)\]\n(?:local)?rule \w+:\n(.*?)(?=\n\[|\Z)", text,
                                 re.S):
            jobid = re.search(r"jobid: (\d+)", block[2])
            bench = re.search(r"benchmark: (\S+)", block[2])
            end = re.search(r"\[([^\]]+)\]\nFinished jobid: " + (jobid[1] if jobid else "x")
                            + r"\b", text)
            if jobid and bench and end:
                start_s = time.mktime(time.strptime(block[1], "%a %b %d %H:%M:%S %Y"))
                end_s = time.mktime(time.strptime(end[1], "%a %b %d %H:%M:%S %Y"))
                step = (workdir / bench[1]).relative_to(benchmarks).with_suffix("")
                spans[step.as_posix()] = end_s - start_s
    return spans


@pytest.mark.e2e
def test_step_wall_time_is_the_time_snakemake_saw_the_job_take(
        target_run: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir, done = target_run
    assert done.returncode == 0, done.stderr[-4000:]
    root = workdir / "results" / "small" / "benchmarks"
    monkeypatch.chdir(workdir)  # the manifest job runs in Snakemake's working directory
    timings = manifest.step_timings(sorted(root.rglob("*.tsv")), root=root)
    spans = logged_jobs(workdir, root)
    assert set(timings) == set(spans) == {"ingest", "cohort_shard/cohort/0",
                                          "cohort_shard/cohort/1", "attrition/cohort"}
    for step, span in spans.items():
        wall = timings[step]["wall_s"]
        assert wall is not None
        # the log's stamps are whole seconds: a span can read up to 1 s long
        assert wall >= span - 1, (step, timings[step], span)
        assert wall >= timings[step]["compute_s"]


@pytest.mark.e2e
def test_a_failing_step_shows_its_error_once_and_no_stack_frames(synth_omop: Path,
                                                                 tmp_path: Path) -> None:
    study = write_study(tmp_path / "bad.yaml", name="bad", shards=2,
                        source={"omop": {"path": str(synth_omop)}},
                        concept_sets__asthma_exacerbation__include=[
                            {"concept_id": UNKNOWN_CONCEPT}])
    done = cohortflow("run", str(study), "--",
                      "results/bad/cohorts/asthma_exacerbation/attrition.json",
                      cwd=tmp_path)
    console = done.stdout + done.stderr
    assert done.returncode == 2, console[-4000:]  # refused input, as every command says it
    assert console.count(f"none of the concepts {UNKNOWN_CONCEPT}") == 1, console[-4000:]
    last = [line for line in console.splitlines() if line.startswith("error: ")]
    assert last == [
        "error: step cohort_shard failed: concept_sets.asthma_exacerbation: none of the "
        f"concepts {UNKNOWN_CONCEPT} (domain CONDITION) occurs in the event store; fix: "
        "check the concept ids and the domain"]
    assert "Traceback" not in console
    assert 'File "' not in console
    assert "RuleException" not in console
    full = tmp_path / "results" / "bad" / "logs" / "snakemake.log"
    assert f"Snakemake's whole output, stack frames included: {full}" in console
    assert 'File "' in full.read_text()  # the frames stay in the log file
    step_logs = sorted((tmp_path / "results" / "bad" / "logs" / "cohort_shard").rglob("*.log"))
    assert step_logs
    for log in step_logs:  # each failed job's own log says why, frames included
        text = log.read_text()
        assert f"step failed: concept_sets.asthma_exacerbation: none of the concepts " \
               f"{UNKNOWN_CONCEPT}" in text
        assert "Traceback" in text


def fake_rerun(recorded: Path):
    """Stands in for Snakemake in verify: the rerun writes the recorded manifest again."""
    def call(command: list[str], **_: object) -> int:
        scratch = Path(command[command.index("--directory") + 1])
        out = scratch / "results" / "s" / "manifest.json"
        out.parent.mkdir(parents=True)
        out.write_text(recorded.read_text())
        return 0
    return call


@pytest.mark.parametrize("keep", [False, True])
def test_verify_removes_its_own_scratch_unless_asked_to_keep_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool) -> None:
    study = write_study(tmp_path / "s.yaml", name="s")
    recorded = tmp_path / "manifest.json"
    recorded.write_text(json.dumps({
        "study": {"path": str(study), "sha256": "x"}, "profile": "laptop",
        "outputs": {"cohort": {"sha256": "1"}}, "metrics": {"auroc": 0.7}, "inputs": {},
        "cohortflow": {}, "packages": {}}))
    scratch = tmp_path / "tmp" / "cohortflow-verify-x"
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **_: str(scratch))
    monkeypatch.setattr(subprocess, "call", fake_rerun(recorded))
    args = ["verify", str(recorded), *(["--keep-scratch"] if keep else [])]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "verified" in done.output
    assert scratch.exists() == keep
    assert ("rerun manifest:" in done.output) == keep


def test_verify_keeps_a_scratch_the_user_named(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    study = write_study(tmp_path / "s.yaml", name="s")
    recorded = tmp_path / "manifest.json"
    recorded.write_text(json.dumps({
        "study": {"path": str(study), "sha256": "x"}, "profile": "laptop",
        "outputs": {}, "metrics": {}, "inputs": {}, "cohortflow": {}, "packages": {}}))
    monkeypatch.setattr(subprocess, "call", fake_rerun(recorded))
    done = CliRunner().invoke(app, ["verify", str(recorded), "--scratch",
                                    str(tmp_path / "mine")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "mine" / "results" / "s" / "manifest.json").is_file()


RECORDED = Path(__file__).parent / "recorded" / "pgx_checkpoints.snakemake.txt"
"""Snakemake's whole output (``--debug-dag`` listing included) of a pgx run whose genotype
conversion ran as checkpoints: ``genomics_explode`` and ``genomics_encode`` jobs appear only
after the checkpoints' DAG updates, not in the job stats; the run then failed in the sweep."""


def test_jobs_added_by_a_checkpoint_are_counted_as_ran_not_reused() -> None:
    progress = RunProgress()
    for line in RECORDED.read_text().splitlines():
        progress.feed(line, 0.0)
    log = RECORDED.read_text()
    explode = len(set(re.findall(r"output: \S+/steps/explode/(\d+)\.json", log)))
    stats = log.split("Job stats:")[1].split("total")[0]
    assert explode > 1 and not re.search(r"^genomics_(explode|encode) ", stats, re.M)
    steps = {step.rule: step for step in progress.shown()}
    assert (steps["genomics_explode"].done, steps["genomics_explode"].planned) == (
        explode, explode)
    assert steps["genomics_explode"].finished and steps["genomics_encode"].finished
    assert progress.reused() == {}
    lines = progress.summary(59.0, 1)
    assert f"genomics_explode {explode}, genomics_encode 1" in lines[0]
    assert lines[-1] == "reused (up to date): nothing"
