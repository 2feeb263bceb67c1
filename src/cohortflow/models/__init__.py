"""Model sweeps: parameter spaces, splits, estimators, training, evaluation, leaderboard.

A study's ``model`` section expands into configurations (:func:`configurations`), one set
per analysis (target × outcome × time at risk), each trained by one Snakemake job
(:func:`train`) into ``sweep/<id>/`` (``params.json``, ``metrics.json``,
``predictions.parquet``) on its analysis's labels (rows) and its target's feature tensor
(the row's features); :func:`leaderboard` ranks an analysis's configurations and picks the
best by its cross-validated metric.  The workflow's sweep steps are
:func:`train_configuration` (one job per configuration) and :func:`select_models` (one per
analysis: its leaderboard and its chosen model).

Only the sweep space (:mod:`._space`: configurations, ids, seeds, rerun digests) is imported
with the package: the workflow needs it to plan the DAG, and every Snakemake process (each
SLURM job re-parses the workflow) pays for what a parse imports.  The training, metric and
leaderboard code (scikit-learn, SciPy, xarray) loads on first use of one of its names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cohortflow.models._space import (
    Configuration,
    config_id,
    configurations,
    derive_seed,
    rerun_digest,
)

if TYPE_CHECKING:
    from cohortflow.models._estimators import describe, importance, make_estimator
    from cohortflow.models._leaderboard import (
        TEST_COLUMNS,
        WITHHELD,
        best_per,
        leaderboard,
        split_counts,
        withheld,
    )
    from cohortflow.models._metrics import (
        auroc_ci,
        brier,
        calibration_bins,
        calibration_curve,
        calibration_intercept,
        calibration_slope,
        delong_difference,
        e_avg,
        evaluate,
        pool_calibration,
        smoothed_observed,
    )
    from cohortflow.models._splits import cv_folds, stratified_test, time_test
    from cohortflow.models._sweep import select_models, train_configuration
    from cohortflow.models._train import (
        LABEL_COLUMNS,
        assign_split,
        feature_names,
        fit_configuration,
        load_matrix,
        missing_columns,
        select_features,
        train,
    )

# Name -> the private module that defines it, imported on first access (PEP 562).
_LAZY = {
    **dict.fromkeys(["describe", "importance", "make_estimator"], "_estimators"),
    **dict.fromkeys(["TEST_COLUMNS", "WITHHELD", "best_per", "leaderboard",
                     "split_counts", "withheld"], "_leaderboard"),
    **dict.fromkeys(["auroc_ci", "brier", "calibration_bins", "calibration_curve",
                     "calibration_intercept", "calibration_slope", "delong_difference",
                     "e_avg", "evaluate",
                     "pool_calibration", "smoothed_observed"], "_metrics"),
    **dict.fromkeys(["cv_folds", "stratified_test", "time_test"], "_splits"),
    **dict.fromkeys(["select_models", "train_configuration"], "_sweep"),
    **dict.fromkeys(["LABEL_COLUMNS", "assign_split", "feature_names", "fit_configuration",
                     "load_matrix", "missing_columns", "select_features", "train"], "_train"),
}


def __getattr__(name: str) -> Any:
    """A training-side name, imported from its module on first use and kept here.

    >>> from cohortflow import models
    >>> models.TEST_COLUMNS is models._leaderboard.TEST_COLUMNS
    True
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "LABEL_COLUMNS",
    "TEST_COLUMNS",
    "WITHHELD",
    "Configuration",
    "assign_split",
    "auroc_ci",
    "best_per",
    "brier",
    "calibration_bins",
    "calibration_curve",
    "calibration_intercept",
    "calibration_slope",
    "config_id",
    "configurations",
    "cv_folds",
    "delong_difference",
    "derive_seed",
    "describe",
    "e_avg",
    "evaluate",
    "feature_names",
    "fit_configuration",
    "importance",
    "leaderboard",
    "load_matrix",
    "make_estimator",
    "missing_columns",
    "pool_calibration",
    "rerun_digest",
    "select_features",
    "select_models",
    "smoothed_observed",
    "split_counts",
    "stratified_test",
    "time_test",
    "train",
    "train_configuration",
    "withheld",
]
