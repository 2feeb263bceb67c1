"""A 24-configuration sweep end to end on small data, the planted-signal check on the demo,
and (marked slurm) the same sweep as grouped SLURM submissions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cohortflow import models
from cohortflow.study import load_study
from tests.helpers import REPO, run_study, write_study

SWEEP_PERSONS = 3000  # about 800 persons in the cohort: small, but every fold has outcomes
SWEEP_MODEL = {
    "sweep": {
        "families": [
            {"family": "logistic", "penalty": ["l1", "l2", "elasticnet"], "C": [0.1, 1.0]},
            {"family": "gradient_boosting", "learning_rate": [0.05, 0.1], "max_iter": [30],
             "max_leaf_nodes": [7]},
            {"family": "random_forest", "n_estimators": [30], "max_depth": [3, 5],
             "min_samples_leaf": [5, 10]},
        ],
        "feature_sets": {"all": {},
                         "conditions": {"domains": ["CONDITION", "MEDS_BIRTH", "GENDER"]}},
    },
    "split": {"method": "stratified", "test_fraction": 0.25, "cv_folds": 3},
}
N_CONFIGS = 24  # (6 logistic + 2 boosting + 4 forest) x 2 feature sets


@pytest.fixture(scope="module")
def sweep_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    return write_study(root / "study.yaml", source__synth__persons=SWEEP_PERSONS,
                       model=SWEEP_MODEL)


@pytest.fixture(scope="module")
def sweep_run(sweep_study: Path) -> Path:
    return run_study(sweep_study, sweep_study.parent / "laptop")


@pytest.mark.e2e
def test_every_configuration_leaves_its_own_directory(sweep_study: Path,
                                                      sweep_run: Path) -> None:
    study = load_study(sweep_study)
    configs = models.configurations(study)
    assert len(configs) == N_CONFIGS
    dirs = sorted(p.name for p in (sweep_run / "sweep").iterdir() if p.is_dir())
    assert dirs == sorted(configs)
    for cid, config in configs.items():
        folder = sweep_run / "sweep" / cid
        params = json.loads((folder / "params.json").read_text())
        assert params["id"] == cid and params["seed"] == models.derive_seed(study.seed, cid)
        assert params == json.loads(json.dumps(config.params()))
        metrics = json.loads((folder / "metrics.json").read_text())
        assert set(metrics["test"]) == set(models.TEST_COLUMNS)
        assert metrics["test"]["auroc_ci_low"] < metrics["test"]["auroc"] \
            < metrics["test"]["auroc_ci_high"]
        assert len(metrics["cv"]["auroc_folds"]) == 3
    n_all = json.loads((sweep_run / "sweep" / next(
        c for c, v in configs.items() if v.feature_set == "all") / "metrics.json").read_text())
    n_cond = json.loads((sweep_run / "sweep" / next(
        c for c, v in configs.items() if v.feature_set == "conditions") / "metrics.json"
                         ).read_text())
    assert n_cond["n_features"] < n_all["n_features"]  # the feature set read fewer columns


@pytest.mark.e2e
def test_every_configuration_tests_the_same_persons_and_never_fits_on_them(
        sweep_run: Path) -> None:
    frames = [pl.read_parquet(p) for p in sorted((sweep_run / "sweep").glob(
        "*/predictions.parquet"))]
    tested = [set(f.filter(pl.col("split") == "test")["subject_id"]) for f in frames]
    assert all(t == tested[0] for t in tested)
    for f in frames:
        test = f.filter(pl.col("split") == "test")
        assert (test["fold"] == -1).all() and test["cv_prediction"].is_nan().all()
        train = f.filter(pl.col("split") == "train")
        assert train["fold"].is_in([0, 1, 2]).all() and not train["cv_prediction"].is_nan().any()
    rate = frames[0].group_by("split").agg(pl.col("label").mean()).sort("split")["label"]
    assert abs(rate[0] - rate[1]) < 0.01  # stratified


@pytest.mark.e2e
def test_leaderboard_picks_the_best_cv_metric_not_the_best_test(sweep_run: Path) -> None:
    board = pl.read_parquet(sweep_run / "sweep" / "leaderboard.parquet")
    assert board.height == N_CONFIGS and board["best"].sum() == 1
    best = board.filter("best").row(0, named=True)
    assert best["cv_auroc"] == board["cv_auroc"].max()
    assert board["rank"].to_list() == list(range(1, N_CONFIGS + 1))
    chosen = json.loads((sweep_run / "model" / "metrics.json").read_text())
    assert chosen["config_id"] == best["config_id"]
    assert chosen["test"]["auroc"] == pytest.approx(best["test_auroc"], abs=1e-12)
    record = json.loads((sweep_run / "manifest.json").read_text())
    assert "sweep" in record["outputs"] and record["metrics"] == chosen["test"]


@pytest.mark.e2e
def test_a_configuration_trains_to_the_same_bytes_again(sweep_study: Path, sweep_run: Path,
                                                        tmp_path: Path) -> None:
    study = load_study(sweep_study)
    config = next(c for c in models.configurations(study).values()
                  if c.family == "gradient_boosting")
    models.train_configuration(study, config, sweep_run / "events", sweep_run / "cohort",
                               sweep_run / "features" / "features.zarr",
                               params_out=tmp_path / "params.json",
                               metrics_out=tmp_path / "metrics.json",
                               predictions_out=tmp_path / "predictions.parquet", threads=2)
    for name in ("params.json", "metrics.json", "predictions.parquet"):
        assert (tmp_path / name).read_bytes() == (
            sweep_run / "sweep" / config.id / name).read_bytes(), name


@pytest.mark.e2e
def test_report_shows_table_one_leaderboard_plots_and_features(sweep_run: Path) -> None:
    page = (sweep_run / "report.html").read_text()
    for heading in ("Characteristics (Table 1)", "Leaderboard", "Best models: ROC and "
                    "calibration", "Top features"):
        assert f"<h2>{heading}</h2>" in page
    assert f"{N_CONFIGS} configurations" in page
    assert 'alt="ROC curves of the best models (test split)" src="data:image/png;base64,' in page
    assert 'alt="Calibration plot of the best models (test split)"' in page
    assert "Allergic rhinitis" in page or "CONDITION//257007" in page
    assert (sweep_run / "figures" / "roc.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.e2e
def test_snakemake_report_links_the_study_report_and_figures(sweep_study: Path,
                                                             sweep_run: Path) -> None:
    out = sweep_run.parents[1] / "snakemake-report.zip"
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--report", str(out),
         "--directory", str(sweep_run.parents[1]),
         "--config", f"study={sweep_study}", "results=results"],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    names = zipfile.ZipFile(out).namelist()
    for wanted in ("report.html", "roc.png", "calibration.png", "leaderboard.parquet"):
        assert any(n.endswith(wanted) for n in names), (wanted, names[:20])


@pytest.mark.e2e
def test_demo_best_configuration_is_within_003_of_the_oracle(laptop_run: tuple) -> None:
    results, _ = laptop_run
    board = pl.read_parquet(results / "sweep" / "leaderboard.parquet")
    best = board.filter("best").row(0, named=True)
    oracle = json.loads((results / "omop" / "oracle.json").read_text())["oracle_auroc"]
    assert abs(best["test_auroc"] - oracle) <= 0.03, (best, oracle)
    assert best["cv_auroc"] == board["cv_auroc"].max()
    assert set(board["family"]) == {"logistic", "gradient_boosting", "random_forest"}


@pytest.mark.e2e
@pytest.mark.slurm
def test_slurm_sweep_batches_configurations_into_fewer_submissions(
        slurm_cluster, sweep_study: Path, sweep_run: Path) -> None:
    workdir = sweep_study.parent / "slurm"
    workdir.mkdir()
    before = slurm_cluster.submission_count()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake",
         "--workflow-profile", "profiles/slurm",
         "--profile", "tests/harness/slurm-test-profile",
         "--directory", str(workdir),
         "--config", f"study={sweep_study}", "results=results"],
        cwd=REPO, capture_output=True, text=True, check=False,
        env={**os.environ, **slurm_cluster.env},
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    submissions = slurm_cluster.submission_count() - before
    # synth, ingest, 4 cohort shards, attrition, features, model, report, export: 11
    # ordinary jobs; the 24 configurations in batches of 12 (group-components in
    # profiles/slurm): 2 more.
    assert submissions - 11 < N_CONFIGS, log[-3000:]
    assert submissions == 11 + int(np.ceil(N_CONFIGS / 12)), log[-3000:]
    laptop = pl.read_parquet(sweep_run / "sweep" / "leaderboard.parquet")
    slurm = pl.read_parquet(workdir / "results" / "demo" / "sweep" / "leaderboard.parquet")
    assert slurm["config_id"].to_list() == laptop["config_id"].to_list()
    for column in ("cv_auroc", "test_auroc", "test_brier", "test_e_avg"):
        assert np.allclose(slurm[column].to_numpy(), laptop[column].to_numpy(), atol=1e-9,
                           rtol=0)


@pytest.mark.e2e
def test_slurm_profile_plans_the_sweep_as_batches(sweep_study: Path, tmp_path: Path) -> None:
    """A dry run (no cluster needed) of the slurm profile: 24 configurations, 2 batches."""
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/slurm",
         "--directory", str(tmp_path), "--config", f"study={sweep_study}", "results=results",
         "--dry-run"],
        cwd=REPO, capture_output=True, text=True, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert log.count("Group job sweep") == int(np.ceil(N_CONFIGS / 12)), log[-3000:]
    assert re.search(r"sweep_config\s+24\b", log)
