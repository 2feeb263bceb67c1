"""A SLURM job that runs out of memory or time: one clear line, and the profile's retry.

The cluster tests run a small study with ``cohortflow run --profile slurm`` on the real
single-node test cluster (``tests/harness/slurm.py``, which kills a job over its ``--mem``
like a production cluster does) with one rule's resources made too small for its first
attempt on the command line: ``--set-resources`` there wins over the profile, and
Snakemake evaluates it per attempt, so the retry asks for more.  The message logic is
tested on hand-written Snakemake log lines as well.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from cohortflow.runner import LimitReader, LimitWatch
from tests.conftest import REPO, write_study

PROFILE = REPO / "profiles" / "slurm"
TEST_PROFILE = REPO / "tests" / "harness" / "slurm-test-profile"

# --------------------------------------------------------------- hand-written log lines
OOM_LOG = """\
slurmstepd-vm: error: StepId=7.batch exceeded memory limit (220766208 > 157286400), being killed
slurmstepd-vm: error: Exceeded job memory limit
slurmstepd-vm: error: *** JOB 7 ON vm CANCELLED AT 2026-11-24T09:17:45 ***
"""


def snakemake_log(tmp_path: Path, status: str, *, restart: bool, resources: str,
                  retry_resources: str = "", slurm_log: str | None = OOM_LOG) -> list[str]:
    """Snakemake's lines for rule features, SLURM job 7, as the SLURM executor logs them."""
    log_file = tmp_path / "slurm_logs" / "rule_features" / "7.log"
    if slurm_log is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(slurm_log)
    text = f"""\
[Tue Nov 24 09:17:41 2026]
rule features:
    input: results/demo/events, results/demo/cohorts/cohort/shards/0.parquet
    output: results/demo/features/cohort
    log: results/demo/logs/features/cohort.log
    jobid: 8
    reason: Missing output files: results/demo/features/cohort
    threads: 2
    resources: tmpdir=<TBD>, {resources}, disk_mb=1000, slurm_partition=debug, cpus_per_task=1
Shell command: None
Job 8 has been submitted with SLURM jobid 7 (log: {log_file}).
[Tue Nov 24 09:17:53 2026]
Error in rule features:
    message: SLURM-job '7' failed, SLURM status is: '{status}'. Detailed failure reason \
unavailable (status command is not 'sacct').For further error details see the cluster/cloud \
log and the log files of the involved rule(s).
    jobid: 8
    input: results/demo/events, results/demo/cohorts/cohort/shards/0.parquet
    output: results/demo/features/cohort
    log: results/demo/logs/features/cohort.log, {log_file} (check log file(s) for error details)
    external_jobid: 7
"""
    if restart:
        text += f"""\
Trying to restart job 8.
Select jobs to execute...
Execute 1 jobs...

[Tue Nov 24 09:17:53 2026]
rule features:
    jobid: 8
    threads: 2
    resources: tmpdir=<TBD>, {retry_resources}, slurm_partition=debug, cpus_per_task=1
Job 8 has been submitted with SLURM jobid 9 (log: {log_file.parent / "9.log"}).
"""
    else:
        text += """\
Shutting down, this might take some time.
Exiting because a job execution failed. Look above for error messages
"""
    return text.splitlines(keepends=True)


def told(lines: list[str], caps: dict[str, int] | None = None) -> list[str]:
    reader = LimitReader(caps)
    return [message for line in lines for message in reader.feed(line)] + reader.close()


def test_a_memory_kill_that_is_retried_is_told_once_with_the_retry_amount(
    tmp_path: Path,
) -> None:
    lines = snakemake_log(tmp_path, "FAILED", restart=True, resources="mem_mb=150, runtime=60",
                          retry_resources="mem_mb=2000, runtime=120")
    assert told(lines) == [
        "rule features ran out of memory: SLURM job 7 (attempt 1) asked for mem_mb=150, and "
        "was killed at 211 MB; the profile's retries run it again with mem_mb=2000; to need "
        "no retry, start there: --set-resources features:mem_mb=2000"
    ]


