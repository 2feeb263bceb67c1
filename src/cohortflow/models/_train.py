"""Training one configuration: lazy loading, split, CV, refit, evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import xarray as xr
from sklearn.metrics import average_precision_score
from threadpoolctl import threadpool_limits

from cohortflow import events, features
from cohortflow.errors import StoreError
from cohortflow.models import _estimators, _metrics, _splits
from cohortflow.models._space import Configuration
from cohortflow.study import Study

TOP_FEATURES = 20
DENSE_MATRIX_BYTES = 1 << 30
"""The largest training matrix (rows x selected features x 8 bytes) read densely from a
sparse store: below it a sparse store gives the very matrix a dense store gives (so a
study's models do not depend on its store's layout); above it the matrix stays sparse
(CSR) and the sparse estimators fit it.  A dense store is always read densely."""


def feature_names(ds: xr.Dataset) -> list[str]:
    """Readable names of the tensor's features: ``code window aggregation``."""
    return [f"{c} {w} {a}" for c, w, a in zip(ds["code"].values, ds["window"].values,
                                                ds["aggregation"].values, strict=True)]


def select_features(code: np.ndarray, window: np.ndarray, aggregation: np.ndarray,
                    selection: dict[str, list[str]]) -> np.ndarray:
    """Positions of the features a feature set keeps (empty lists keep everything).

    >>> select_features(np.array(["CONDITION//1", "DRUG//2", "MEDS_BIRTH"]),
    ...                 np.array(["30d", "30d", "all"]), np.array(["count", "count", "age"]),
    ...                 {"domains": ["CONDITION", "MEDS_BIRTH"], "windows": [],
    ...                  "aggregations": []}).tolist()
    [0, 2]
    """
    domain = [str(c).split("//")[0] for c in code]
    keep = np.ones(len(code), dtype=bool)
    for values, wanted in ((domain, selection.get("domains")),
                           (window, selection.get("windows")),
                           (aggregation, selection.get("aggregations"))):
        if wanted:
            keep &= np.array([str(v) in wanted for v in values], dtype=bool)
    return np.flatnonzero(keep)


def _kept(ds: xr.Dataset, features_path: Path, selection: dict[str, list[str]]
          ) -> np.ndarray:
    keep = select_features(ds["code"].values, ds["window"].values, ds["aggregation"].values,
                           selection)
    if len(keep) == 0:
        raise StoreError(
            f"{features_path}: the feature set {selection} keeps no feature of the tensor; "
            "fix: name windows, aggregations and domains the features step builds")
    return keep


def load_matrix(features_path: Path, selection: dict[str, list[str]],
                rows: np.ndarray | None = None, csr_dtype: Any = np.float64
                ) -> tuple[np.ndarray | sp.csr_matrix, list[str], np.ndarray]:
    """The selected feature columns, read lazily (xarray over Dask: only what is needed),
    with their names and the tensor's subject ids; ``rows``: only those tensor rows, in
    that order (None: every row).

    A dense store, and a sparse store whose selected matrix fits
    :data:`DENSE_MATRIX_BYTES`, give a dense float64 matrix (NaN where a value is
    missing), the same from either layout; a wider sparse store gives a float64
    ``csr_matrix`` of its stored cells, read one shard at a time (a cell not stored is 0,
    missing in the columns :func:`missing_columns` names); ``csr_dtype`` float32 keeps
    it as the store holds it (a third smaller; the sparse estimators give the same model
    from either: :func:`~cohortflow.models._estimators.with_presence` writes float64 and
    trees split float32)."""
    ds = features.open_features(features_path)
    keep = _kept(ds, features_path, selection)
    every = feature_names(ds)  # once: per kept feature it was quadratic in the width
    names = [every[i] for i in keep]
    subjects = ds["subject"].values
    if ds.attrs.get("layout") == "sparse":
        picked = np.arange(ds.sizes["subject"]) if rows is None else np.asarray(rows)
        matrix = features.read_matrix(features_path, picked, keep)
        if len(picked) * len(keep) * 8 <= DENSE_MATRIX_BYTES:
            fill = features.fill_values(features_path)[keep]
            return features.to_dense(matrix, fill, np.float64), names, subjects[picked]
        return matrix.astype(csr_dtype, copy=False), names, subjects[picked]
    chosen = ds["values"].isel(feature=keep)
    x = np.asarray(chosen.data.compute(scheduler="synchronous"), dtype=np.float64)
    if rows is not None:
        x, subjects = x[rows], subjects[rows]
    return x, names, subjects


def missing_columns(features_path: Path, selection: dict[str, list[str]]) -> np.ndarray:
    """Positions, among a feature set's columns, of the features whose empty cells are
    missing (NaN-filled: value aggregations), not 0."""
    ds = features.open_features(features_path)
    keep = _kept(ds, features_path, selection)
    return np.flatnonzero(np.isnan(features.fill_values(features_path)[keep]))


