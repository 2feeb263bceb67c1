"""Whole studies through Snakemake: the laptop profile, then the real SLURM test cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cohortflow.layout import Layout
from cohortflow.study import analysis_id, load_study
from tests.harness.intruded import IntrudedRun
from tests.helpers import DEMO_ANALYSIS, MANY_SHARDS, REPO, digests


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
    metrics = json.loads(Layout(results).model_metrics(DEMO_ANALYSIS).read_text())
    oracle = json.loads((results / "omop" / "oracle.json").read_text())
    assert metrics["n_test"] > 1000
    assert abs(metrics["test"]["auroc"] - oracle["oracle_auroc"]) <= 0.05, (metrics, oracle)


@pytest.mark.e2e
def test_attrition_counts_add_up(laptop_run: tuple) -> None:
    results, _ = laptop_run
    attrition = json.loads(Layout(results).attrition(DEMO_ANALYSIS).read_text())
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


def snakemake_from_repo(workdir: Path, study_file: Path, profile_args: list[str],
                        env: dict[str, str], targets: tuple[str, ...] = ()) -> str:
    """Plain snakemake from the repo root, as a user on a login node would type it
    (``targets``: files to build, relative to ``workdir``; none: the whole study)."""
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *profile_args, "--directory", str(workdir),
         *targets, "--config", f"study={study_file}", "results=results"],
        cwd=REPO, capture_output=True, text=True, check=False, env={**os.environ, **env},
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    return log


def assert_same_results(results: Path, laptop_results: Path) -> None:
    """Cohort tables and tensors byte for byte, metrics to 1e-9: the profile changes nothing."""
    assert digests(results) == digests(laptop_results)
    laptop_metrics = json.loads(Layout(laptop_results).model_metrics(DEMO_ANALYSIS).read_text())
    metrics = json.loads(Layout(results).model_metrics(DEMO_ANALYSIS).read_text())
    for key, value in laptop_metrics["test"].items():
        assert metrics["test"][key] == pytest.approx(value, abs=1e-9)
    assert (results / "report.html").is_file()


@pytest.mark.e2e
@pytest.mark.slurm
def test_slurm_profile_runs_as_batch_jobs_with_identical_results(
    slurm_cluster, laptop_run: tuple, study_file: Path
) -> None:
    before = slurm_cluster.submission_count()
    workdir = study_file.parent / "slurm"
    log = snakemake_from_repo(
        workdir, study_file,
        ["--workflow-profile", "profiles/slurm", "--profile", "tests/harness/slurm-test-profile"],
        slurm_cluster.env)
    jobs = len(re.findall(r"Job \S+ has been submitted with SLURM jobid \d+", log))
    # synth, ingest, the 4 shards of the target cohort and the 4 of the outcome's in one
    # batch, labels, features, one batch of the sweep's configurations (group-components);
    # model, export and report of a study this small run on the submit host
    assert jobs == 6, log[-3000:]
    assert re.search(r"^localrule report:", log, re.MULTILINE), log[-3000:]
    assert slurm_cluster.submission_count() - before == jobs
    assert_same_results(workdir / "results" / "demo", laptop_run[0])


SLURM_SLICE = [analysis_id(target, outcome, "1y")
               for target in ("asthma", "albuterol_new_users")
               for outcome in ("exacerbation", "er_visit")]
"""Two targets x two outcomes (a concept set and a library cohort) x one time at risk of the
multi-analysis seed study: what its SLURM run builds."""


@pytest.mark.e2e
@pytest.mark.slurm
def test_slurm_profile_runs_many_analyses_with_identical_results(
    slurm_cluster, many_run: Path
) -> None:
    # The same study file as the laptop run (many_run), under the slurm profile, asked for
    # the labels and tensors of SLURM_SLICE: every cohort those read is built once, and
    # the labels go in one batch (group-components).  The demo's SLURM run above covers
    # the sweep, the models and the exports.
    study_file = many_run.parents[2] / "many.yaml"
    study = load_study(study_file)
    analyses = [study.analysis(analysis) for analysis in SLURM_SLICE]
    layout = Layout.of("results", study.name)
    targets = sorted({str(path) for a in analyses for path in (
        layout.labels(a.id), layout.features(a.target))})
    before = slurm_cluster.submission_count()
    workdir = study_file.parent / "slurm"
    log = snakemake_from_repo(
        workdir, study_file,
        ["--workflow-profile", "profiles/slurm", "--profile", "tests/harness/slurm-test-profile"],
        slurm_cluster.env, tuple(targets))
    jobs = len(re.findall(r"Job \S+ has been submitted with SLURM jobid \d+", log))
    cohorts = sorted({c for a in analyses for c in (a.target, a.outcome_cohort)})
    assert cohorts == ["albuterol_new_users", "asthma", "er_visit", "exacerbation"]
    # synth, ingest, every (cohort, shard) in batches of 16, the 4 labels in one batch, one
    # tensor per target
    assert jobs == 2 + -(-len(cohorts) * MANY_SHARDS // 16) + 1 + 2, log[-3000:]
    assert slurm_cluster.submission_count() - before == jobs

    results = workdir / "results" / study.name
    built, laptop = digests(results), digests(many_run)
    assert {key.split("/")[1] for key in built if key.startswith("cohorts/")} == set(cohorts)
    assert {key.split("/")[1] for key in built if key.startswith("features/")} == {
        "asthma", "albuterol_new_users"}
    assert {key.split("/")[1] for key in built if key.startswith("analyses/")} == set(
        SLURM_SLICE)
    assert {key: laptop.get(key) for key in built} == built  # byte for byte


@pytest.mark.e2e
@pytest.mark.slurm
def test_slurm_dask_profile_runs_dask_workers_as_jobs_with_identical_results(
    intruded_run: IntrudedRun, laptop_run: tuple
) -> None:
    # The demo study under `cohortflow run --profile slurm-dask` (the run that
    # tests/test_shared_cluster.py also probes as another user; one run serves both).
    run = intruded_run
    assert run.returncode == 0, (run.stdout + run.stderr).decode()[-6000:]
    assert run.submissions >= 1, (run.stdout + run.stderr).decode()[-3000:]  # workers: jobs
    assert_same_results(run.results, laptop_run[0])
