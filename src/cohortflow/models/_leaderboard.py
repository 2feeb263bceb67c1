"""The leaderboard: one row per configuration; the best per outcome chosen by CV alone.

It is shared (it leaves the compute), so a row's test metrics are left out (null, and
``test_withheld`` says why) when the test split is too small to show them
(:meth:`Disclosure.metrics_shown`, the report's rule); the configuration's own
``metrics.json`` stays inside and keeps them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from cohortflow.disclosure import Disclosure

TEST_COLUMNS = ("auroc", "auroc_ci_low", "auroc_ci_high", "auprc", "brier", "scaled_brier",
                "calibration_intercept", "calibration_slope", "e_avg")
LOWER_IS_BETTER = {"brier"}
WITHHELD = "test_withheld"
"""The leaderboard's column saying why a row's test metrics are null (null: shown)."""


def split_counts(metrics: dict[str, Any]) -> tuple[int, int]:
    """A configuration's test split as ``(persons, persons with the outcome)``, from its
    ``metrics.json`` (``n_test`` and ``outcome_rate_test``).

    >>> split_counts({"n_test": 8, "outcome_rate_test": 0.25})
    (8, 2)
    """
    persons = int(metrics["n_test"])
    return persons, round(float(metrics["outcome_rate_test"]) * persons)


def withheld(metrics: dict[str, Any], disclosure: Disclosure) -> str | None:
    """Why a configuration's test metrics (``metrics.json``) may not leave the compute, or
    None when they may: the one rule of :meth:`Disclosure.metrics_shown` on its test split.

    >>> from cohortflow.disclosure import Disclosure
    >>> from cohortflow.layout import Layout
    >>> gate = Disclosure(Layout.of("results", "s"), 11)
    >>> withheld({"n_test": 8, "outcome_rate_test": 0.25}, gate)
    'test split: fewer than 11 persons with or without the outcome'
    >>> withheld({"n_test": 200, "outcome_rate_test": 0.25}, gate) is None
    True
    """
    if disclosure.metrics_shown(*split_counts(metrics)):
        return None
    return (f"test split: fewer than {disclosure.min_cell_count} persons with or without "
            "the outcome")


def leaderboard(metrics: list[dict[str, Any]], select_by: str,
                disclosure: Disclosure | None = None) -> pl.DataFrame:
    """The table of every configuration's CV and test metrics, best first per outcome.

    ``best`` marks, per outcome, the configuration with the best mean CV ``select_by``
    (ties: the smaller id); test metrics are shown, never used to choose.  With a
    ``disclosure`` (the table is to be shared), a row whose test split it may not show
    (:func:`withheld`) has null test metrics and the reason in :data:`WITHHELD`; the
    ranking is the same.

    >>> rows = [{"config_id": c, "outcome": "o", "cohort": "cohort", "feature_set": "all",
    ...          "family": "logistic", "hyperparameters": {"C": cv}, "replicate": 0,
    ...          "seed": 1, "model": "m", "n_features": 3,
    ...          "cv": {"auroc": cv, "auprc": 0.5, "brier": 0.2},
    ...          "test": {k: t for k in TEST_COLUMNS}} for c, cv, t in
    ...         [("a", 0.70, 0.90), ("b", 0.75, 0.60)]]
    >>> leaderboard(rows, "auroc").select("config_id", "best", "test_auroc").rows()
    [('b', True, 0.6), ('a', False, 0.9)]
    >>> from cohortflow.disclosure import Disclosure
    >>> from cohortflow.layout import Layout
    >>> tiny = [{**r, "n_test": 8, "outcome_rate_test": 0.25} for r in rows]
    >>> board = leaderboard(tiny, "auroc", Disclosure(Layout.of("results", "s"), 11))
    >>> board.select("config_id", "best", "test_auroc", WITHHELD).rows()[0]
    ('b', True, None, 'test split: fewer than 11 persons with or without the outcome')
    """
    why = [None if disclosure is None else withheld(m, disclosure) for m in metrics]
    table = pl.DataFrame([{
        "config_id": m["config_id"], "outcome": m["outcome"], "cohort": m["cohort"],
        "feature_set": m["feature_set"], "family": m["family"], "model": m["model"],
        "hyperparameters": json.dumps(m["hyperparameters"], sort_keys=True),
        "replicate": m["replicate"], "seed": m["seed"], "n_features": m["n_features"],
        **{f"cv_{k}": float(m["cv"][k]) for k in ("auroc", "auprc", "brier")},
        **{f"test_{k}": None if reason else float(m["test"][k]) for k in TEST_COLUMNS},
        WITHHELD: reason,
    } for m, reason in zip(metrics, why, strict=True)],
        schema_overrides={f"test_{k}": pl.Float64 for k in TEST_COLUMNS} | {WITHHELD: pl.String})
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