def test_a_memory_kill_on_the_last_attempt_names_the_fix_and_the_profile_cap(
    tmp_path: Path,
) -> None:
    lines = snakemake_log(tmp_path, "FAILED", restart=False, resources="mem_mb=150, runtime=60")
    assert told(lines, caps={"mem_mb": 400}) == [
        "rule features ran out of memory: SLURM job 7 (attempt 1) asked for mem_mb=150, and "
        "was killed at 211 MB, on its last attempt; fix: rerun with more, e.g. "
        "`--set-resources features:mem_mb=430` on the command line (or under set-resources: "
        "in the profile), and raise the profile's `resources: [mem_mb=400]`: Snakemake "
        "silently caps every job at it"
    ]


def test_a_retry_that_asks_for_no_more_says_so(tmp_path: Path) -> None:
    lines = snakemake_log(tmp_path, "FAILED", restart=True, resources="mem_mb=150, runtime=60",
                          retry_resources="mem_mb=150, runtime=60")
    (message,) = told(lines)
    assert message.endswith(
        "run it again with mem_mb=150, no more than before; fix: rerun with more, e.g. "
        "`--set-resources features:mem_mb=430` on the command line (or under set-resources: "
        "in the profile)")


def test_a_timeout_is_told_from_the_slurm_state_alone(tmp_path: Path) -> None:
    lines = snakemake_log(tmp_path, "TIMEOUT", restart=False, resources="mem_mb=2000, runtime=1",
                          slurm_log=None)
    assert told(lines) == [
        "rule features ran out of time: SLURM job 7 (attempt 1) asked for runtime=1 minutes "
        "and was cancelled at its limit, on its last attempt; fix: rerun with more, e.g. "
        "`--set-resources features:runtime=2` on the command line (or under set-resources: "
        "in the profile)"
    ]


def test_the_time_limit_line_of_the_slurm_log_is_enough(tmp_path: Path) -> None:
    lines = snakemake_log(
        tmp_path, "FAILED", restart=True, resources="mem_mb=2000, runtime=1",
        retry_resources="mem_mb=4000, runtime=2",
        slurm_log="slurmstepd-vm: error: *** JOB 7 ON vm CANCELLED AT 2026-11-24T09:25:27 "
                  "DUE TO TIME LIMIT ***\n")
    (message,) = told(lines)
    assert message.startswith("rule features ran out of time: SLURM job 7 (attempt 1) asked "
                              "for runtime=1 minutes")
    assert "run it again with runtime=2;" in message


def test_the_out_of_memory_state_of_a_cgroup_cluster_is_enough(tmp_path: Path) -> None:
    lines = snakemake_log(tmp_path, "OUT_OF_MEMORY", restart=False,
                          resources="mem_mb=4000, runtime=60", slurm_log=None)
    (message,) = told(lines)
    assert message.startswith("rule features ran out of memory: SLURM job 7 (attempt 1) asked "
                              "for mem_mb=4000, on its last attempt; fix: rerun with more, e.g. "
                              "`--set-resources features:mem_mb=8000`")


def test_the_line_names_the_wildcards_of_a_job() -> None:
    lines = """\
rule cohort_shard:
    jobid: 3
    wildcards: shard=1
    resources: tmpdir=<TBD>, mem_mb=2000, runtime=1
Job 3 has been submitted with SLURM jobid 12 (log: /nonexistent/12.log).
Error in rule cohort_shard:
    message: SLURM-job '12' failed, SLURM status is: 'TIMEOUT'. Detailed failure reason \
unavailable (status command is not 'sacct').
    jobid: 3
    external_jobid: 12
Trying to restart job 3.
rule cohort_shard:
    jobid: 3
    wildcards: shard=1
    resources: tmpdir=<TBD>, mem_mb=4000, runtime=2
""".splitlines()
    assert told(lines) == [
        "rule cohort_shard (shard=1) ran out of time: SLURM job 12 (attempt 1) asked for "
        "runtime=1 minutes and was cancelled at its limit; the profile's retries run it again "
        "with runtime=2; to need no retry, start there: --set-resources cohort_shard:runtime=2"
    ]


@pytest.mark.parametrize("slurm_log", [
    "Traceback (most recent call last):\nValueError: bad cohort\n",
    "slurmstepd-vm: error: *** JOB 7 ON vm CANCELLED AT 2026-11-24T09:17:45 ***\n",  # scancel
])
def test_other_failures_get_no_line(tmp_path: Path, slurm_log: str) -> None:
    for status in ("FAILED", "CANCELLED"):
        lines = snakemake_log(tmp_path, status, restart=True, resources="mem_mb=2000",
                              retry_resources="mem_mb=4000", slurm_log=slurm_log)
        assert told(lines) == []


