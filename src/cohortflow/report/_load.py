"""Reading what the report shows: the chosen model's files, the generator's oracle, and the
sweep's (feature tensor, cohort labels, code descriptions, leaderboard, best models).
Person-level inputs are read here and leave only as the gated tables and figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cohortflow import cohorts, events, features, layout, models


@dataclass(frozen=True)
class SweepInputs:
    """The sweep's files the report reads (Table 1, leaderboard, best models) and where its
    figures go (``figures/roc.png``, ``figures/calibration.png``)."""

    features: Path
    store: Path
    cohort: Path
    leaderboard: Path
    folder: Path
    roc: Path
    calibration: Path


@dataclass(frozen=True)
class Tensor:
    """The feature tensor as Table 1 reads it: values (subject × feature) and each feature's
    code, window and aggregation."""

    values: np.ndarray
    code: list[str]
    window: list[str]
    aggregation: list[str]


@dataclass(frozen=True)
class SweepResults:
    """What the sweep sections show, read: the tensor and labels behind Table 1, the
    leaderboard, the best configuration of each family (metrics and predictions, the
    overall best first), code descriptions."""

    tensor: Tensor
    label: np.ndarray
    board: pl.DataFrame
    best: dict[str, tuple[dict[str, Any], pl.DataFrame]]
    descriptions: dict[str, str]


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
    """The feature tensor, read whole (Table 1 counts every column)."""
    ds = features.open_features(Path(path))
    values = np.asarray(ds["values"].data.compute(scheduler="synchronous"), dtype=np.float64)
    return Tensor(values, [str(c) for c in ds["code"].values],
                  [str(w) for w in ds["window"].values],
                  [str(a) for a in ds["aggregation"].values])


def best_models(board: pl.DataFrame, folder: Path
                ) -> dict[str, tuple[dict[str, Any], pl.DataFrame]]:
    """The best configuration of each model family for the leaderboard's first outcome,
    best first: ``"<family> (<id>)"`` -> its metrics and predictions."""
    first_outcome = board["outcome"][0]
    picks = models.best_per(board.filter(pl.col("outcome") == first_outcome),
                            ["outcome", "family"]).sort("rank")
    best = {}
    for row in picks.iter_rows(named=True):
        config = row["config_id"]
        best[f"{row['family']} ({config})"] = (
            read_json(layout.config_file(folder, config, "metrics")),
            pl.read_parquet(layout.config_file(folder, config, "predictions")))
    return best


def sweep_results(sweep: SweepInputs) -> SweepResults:
    """Read what the sweep sections need."""
    cohort = cohorts.read_cohort(Path(sweep.cohort), events.list_shards(Path(sweep.store)))
    board = pl.read_parquet(sweep.leaderboard)
    return SweepResults(tensor(sweep.features), cohort["label"].to_numpy(), board,
                        best_models(board, sweep.folder), descriptions(sweep.store))
