"""Reading what the report shows, one analysis at a time: its attrition, labels, chosen
model, leaderboard and best configurations, the target's feature tensor behind Table 1, the
store's code descriptions and the generator's oracle.  Every path comes from the study's
:class:`~cohortflow.layout.Layout`.  Person-level inputs are read here and leave only as the
gated tables and figures."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from cohortflow import events, features, models
from cohortflow.errors import CohortflowError
from cohortflow.layout import Layout
from cohortflow.study import Analysis

if TYPE_CHECKING:
    from cohortflow.models import Configuration


@dataclass(frozen=True)
class Tensor:
    """The feature tensor as Table 1 reads it: values (episode × feature) and each feature's
    code, window and aggregation."""

    values: Any
    """A dense array, or for a sparse store its stored cells as a ``csr_matrix``."""
    code: list[str]
    window: list[str]
    aggregation: list[str]
    fill: np.ndarray | None = None
    """A sparse ``values``' fill per column (0, or NaN where an empty cell is missing)."""

    def rows(self, rows: np.ndarray) -> Tensor:
        """The tensor's rows ``rows`` (an analysis's kept episodes, by tensor row)."""
        return Tensor(self.values[rows], self.code, self.window, self.aggregation, self.fill)


@dataclass(frozen=True)
class SweepResults:
    """What an analysis's sweep sections show, read: the tensor rows and labels behind
    Table 1, the leaderboard, the best configuration of each family (metrics and
    predictions, the overall best first), code descriptions, and each labelled episode's
    person (``subject``; None: every episode its own person)."""

    tensor: Tensor
    label: np.ndarray
    board: pl.DataFrame
    best: dict[str, tuple[dict[str, Any], pl.DataFrame]]
    descriptions: dict[str, str]
    subject: np.ndarray | None = None


@dataclass(frozen=True)
class AnalysisResults:
    """Everything the report shows of one analysis: its attrition (target steps, then the
    label exclusions), its chosen model's metrics and predictions, and its sweep."""

    analysis: Analysis
    attrition: list[dict[str, Any]]
    metrics: dict[str, Any]
    predictions: pl.DataFrame
    sweep: SweepResults
    matching: dict[str, Any] | None = None
    """A matched analysis's matching record (``matching.json``: settings, exact counts,
    balance), or None."""


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def oracle(folders: list[Path] | None) -> dict[str, Any] | None:
    """The generator's oracle record (``oracle.json``) of a synthetic study, or None."""
    files = [Path(d) / "oracle.json" for d in folders or ()]
    return next((read_json(f) for f in files if f.is_file()), None)


def descriptions(store: Path) -> dict[str, str]:
    """Each code of the store with its description ("" when it has none)."""
    codes = events.read_codes(Path(store))
    return dict(zip(codes["code"].to_list(), codes["description"].fill_null("").to_list(),
                    strict=True))


def tensor(path: Path) -> Tensor:
    """The feature tensor, read whole (Table 1 counts every column); a sparse store's as
    its stored cells (never densified)."""
    ds = features.open_features(Path(path))
    names = ([str(c) for c in ds["code"].values], [str(w) for w in ds["window"].values],
             [str(a) for a in ds["aggregation"].values])
    if ds.attrs.get("layout") == "sparse":
        return Tensor(features.read_matrix(Path(path)).astype(np.float64), *names,
                      features.fill_values(Path(path)))
    values = np.asarray(ds["values"].data.compute(scheduler="synchronous"), dtype=np.float64)
    return Tensor(values, *names)


def labels(path: Path, tensor_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An analysis's labels file as (tensor row, label, subject_id) arrays, one per episode;
    a row outside the target's tensor is refused (the labels and the tensor come from
    different runs)."""
    frame = pl.read_parquet(path, columns=["row", "label", "subject_id"])
    rows = frame["row"].to_numpy().astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= tensor_rows):
        raise CohortflowError(
            f"{path}: tensor row {int(rows.max())} is outside the target's feature tensor "
            f"({tensor_rows} rows); fix: rerun the labels and features steps of this study "
            "so both come from the same cohort")
    return rows, frame["label"].cast(pl.Int8).to_numpy(), frame["subject_id"].to_numpy()


def best_models(board: pl.DataFrame, analysis: str, layout: Layout,
                configs: Mapping[str, Configuration]
                ) -> dict[str, tuple[dict[str, Any], pl.DataFrame]]:
    """The best configuration of each model family of one analysis's leaderboard, best
    first: ``"<family> (<id>)"`` -> its metrics and predictions (``sweep/<id>/``).

    Every configuration on the board must be one of ``configs`` of this analysis: a
    leaderboard left from an earlier sweep is refused, naming the configuration."""
    for config_id in board["config_id"].to_list():
        config = configs.get(config_id)
        if config is None or config.analysis != analysis:
            raise CohortflowError(
                f"{layout.leaderboard(analysis)}: configuration {config_id} is not one of "
                f"the study's sweep for analysis {analysis!r}; fix: rerun the model step "
                "(snakemake --forcerun model)")
    picks = models.best_per(board.sort("rank", "config_id"), ["family"])
    best = {}
    for row in picks.iter_rows(named=True):
        config = row["config_id"]
        best[f"{row['family']} ({config})"] = (
            read_json(layout.config_file(config, "metrics")),
            pl.read_parquet(layout.config_file(config, "predictions")))
    return best


def analysis_results(layout: Layout, analysis: Analysis, target: Tensor,
                     configs: Mapping[str, Configuration],
                     codes: dict[str, str]) -> AnalysisResults:
    """Read one analysis's files; ``target`` is its target's feature tensor (read once for
    every analysis of the target), ``codes`` the store's code descriptions."""
    matched = analysis.matching is not None  # its models and Table 1: the matched set
    rows, label, subject = labels(layout.model_rows(analysis.id, matched),
                                  target.values.shape[0])
    board = pl.read_parquet(layout.leaderboard(analysis.id))
    sweep = SweepResults(target.rows(rows), label, board,
                         best_models(board, analysis.id, layout, configs), codes, subject)
    return AnalysisResults(analysis, read_json(layout.attrition(analysis.id)),
                           read_json(layout.model_metrics(analysis.id)),
                           pl.read_parquet(layout.model_predictions(analysis.id)), sweep,
                           read_json(layout.matching(analysis.id)) if matched else None)