def _sparse_missing(x: np.ndarray | sp.csr_matrix, config: Configuration,
                    features_path: Path) -> np.ndarray | None:
    """For a sparse matrix, its missing columns (after refusing a dense-only family)."""
    if not sp.issparse(x):
        return None
    if config.family in _estimators.DENSE_ONLY:
        raise StoreError(
            f"{features_path}: configuration {config.id} ({config.family}) would read "
            f"{x.shape[0]} rows x {x.shape[1]} features, more than "
            f"{DENSE_MATRIX_BYTES >> 20} MiB dense, from a sparse feature store, and "
            f"{config.family} (scikit-learn's HistGradientBoosting) takes dense input only; "
            "fix: drop gradient_boosting from model.sweep.families, or give it a "
            "model.sweep.feature_sets entry that keeps fewer features (windows, "
            "aggregations, domains)")
    return missing_columns(features_path, config.selection)


LABEL_COLUMNS = ("subject_id", "index_time", "label", "row")
"""What the models read of an analysis's ``labels.parquet``."""


def cohort_frame(store: Path, labels: Path, features_path: Path) -> pl.DataFrame:
    """An analysis's rows (subject, index time, label, tensor ``row``) in the labels'
    order, with the event store's MEDS split joined by subject.

    Every row must point at the tensor row of the same episode (same subject and index
    time): labels and tensor built from different cohort tables are refused.
    """
    table = pl.read_parquet(labels)
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise StoreError(f"{labels}: no column {', '.join(missing)}; fix: rerun the labels "
                         "step (snakemake reruns it when its inputs change)")
    ds = features.open_features(features_path)
    rows = table["row"].to_numpy()
    n = ds.sizes["subject"]
    inside = bool(((rows >= 0) & (rows < n)).all())
    if not inside or not (
            np.array_equal(ds["subject"].values[rows], table["subject_id"].to_numpy())
            and np.array_equal(ds["index_time"].values[rows], table["index_time"].to_numpy())):
        raise StoreError(
            f"{labels}: the label rows do not match the rows of the feature tensor "
            f"{features_path} ({n} rows); fix: rerun the features and labels steps "
            "(snakemake reruns them when their inputs change)")
    matched = ["match_set"] if "match_set" in table.columns else []  # a matched analysis
    return table.select(*LABEL_COLUMNS, *matched).join(
        events.read_splits(store), on="subject_id", how="left", maintain_order="left")


