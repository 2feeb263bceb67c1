"""Run manifests, `cohortflow verify` and `status`, and surviving faults (Dask, SLURM, head)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from distributed.diagnostics.plugin import WorkerPlugin

from cohortflow import compute, features, manifest
from cohortflow.layout import Layout
from cohortflow.study import load_study
from tests.helpers import (
    DEMO_ANALYSIS,
    REPO,
    build_cohorts,
    cohortflow,
    make_omop_study,
    write_study,
)

pytestmark = pytest.mark.e2e


def test_every_run_writes_a_manifest(omop_run: tuple[Path, Path]) -> None:
    study, results = omop_run
    record = manifest.read(results / "manifest.json")
    assert record["study"] == {"path": str(study.resolve()),
                               "sha256": manifest.file_digest(study),
                               "digest": load_study(study).digest()}
    assert record["profile"] == "laptop"
    assert record["seeds"] == {"study": 42}
    source = load_study(study).source_path()
    assert record["source"] == {"kind": "omop", "location": str(source), "format": None,
                                "schema": None}
    assert re.fullmatch(r"[0-9a-f]{40}", record["cohortflow"]["commit"])
    assert record["packages"]["polars"] == pl.__version__
    person = record["inputs"]["person"]
    assert person["rows"] == 2500 and re.fullmatch(r"[0-9a-f]{64}", person["sha256"])
    assert {"events", "cohorts/cohort", "cohorts/asthma_exacerbation",
            "features/cohort/features.zarr", f"analyses/{DEMO_ANALYSIS}", "report.html",
            "export"} <= set(record["outputs"])
    assert record["outputs"]["cohorts/cohort"] == manifest.tree_digest(
        Layout(results).cohort("cohort"))
    assert [a["id"] for a in record["analyses"]] == [DEMO_ANALYSIS]
    metrics = json.loads(Layout(results).model_metrics(DEMO_ANALYSIS).read_text())
    assert record["metrics"] == {DEMO_ANALYSIS: metrics["test"]}
    assert {"ingest", "features/cohort", f"model/{DEMO_ANALYSIS}", "cohort_shard/cohort/0",
            f"labels/{DEMO_ANALYSIS}"} <= set(record["steps"])
    assert record["steps"]["features/cohort"]["wall_s"] > 0


def test_verify_passes_on_an_untouched_rerun(omop_run: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    _, results = omop_run
    done = cohortflow("verify", str(results / "manifest.json"), "--scratch",
                      str(tmp_path / "scratch"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified: every output is identical" in done.stdout
    assert done.stdout.count("identical") >= 7


def test_verify_names_the_changed_input(omop_run: tuple[Path, Path], tmp_path: Path) -> None:
    study, results = omop_run
    part = sorted((study.parent / "cdm" / "condition_occurrence").glob("*.parquet"))[0]
    # The module's run is shared: its input is altered for this test only, then put back
    # byte for byte, times included, so the other tests still see an up-to-date study.
    saved, times = part.read_bytes(), {p: p.stat() for p in (part, part.parent, part.parent.parent)}
    table = pl.read_parquet(part)
    moved = pl.col("condition_start_date") + pl.duration(days=1)
    altered = table.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(moved).otherwise(pl.col("condition_start_date"))
        .alias("condition_start_date"))
    try:
        altered.write_parquet(part)
        done = cohortflow("verify", str(results / "manifest.json"), "--scratch",
                          str(tmp_path / "scratch"), cwd=tmp_path)
    finally:
        part.write_bytes(saved)
        for path, stat in times.items():
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = " ".join(done.stdout.split())
    assert re.search(r"│ events │ different │", lines)
    assert "input changed: condition_occurrence (content hash differs)" in lines
    assert "input changed: person" not in lines


def test_status_shows_done_pending_and_out_of_date(omop_run: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    study, results = omop_run
    workdir = results.parents[1]

    def states() -> dict[str, str]:
        done = cohortflow("status", str(study), "--results", "results", cwd=workdir)
        assert done.returncode == 0, done.stderr
        rows = re.findall(r"│ (\w+)\s+│ \d+\s+│ (done|pending|out of date)", done.stdout)
        return dict(rows)

    assert set(states().values()) == {"done"}
    metrics = Layout(results).model_metrics(DEMO_ANALYSIS)
    saved = metrics.read_bytes()
    metrics.unlink()
    try:
        now = states()
        assert now["model"] == "pending" and now["ingest"] == "done"
    finally:
        metrics.write_bytes(saved)


class KillOnce(WorkerPlugin):
    """Kills the worker process the first time any worker starts executing a task."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
        if finish == "executing":
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)