def test_the_watch_follows_the_log_snakemake_writes_while_it_runs(tmp_path: Path) -> None:
    log_dir = tmp_path / ".snakemake" / "log"
    log_dir.mkdir(parents=True)
    (log_dir / "2026-11-24T091000.000000.snakemake.log").write_text("an earlier run\n")
    lines = snakemake_log(tmp_path, "FAILED", restart=True, resources="mem_mb=150",
                          retry_resources="mem_mb=2000")
    heard: list[str] = []
    with LimitWatch(log_dir, heard.append, interval=0.05):
        with (log_dir / "2026-11-24T091630.560413.snakemake.log").open("w") as log:
            for line in lines:
                log.write(line)
                log.flush()
        for _ in range(600):  # told while the run goes on, not only when it ends
            if heard:
                break
            time.sleep(0.05)
        assert heard, "nothing told while the log was being written"
    assert len(heard) == 1
    assert heard[0].startswith("rule features ran out of memory")


def test_the_slurm_profile_asks_for_more_on_each_attempt() -> None:
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    defaults = profile["default-resources"]
    for name in ("mem_mb", "runtime"):
        first, second = (eval(str(defaults[name]), {"attempt": a}) for a in (1, 2))
        assert second == 2 * first, name
    cap = int(profile["resources"][0].removeprefix("mem_mb="))
    ingest_retry = 2 * 4000  # workflow/rules/source.smk: mem_mb=4000 * attempt
    assert cap >= ingest_retry, "the profile's mem_mb cap would silently undo ingest's retry"


# --------------------------------------------------------------- the real SLURM cluster
def make_study(source: Path, root: Path) -> Path:
    """A study reading the synthetic OMOP Parquet directory, in 2 shards."""
    root.mkdir(parents=True)
    return write_study(root / "study.yaml", shards=2, source={"omop": {"path": str(source)}})


def cohortflow_on_slurm(study: Path, workdir: Path, env: dict[str, str],
                        *extra: str) -> subprocess.Popen[str]:
    """``cohortflow run --profile slurm`` with the test cluster's polling intervals."""
    workdir.mkdir(parents=True)
    return subprocess.Popen(
        # -v: Snakemake's own lines (each job's resources, SLURM's verdicts) on the console
        [sys.executable, "-m", "cohortflow", "run", str(study), "--profile", "slurm",
         "--results", "results", "-v", *extra],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # --profile is cohortflow's own option; Snakemake also reads it from here
        env={**os.environ, **env, "SNAKEMAKE_PROFILE": str(TEST_PROFILE)},
        start_new_session=True,  # one process group: a failed test kills it all
    )


def finish(head: subprocess.Popen[str]) -> str:
    try:
        out, _ = head.communicate(timeout=900)
    except BaseException:
        os.killpg(head.pid, signal.SIGKILL)  # no orphan Snakemake left submitting jobs
        head.wait()
        raise
    return out


def retried_resources(log: str, rule: str) -> str:
    """The resources line of the second attempt of ``rule`` in Snakemake's log."""
    blocks = re.findall(rf"^rule {rule}:\n(?:    .*\n)*?    resources: (.*)$", log, re.M)
    assert len(blocks) == 2, log[-4000:]
    return blocks[1]


@pytest.mark.slurm
def test_a_job_over_its_memory_is_told_and_retried_with_more(
    slurm_cluster, synth_omop: Path, tmp_path: Path
) -> None:
    study = make_study(synth_omop, tmp_path / "study")
    workdir = tmp_path / "run"
    started = time.monotonic()
    # 150 MB: less than the Snakemake job step needs to start, so SLURM kills it at once;
    # the retry gets the profile's first-attempt default.
    head = cohortflow_on_slurm(study, workdir, slurm_cluster.env,
                               "--set-resources", "features:mem_mb=150 if attempt == 1 else 2000",
                               "--until", "features")
    log = finish(head)
    print(f"out-of-memory run: {time.monotonic() - started:.0f}s")
    assert head.returncode == 0, log[-6000:]
    told = re.search(
        r"rule features \(target=cohort\) ran out of memory: SLURM job (\d+) \(attempt 1\) "
        r"asked for mem_mb=150, "
        r"and was killed at \d+ MB; the profile's retries run it again with mem_mb=2000; to "
        r"need no retry, start there: --set-resources features:mem_mb=2000", log)
    assert told, log[-6000:]
    slurm_job = told.group(1)
    assert f"SLURM-job '{slurm_job}' failed" in log
    assert "Trying to restart job" in log
    # SLURM itself killed it for its memory (not Dask, not Python)
    slurm_log = (workdir / ".snakemake" / "slurm_logs" / "rule_features" / "cohort"
                 / f"{slurm_job}.log")  # the executor's folder per wildcard values
    assert "Exceeded job memory limit" in slurm_log.read_text()
    # the retry: the command line's amount, and the profile's runtime of attempt 2 (60 * 2)
    assert re.search(r"mem_mb=2000, .*runtime=120", retried_resources(log, "features")), log
    assert (workdir / "results" / "demo" / "features" / "cohort" / "features.zarr").is_dir()


