"""The leaderboard: one row per configuration; the best per outcome chosen by CV alone."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

TEST_COLUMNS = ("auroc", "auroc_ci_low", "auroc_ci_high", "auprc", "brier", "scaled_brier",
                "calibration_intercept", "calibration_slope", "e_avg")
LOWER_IS_BETTER = {"brier"}


def leaderboard(metrics: list[dict[str, Any]], select_by: str) -> pl.DataFrame:
    """The table of every configuration's CV and test metrics, best first per outcome.

    ``best`` marks, per outcome, the configuration with the best mean CV ``select_by``
    (ties: the smaller id); test metrics are shown, never used to choose.

    >>> rows = [{"config_id": c, "outcome": "o", "cohort": "cohort", "feature_set": "all",
    ...          "family": "logistic", "hyperparameters": {"C": cv}, "replicate": 0,
    ...          "seed": 1, "model": "m", "n_features": 3,
    ...          "cv": {"auroc": cv, "auprc": 0.5, "brier": 0.2},
    ...          "test": {k: t for k in TEST_COLUMNS}} for c, cv, t in
    ...         [("a", 0.70, 0.90), ("b", 0.75, 0.60)]]
    >>> leaderboard(rows, "auroc").select("config_id", "best", "test_auroc").rows()
    [('b', True, 0.6), ('a', False, 0.9)]
    """
    table = pl.DataFrame([{
        "config_id": m["config_id"], "outcome": m["outcome"], "cohort": m["cohort"],
        "feature_set": m["feature_set"], "family": m["family"], "model": m["model"],
        "hyperparameters": json.dumps(m["hyperparameters"], sort_keys=True),
        "replicate": m["replicate"], "seed": m["seed"], "n_features": m["n_features"],
        **{f"cv_{k}": float(m["cv"][k]) for k in ("auroc", "auprc", "brier")},
        **{f"test_{k}": float(m["test"][k]) for k in TEST_COLUMNS},
    } for m in metrics])
    key = pl.col(f"cv_{select_by}")
    score = -key if select_by in LOWER_IS_BETTER else key
    table = table.with_columns(score.alias("_score")).sort(
        ["outcome", "_score", "config_id"], descending=[False, True, False])
    return table.with_columns(
        (pl.int_range(pl.len()).over("outcome") == 0).alias("best"),
        (pl.int_range(1, pl.len() + 1).over("outcome")).cast(pl.Int32).alias("rank"),
    ).drop("_score")


def best_per(table: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """The first (best-by-CV) row of every group of a leaderboard, e.g. per family.

    >>> t = pl.DataFrame({"outcome": ["o", "o", "o"], "family": ["a", "b", "a"],
    ...                   "config_id": ["1", "2", "3"]})
    >>> best_per(t, ["outcome", "family"])["config_id"].to_list()
    ['1', '2']
    """
    return table.group_by(by, maintain_order=True).first()