def test_dask_worker_killed_mid_features_still_gives_an_identical_store(
    event_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cohort_dir = tmp_path / "cohort"
    study = build_cohorts(write_study(tmp_path / "study.yaml"), event_store, cohort_dir)
    features.build_store(study, "cohort", event_store, cohort_dir, tmp_path / "reference.zarr",
                         scheduler="synchronous")
    marker = tmp_path / "killed"
    monkeypatch.setenv("COHORTFLOW_WORKERS", "2")
    with compute.dask_client() as client:
        client.register_plugin(KillOnce(str(marker)))
        features.build_store(study, "cohort", event_store, cohort_dir,
                             tmp_path / "faulted.zarr", scheduler=client)
    assert marker.exists(), "no worker was killed: the fault was not injected"
    assert (manifest.tree_digests(tmp_path / "faulted.zarr")
            == manifest.tree_digests(tmp_path / "reference.zarr"))


def _jobs(lines: list[str]) -> tuple[dict[str, tuple[str, list[str]]], set[str]]:
    """Snakemake's verbose log: each job's (rule, outputs) by job id, and the finished ids."""
    jobs: dict[str, tuple[str, list[str]]] = {}
    finished: set[str] = set()
    rule, outputs = "", []
    for line in lines:
        line = line.rstrip("\n")
        if found := re.match(r"(?:local)?rule (\w+):$", line):
            rule, outputs = found[1], []
        elif line.startswith("    output: "):
            outputs = [o.strip() for o in line.removeprefix("    output: ").split(",")]
        elif found := re.match(r"    jobid: (\d+)$", line):
            jobs[found[1]] = (rule, outputs)
        elif found := re.match(r"Finished jobid: (\d+)", line):
            finished.add(found[1])
    return jobs, finished


def test_killed_head_process_resumes_without_redoing_finished_steps(
    synth_omop: Path, omop_run: tuple[Path, Path], tmp_path: Path
) -> None:
    study = make_omop_study(synth_omop, tmp_path / "study")
    workdir = tmp_path / "run"
    workdir.mkdir()
    head = subprocess.Popen(
        # --verbose: Snakemake's own lines, which say when each job starts and finishes
        [sys.executable, "-m", "cohortflow", "run", str(study), "--results", "results", "-v"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    assert head.stdout is not None
    seen: list[str] = []
    for line in head.stdout:  # the head reports each job as it starts
        seen.append(line)
        if re.match(r"(local)?rule features:", line):
            os.killpg(head.pid, signal.SIGKILL)
            break
    head.wait()
    assert head.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    results = workdir / "results" / "demo"
    # The jobs that had finished when the head was killed (the target's cohort shards at
    # least: the features need them; the outcome cohort's may still have been running).
    jobs, done = _jobs(seen)
    kept = sorted({workdir / out for job in done for rule, outs in [jobs[job]]
                   if rule in ("ingest", "cohort_shard") for out in outs})
    assert workdir / "results" / "demo" / "events" in kept
    assert any("cohorts/cohort/shards/" in str(p) for p in kept), kept
    finished = {p: p.stat().st_mtime_ns for p in kept}
    assert not (results / "features" / "cohort" / "features.zarr").exists()

    rerun = cohortflow("run", str(study), "--results", "results", "-v", cwd=workdir)
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log[-5000:]
    again, _ = _jobs(log.splitlines())
    redone = {workdir / out for rule, outs in again.values()
              if rule in ("ingest", "cohort_shard") for out in outs}
    assert not redone & set(kept), "finished steps were redone"
    assert re.search(r"rule features:", log)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    reference = omop_run[1]
    for output in ("cohorts", "features/cohort/features.zarr"):
        assert manifest.tree_digest(results / output) == manifest.tree_digest(
            reference / output)


@pytest.mark.slurm
def test_scancel_mid_features_is_retried_and_the_result_is_identical(
    slurm_cluster, synth_omop: Path, omop_run: tuple[Path, Path], tmp_path: Path
) -> None:
    study = make_omop_study(synth_omop, tmp_path / "study")
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = {**os.environ, **slurm_cluster.env}
    head = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--workflow-profile", str(REPO / "profiles" / "slurm"),
         "--profile", str(REPO / "tests" / "harness" / "slurm-test-profile"),
         "--config", f"study={study}", "results=results", "profile=slurm"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    assert head.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(head.stdout or []), daemon=True)
    reader.start()
    cancelled = None
    deadline = time.monotonic() + 600
    while cancelled is None and head.poll() is None and time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-o", "%i %k %T"], capture_output=True,
                               text=True, env=env, check=True).stdout
        for job_id, comment, state in (line.split() for line in queue.splitlines()):
            # the SLURM executor's comment: rule_<rule>_wildcards_<values> (target cohort)
            if comment == "rule_features_wildcards_cohort" and state == "RUNNING":
                subprocess.run(["scancel", job_id], env=env, check=True)
                cancelled = job_id
        time.sleep(0.2)
    head.wait(timeout=900)
    reader.join(timeout=10)
    log = "".join(lines)
    assert cancelled is not None, log[-4000:]
    assert head.returncode == 0, log[-6000:]
    assert re.search(rf"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED", log), \
        log[-4000:]
    assert "Trying to restart job" in log  # the profile's retries: 1 applied
    results = workdir / "results" / "demo"
    reference = omop_run[1]
    for output in ("cohorts", "features/cohort/features.zarr"):
        assert manifest.tree_digest(results / output) == manifest.tree_digest(
            reference / output)
    assert not list((results / "features").glob(".*partial*")), "a half-written store remains"