def in_job(pid: int, job_id: str) -> bool:
    """Whether process ``pid`` runs inside SLURM job ``job_id`` (its environment says so):
    ``scontrol listpids`` has once listed this test's own processes, and freezing those
    hangs the suite."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"SLURM_JOB_ID={job_id}".encode() in environ


def freeze(cluster, job_id: str, frozen: set[int]) -> None:
    """SIGSTOP the Python processes of a SLURM job (the rule's work), as a hung filesystem
    would hold them.  srun and the batch shell stay awake: slurmctld talks to srun, and a
    stopped srun stalls the controller itself.  (The job's pids come from the slurmd of
    its node: ``cluster.job_pids``.)"""
    for pid in cluster.job_pids(job_id):
        try:
            command = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if pid in frozen or not command.startswith("python") or not in_job(pid, job_id):
            continue
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        frozen.add(pid)


@pytest.mark.slurm
def test_a_job_over_its_time_is_told_and_retried_with_more(
    slurm_cluster, synth_omop: Path, tmp_path: Path
) -> None:
    study = make_study(synth_omop, tmp_path / "study")
    workdir = tmp_path / "run"
    env = slurm_cluster.client_env()
    started = time.monotonic()
    # SLURM limits are whole minutes, so the first attempt hangs (its processes stopped)
    # until SLURM cancels it at 1 minute; the retry gets 2 and is left alone.
    head = cohortflow_on_slurm(study, workdir, slurm_cluster.env,
                               "--set-resources", "ingest:runtime=1 * attempt",
                               "--until", "ingest")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(head.stdout or []), daemon=True)
    reader.start()
    frozen: set[int] = set()
    hung = None
    try:
        while head.poll() is None and (hung is None or time.monotonic() < hung[1]):
            queue = subprocess.run(["squeue", "-h", "-o", "%i %k %T"], capture_output=True,
                                   text=True, env=env, check=False)
            if queue.returncode != 0:  # a busy controller: ask again
                time.sleep(1)
                continue
            for job_id, comment, state in (line.split() for line in queue.stdout.splitlines()):
                if comment == "rule_ingest" and state == "RUNNING" and hung is None:
                    hung = (job_id, time.monotonic() + 5)  # catch children for 5 s
            if hung is not None:
                freeze(slurm_cluster, hung[0], frozen)
            time.sleep(0.1)
        head.wait(timeout=900)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if head.poll() is None:  # the head and its Snakemake: no orphan submits more jobs
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
    reader.join(timeout=10)
    log = "".join(lines)
    print(f"timeout run: {time.monotonic() - started:.0f}s")
    assert hung is not None and frozen, log[-4000:]
    assert head.returncode == 0, log[-6000:]
    assert f"SLURM-job '{hung[0]}' failed, SLURM status is: 'TIMEOUT'" in log, log[-4000:]
    assert (f"rule ingest ran out of time: SLURM job {hung[0]} (attempt 1) asked for runtime=1 "
            "minutes and was cancelled at its limit; the profile's retries run it again with "
            "runtime=2; to need no retry, start there: --set-resources ingest:runtime=2") in log
    # the retry: the command line's runtime, and ingest's own memory of attempt 2 (4000 * 2),
    # which the profile's cap leaves alone
    assert re.search(r"mem_mb=8000, .*runtime=2,", retried_resources(log, "ingest")), log
    assert (workdir / "results" / "demo" / "events" / "metadata" / "codes.parquet").is_file()
