"""Whole studies through Snakemake: the laptop profile, then the real SLURM test cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, digests


@pytest.mark.e2e
def test_demo_study_leaves_a_self_contained_report(laptop_run: tuple) -> None:
    results, _ = laptop_run
    page = (results / "report.html").read_text()
    assert "Cohort attrition" in page and "At least 365 days of prior observation" in page
    assert re.search(r'<img alt="ROC curve[^"]*" src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}',
                     page)
    # Nothing to fetch: no external scripts, styles, images or fonts.
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)
    assert "<script" not in page


@pytest.mark.e2e
def test_demo_model_auroc_is_within_005_of_the_oracle(laptop_run: tuple) -> None:
    results, _ = laptop_run
    metrics = json.loads((results / "model" / "metrics.json").read_text())
    oracle = json.loads((results / "omop" / "oracle.json").read_text())
    assert metrics["n_test"] > 1000
    assert abs(metrics["test"]["auroc"] - oracle["oracle_auroc"]) <= 0.05, (metrics, oracle)


@pytest.mark.e2e
def test_attrition_counts_add_up(laptop_run: tuple) -> None:
    results, _ = laptop_run
    attrition = json.loads((results / "cohort" / "attrition.json").read_text())
    counts = [step["subjects"] for step in attrition]
    assert counts[0] >= counts[-1] > 0
    oracle = json.loads((results / "omop" / "oracle.json").read_text())
    assert counts[-1] == oracle["n_eligible"]  # the generator's own count of the cohort


@pytest.mark.e2e
def test_rerun_of_a_finished_study_does_nothing(laptop_run: tuple, study_file: Path) -> None:
    results, _ = laptop_run
    before = digests(results)
    again = subprocess.run(
        [sys.executable, "-m", "cohortflow", "run", str(study_file), "--results", "results"],
        cwd=results.parents[1], capture_output=True, text=True, check=False,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Nothing to be done" in again.stdout + again.stderr
    assert digests(results) == before


@pytest.mark.e2e
@pytest.mark.slurm
def test_slurm_profile_runs_as_batch_jobs_with_identical_results(
    slurm_cluster, laptop_run: tuple, study_file: Path
) -> None:
    laptop_results, _ = laptop_run
    workdir = study_file.parent / "slurm"
    workdir.mkdir()
    before = slurm_cluster.submission_count()
    # Plain snakemake from the repo root, as a user on a login node would type it.
    result = subprocess.run(
        [sys.executable, "-m", "snakemake",
         "--workflow-profile", "profiles/slurm",
         "--profile", "tests/harness/slurm-test-profile",
         "--directory", str(workdir),
         "--config", f"study={study_file}", "results=results"],
        cwd=REPO, capture_output=True, text=True, check=False,
        env={**os.environ, **slurm_cluster.env},
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    jobs = len(re.findall(r"Job \d+ has been submitted with SLURM jobid \d+", log))
    # synth, ingest, 4 cohort shards, attrition, features, model, report
    assert jobs == 10, log[-3000:]
    assert slurm_cluster.submission_count() - before == jobs
    slurm_results = workdir / "results" / "demo"
    assert digests(slurm_results) == digests(laptop_results)
    laptop_metrics = json.loads((laptop_results / "model" / "metrics.json").read_text())
    slurm_metrics = json.loads((slurm_results / "model" / "metrics.json").read_text())
    for key, value in laptop_metrics["test"].items():
        assert slurm_metrics["test"][key] == pytest.approx(value, abs=1e-9)
    assert (slurm_results / "report.html").is_file()


@pytest.mark.e2e
@pytest.mark.slurm
def test_slurm_dask_profile_runs_dask_workers_as_jobs_with_identical_results(
    slurm_cluster, laptop_run: tuple, study_file: Path
) -> None:
    laptop_results, _ = laptop_run
    workdir = study_file.parent / "slurm-dask"
    workdir.mkdir()
    before = slurm_cluster.submission_count()
    # Worker jobs sized for the one small test node; everything else from the profile.
    sizing = {"DASK_JOBQUEUE__SLURM__CORES": "1", "DASK_JOBQUEUE__SLURM__MEMORY": "1GiB",
              "DASK_COHORTFLOW__ADAPT__MAXIMUM": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/slurm-dask",
         "--directory", str(workdir),
         "--config", f"study={study_file}", "results=results", "profile=slurm-dask"],
        cwd=REPO, capture_output=True, text=True, check=False,
        env={**os.environ, **slurm_cluster.env, **sizing},
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    workers = slurm_cluster.submission_count() - before
    assert workers >= 1, log[-3000:]  # the Dask workers were SLURM jobs
    results = workdir / "results" / "demo"
    assert digests(results) == digests(laptop_results)
    laptop_metrics = json.loads((laptop_results / "model" / "metrics.json").read_text())
    metrics = json.loads((results / "model" / "metrics.json").read_text())
    for key, value in laptop_metrics["test"].items():
        assert metrics["test"][key] == pytest.approx(value, abs=1e-9)
    assert json.loads((results / "manifest.json").read_text())["profile"] == "slurm-dask"
