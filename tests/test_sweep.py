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

from cohortflow import disclosure, features, models
from cohortflow.errors import StoreError
from cohortflow.layout import Layout
from cohortflow.study import Study, load_study
from tests.helpers import DEMO_ANALYSIS, REPO, build_labels, run_study, write_study

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
ANALYSIS = DEMO_ANALYSIS


# ---- one analysis's configurations on the shared event store (fast) -------------------------

@pytest.fixture(scope="module")
def analysis_inputs(event_store: Path, tmp_path_factory: pytest.TempPathFactory
                    ) -> tuple[Study, Layout]:
    """The demo study's cohorts, labels and target tensor on the shared event store, in a
    results tree, as the workflow's steps build them."""
    results = tmp_path_factory.mktemp("analysis") / "results" / "demo"
    study_path = write_study(results.parent.parent / "study.yaml", model={"sweep": {
        "families": [{"family": "logistic", "penalty": ["l1", "l2"], "C": [0.1]}]}})
    study, _ = build_labels(study_path, event_store, results)
    layout = Layout(results)
    features.build_store(study, "cohort", event_store, layout.cohort("cohort"),
                         layout.tensor("cohort"), scheduler="synchronous")
    layout.store.symlink_to(event_store, target_is_directory=True)  # read only
    return study, layout


def _train(study: Study, layout: Layout, config: models.Configuration, labels: Path,
           out: Path) -> tuple[dict, pl.DataFrame]:
    models.train_configuration(study, config, layout.store, labels, layout.tensor("cohort"),
                               params_out=out / "params.json", metrics_out=out / "metrics.json",
                               predictions_out=out / "predictions.parquet")
    return (json.loads((out / "metrics.json").read_text()),
            pl.read_parquet(out / "predictions.parquet"))


def test_a_configuration_trains_on_its_labels_with_their_tensor_rows(
        analysis_inputs: tuple[Study, Layout], tmp_path: Path) -> None:
    study, layout = analysis_inputs
    config = next(iter(models.configurations(study).values()))
    labels = pl.read_parquet(layout.labels(ANALYSIS))
    metrics, predictions = _train(study, layout, config, layout.labels(ANALYSIS), tmp_path)
    assert (metrics["analysis"], metrics["time_at_risk"]) == (ANALYSIS, "tar")
    assert metrics["n_train"] + metrics["n_test"] == labels.height == predictions.height
    assert predictions.columns == ["subject_id", "index_time", "label", "split", "fold",
                                   "cv_prediction", "prediction"]
    assert predictions.select("subject_id", "index_time", "label").equals(
        labels.select("subject_id", "index_time", "label"))
    # The refit reads each label row's features from its tensor row.
    _, x, is_test = models.fit_configuration(study, config, layout.store,
                                             layout.labels(ANALYSIS), layout.tensor("cohort"))
    tensor = features.open_features(layout.tensor("cohort"))["values"].values
    np.testing.assert_array_equal(x, tensor[labels["row"].to_numpy()].astype(np.float64))
    assert is_test.tolist() == (predictions["split"] == "test").to_list()

    # Label exclusions leave tensor rows out: only the labels' rows are modelled.
    kept = labels.filter(pl.col("row") % 5 != 0)
    kept.write_parquet(tmp_path / "kept.parquet")
    _, fewer = _train(study, layout, config, tmp_path / "kept.parquet", tmp_path / "kept")
    assert fewer["subject_id"].to_list() == kept["subject_id"].to_list()


def test_labels_that_point_at_other_tensor_rows_are_refused(
        analysis_inputs: tuple[Study, Layout], tmp_path: Path) -> None:
    study, layout = analysis_inputs
    config = next(iter(models.configurations(study).values()))
    labels = pl.read_parquet(layout.labels(ANALYSIS))
    n = features.open_features(layout.tensor("cohort")).sizes["subject"]
    for name, rows in (("shifted", (pl.col("row") + 1) % n), ("outside", pl.col("row") + n)):
        labels.with_columns(row=rows).write_parquet(tmp_path / f"{name}.parquet")
        with pytest.raises(StoreError, match=rf"{name}\.parquet: the label rows do not match "
                           r"the rows of the feature tensor .*fix: rerun the features and "
                           r"labels steps"):
            _train(study, layout, config, tmp_path / f"{name}.parquet", tmp_path / name)