def assign_split(study: Study, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Test membership and CV folds of every cohort row, by the study's ``model.split``.

    ``frame`` holds the analysis's rows (labels order): ``subject_id``, ``index_time``,
    ``label`` and the event store's ``split``.  Returns ``is_test`` (bool per row) and the
    fold of each row (``0 .. cv_folds - 1``, ``-1`` for a test row).  The test rows are a
    ``stratified`` draw of ``test_fraction`` of each label (seeded by the study), the rows
    indexed on or after ``test_from`` (``time``), or the ``held_out`` subjects (``meds``);
    folds are stratified by label over the rest.

    Persons, not rows, are drawn: a person with several episodes (a target without
    ``first_only``) is tested, or put in one fold, with all of them, and counts in the
    strata as a person with the outcome if any episode has it.  With one row per person
    this is the same draw as by row.  Only the ``time`` split may put one person's earlier
    episodes in train and later ones in test: it splits by index date by design.

    The rows of a matched analysis (a ``match_set`` column) are drawn by matched unit
    instead (:func:`~cohortflow.models._splits.matched_units`: each case with its controls,
    and any set sharing a person with them), so a set is never split by the
    ``stratified`` draw or the folds; the ``time`` and ``meds`` splits follow the index
    date and the store's subject split as ever and may split a set.
    """
    spec = study.model.split
    ids = frame["subject_id"].to_numpy()
    if "match_set" in frame.columns:
        ids = _splits.matched_units(ids, frame["match_set"].to_numpy())
    y = frame["label"].to_numpy().astype(np.int8)
    persons, person_of = np.unique(ids, return_inverse=True)
    person_y = np.zeros(len(persons), dtype=np.int8)
    np.maximum.at(person_y, person_of, y)
    if spec.method == "stratified":
        is_test = _splits.stratified_test(persons, person_y, spec.test_fraction,
                                          study.seed)[person_of]
    elif spec.method == "time":
        assert spec.test_from is not None
        is_test = _splits.time_test(frame["index_time"].to_numpy(), spec.test_from)
    else:
        is_test = (frame["split"] == "held_out").to_numpy()
    person_train = np.zeros(len(persons), dtype=bool)
    person_train[person_of[~is_test]] = True
    folds = _splits.cv_folds(persons, person_y, ~person_train, spec.cv_folds,
                             study.seed)[person_of]
    return is_test, np.where(is_test, -1, folds)


def _check_labels(y: np.ndarray, parts: dict[str, np.ndarray], where: Path) -> None:
    for name, part in parts.items():
        if len(np.unique(y[part])) < 2:
            raise StoreError(
                f"{where}: the {name} has only one label value, so no model can be fit or "
                "evaluated; fix: use more persons, a longer time at risk, or fewer CV folds "
                "(model.split.cv_folds)")


def train(study: Study, config: Configuration, store: Path, labels: Path,
          features_path: Path, threads: int = 1) -> tuple[dict[str, Any], pl.DataFrame]:
    """Fit one configuration of an analysis: CV inside train (selection), refit on all of
    train, evaluate on test.  The rows are the analysis's ``labels`` (one per kept target
    episode), each with its target tensor's row as features.  Returns its metrics and its
    predictions for every row."""
    frame = cohort_frame(Path(store), Path(labels), Path(features_path))
    x, names, _ = load_matrix(Path(features_path), config.selection, frame["row"].to_numpy(),
                              csr_dtype=np.float32)
    missing = _sparse_missing(x, config, Path(features_path))
    y = frame["label"].to_numpy().astype(np.int8)
    is_test, folds = assign_split(study, frame)
    k = study.model.split.cv_folds
    _check_labels(y, {"train split": ~is_test, "test split": is_test,
                      **{f"CV fold {f}": folds == f for f in range(k)}}, Path(labels))
    out_of_fold = np.full(len(y), np.nan)
    fold_metrics: list[dict[str, float]] = []
    with threadpool_limits(limits=threads):
        for f in range(k):
            fit_rows, held = (folds >= 0) & (folds != f), folds == f
            model = _estimators.fit(
                _estimators.make_estimator(config.family, config.hyperparameters, config.seed,
                                           missing),
                x, y, fit_rows)
            out_of_fold[held] = _estimators.predict(model, x, held)
            fold_metrics.append(_fold_metrics(y[held], out_of_fold[held]))
        model = _final_fit(config, x, y, is_test, missing)
        prediction = _estimators.predict(model, x)
        weight = _estimators.importance(model, x[~is_test], y[~is_test], config.seed)
    top = np.argsort(-weight, kind="stable")[:TOP_FEATURES]
    metrics = {
        "config_id": config.id,
        "model": _estimators.describe(config.family, config.hyperparameters),
        **{k_: v for k_, v in config.params().items() if k_ != "id"},
        "split": study.model.split.method,
        "n_train": int((~is_test).sum()),
        "n_test": int(is_test.sum()),
        "n_features": int(x.shape[1]),
        "outcome_rate_test": float(y[is_test].mean()),
        "cv": {"folds": k,
               **{m: float(np.mean([fm[m] for fm in fold_metrics])) for m in fold_metrics[0]},
               "auroc_folds": [fm["auroc"] for fm in fold_metrics]},
        "test": _metrics.evaluate(y[is_test], prediction[is_test]),
        "train": _metrics.evaluate(y[~is_test], prediction[~is_test]),
        # raw bins: pooled below min_cell_count for display by the report
        "calibration": {"test": _metrics.calibration_bins(y[is_test], prediction[is_test])},
        "importance": [{"feature": names[i], "importance": float(weight[i])} for i in top
                       if weight[i] > 0],
    }
    if missing is not None:  # only then: a dense matrix's metrics are as they were
        metrics["input"] = "sparse"
    predictions = frame.select(
        "subject_id", "index_time", "label",
        pl.Series("split", np.where(is_test, "test", "train")),
        pl.Series("fold", folds.astype(np.int8)),
        pl.Series("cv_prediction", out_of_fold),
        pl.Series("prediction", prediction),
    )
    return metrics, predictions


def _final_fit(config: Configuration, x: np.ndarray | sp.csr_matrix, y: np.ndarray,
               is_test: np.ndarray, missing: np.ndarray | None = None) -> Any:
    """The configuration's model: fitted on every train row (the one :func:`train` scores)."""
    return _estimators.fit(
        _estimators.make_estimator(config.family, config.hyperparameters, config.seed,
                                   missing),
        x, y, ~is_test)


def fit_configuration(study: Study, config: Configuration, store: Path, labels: Path,
                      features_path: Path, threads: int = 1
                      ) -> tuple[Any, np.ndarray | sp.csr_matrix, np.ndarray]:
    """Refit one configuration's final model exactly as :func:`train` fits it (same rows,
    split, seed and feature selection; no CV), for a model package.  Returns the fitted
    estimator, the selected feature matrix (one row per row of ``labels``, in its order)
    and each row's test membership."""
    frame = cohort_frame(Path(store), Path(labels), Path(features_path))
    x, _, _ = load_matrix(Path(features_path), config.selection, frame["row"].to_numpy())
    missing = _sparse_missing(x, config, Path(features_path))
    y = frame["label"].to_numpy().astype(np.int8)
    is_test, _ = assign_split(study, frame)
    with threadpool_limits(limits=threads):
        model = _final_fit(config, x, y, is_test, missing)
    return model, x, is_test


def _fold_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    auc, _, _ = _metrics.auroc_ci(y, p)
    score, _ = _metrics.brier(y, p)
    return {"auroc": auc, "auprc": float(average_precision_score(y, p)), "brier": score}
