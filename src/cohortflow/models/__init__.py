"""Model sweeps: parameter spaces, splits, estimators, training, evaluation, leaderboard.

A study's ``model`` section expands into configurations (:func:`configurations`), each
trained by one Snakemake job (:func:`train`) into ``sweep/<id>/`` (``params.json``,
``metrics.json``, ``predictions.parquet``); :func:`leaderboard` ranks them and picks the
best per outcome by its cross-validated metric.  The workflow's sweep steps are
:func:`train_configuration` (one job per configuration) and :func:`select_models` (the
leaderboard and the chosen model).
"""

from cohortflow.models._estimators import describe, importance, make_estimator
from cohortflow.models._leaderboard import TEST_COLUMNS, best_per, leaderboard
from cohortflow.models._metrics import (
    auroc_ci,
    brier,
    calibration_bins,
    calibration_curve,
    calibration_intercept,
    calibration_slope,
    e_avg,
    evaluate,
    pool_calibration,
    smoothed_observed,
)
from cohortflow.models._space import (
    Configuration,
    config_id,
    configurations,
    derive_seed,
    rerun_digest,
)
from cohortflow.models._splits import cv_folds, stratified_test, time_test
from cohortflow.models._sweep import select_models, train_configuration
from cohortflow.models._train import (
    assign_split,
    feature_names,
    fit_configuration,
    load_matrix,
    select_features,
    train,
)

__all__ = [
    "TEST_COLUMNS",
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
    "pool_calibration",
    "rerun_digest",
    "select_features",
    "select_models",
    "smoothed_observed",
    "stratified_test",
    "time_test",
    "train",
    "train_configuration",
]