def test_the_model_step_chooses_within_one_analysis_by_cv_through_the_gate(
        analysis_inputs: tuple[Study, Layout], tmp_path: Path) -> None:
    study, layout = analysis_inputs
    configs = models.configurations(study)
    assert len(configs) == 2
    for cid, config in configs.items():
        models.train_configuration(
            study, config, layout.store, layout.labels(ANALYSIS), layout.tensor("cohort"),
            params_out=layout.config_file(cid, "params"),
            metrics_out=layout.config_file(cid, "metrics"),
            predictions_out=layout.config_file(cid, "predictions"))
    metric_files = [layout.config_file(c, "metrics") for c in configs]
    prediction_files = [layout.config_file(c, "predictions") for c in configs]
    gate = disclosure.Disclosure(layout, study.min_cell_count)
    models.select_models(study, gate, metric_files, prediction_files,
                         layout.leaderboard(ANALYSIS), layout.model_metrics(ANALYSIS),
                         layout.model_predictions(ANALYSIS))
    board = pl.read_parquet(layout.leaderboard(ANALYSIS))
    best = board.filter("best").row(0, named=True)
    assert board.height == 2 and best["cv_auroc"] == board["cv_auroc"].max()
    assert not disclosure.audit(layout)  # the leaderboard came through the gate
    assert layout.model_metrics(ANALYSIS).read_bytes() == layout.config_file(
        best["config_id"], "metrics").read_bytes()
    assert pl.read_parquet(layout.model_predictions(ANALYSIS)).equals(
        pl.read_parquet(layout.config_file(best["config_id"], "predictions")))

    other = json.loads(metric_files[1].read_text()) | {"analysis": "cohort__other__tar"}
    (tmp_path / "metrics.json").write_text(json.dumps(other))
    with pytest.raises(StoreError, match=r"chooses within one analysis, but these "
                       r"configurations belong to cohort__asthma_exacerbation__tar, "
                       r"cohort__other__tar"):
        models.select_models(study, gate, [metric_files[0], tmp_path / "metrics.json"],
                             prediction_files, tmp_path / "board.parquet",
                             tmp_path / "m.json", tmp_path / "p.parquet")


# ---- the sweep of a whole study (e2e) -------------------------------------------------------

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
        assert (metrics["analysis"], metrics["time_at_risk"]) == (ANALYSIS, "tar")
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
    layout = Layout(sweep_run)
    board = pl.read_parquet(layout.leaderboard(ANALYSIS))
    assert board.height == N_CONFIGS and board["best"].sum() == 1
    best = board.filter("best").row(0, named=True)
    assert best["cv_auroc"] == board["cv_auroc"].max()
    assert board["rank"].to_list() == list(range(1, N_CONFIGS + 1))
    chosen = json.loads(layout.model_metrics(ANALYSIS).read_text())
    assert chosen["config_id"] == best["config_id"]
    assert (chosen["analysis"], chosen["time_at_risk"]) == (ANALYSIS, "tar")
    assert chosen["test"]["auroc"] == pytest.approx(best["test_auroc"], abs=1e-12)
    record = json.loads(layout.manifest.read_text())
    assert "sweep" in record["outputs"] and record["metrics"] == {ANALYSIS: chosen["test"]}


@pytest.mark.e2e
def test_a_configuration_trains_to_the_same_bytes_again(sweep_study: Path, sweep_run: Path,
                                                        tmp_path: Path) -> None:
    study = load_study(sweep_study)
    config = next(c for c in models.configurations(study).values()
                  if c.family == "gradient_boosting")
    layout = Layout(sweep_run)
    models.train_configuration(study, config, layout.store, layout.labels(config.analysis),
                               layout.tensor(config.cohort),
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
    assert Layout(sweep_run).figure(ANALYSIS, "roc").read_bytes()[:4] == b"\x89PNG"


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
    board = pl.read_parquet(Layout(results).leaderboard(ANALYSIS))
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
    # synth, ingest, the 4 shards of the target cohort and the 4 of the outcome's (one
    # batch), labels, features: 5 submissions (attrition, and the model, export and report
    # of a study this small, are local rules); the 24 configurations in batches of 12
    # (group-components in profiles/slurm): 2 more.
    assert submissions - 5 < N_CONFIGS, log[-3000:]
    assert submissions == 5 + int(np.ceil(N_CONFIGS / 12)), log[-3000:]
    laptop = pl.read_parquet(Layout(sweep_run).leaderboard(ANALYSIS))
    slurm = pl.read_parquet(Layout(workdir / "results" / "demo").leaderboard(ANALYSIS))
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
