"""The sweep's two workflow steps: one configuration fitted into its files, and per
analysis the leaderboard of its configurations with the chosen model."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from cohortflow import events
from cohortflow.disclosure import Disclosure
from cohortflow.errors import StoreError
from cohortflow.models._leaderboard import leaderboard
from cohortflow.models._space import Configuration
from cohortflow.models._train import train
from cohortflow.study import Study


def train_configuration(study: Study, config: Configuration, store: Path, labels: Path,
                        tensor: Path, *, params_out: Path, metrics_out: Path,
                        predictions_out: Path, threads: int = 1) -> None:
    """The sweep step of one configuration: fit and evaluate it (:func:`train`) on its
    analysis's ``labels`` and its target's feature ``tensor``, and write its parameters,
    predictions and metrics, each atomically, metrics last (the rule's outputs are trusted
    only once all three exist)."""
    metrics, predictions = train(study, config, Path(store), Path(labels), Path(tensor),
                                 threads=threads)
    events.write_json(config.params(), Path(params_out))
    events.write_parquet(predictions.to_arrow(), Path(predictions_out))
    events.write_json(metrics, Path(metrics_out))


def select_models(study: Study, disclosure: Disclosure, metric_files: list[Path],
                  prediction_files: list[Path], leaderboard_out: Path, metrics_out: Path,
                  predictions_out: Path) -> None:
    """The model step of one analysis: the leaderboard of its configurations
    (``metric_files`` and ``prediction_files`` list their files in the same order), shared,
    so written through the disclosure gate to ``leaderboard_out`` without the test metrics
    of a test split too small to show, and a copy of the best
    by cross-validation (``model.select_by``) as ``metrics_out`` and ``predictions_out``."""
    if not metric_files or len(prediction_files) != len(metric_files):
        raise ValueError(f"select_models: {len(metric_files)} metrics files and "
                         f"{len(prediction_files)} predictions files; give one of each per "
                         "configuration, at least one")
    all_metrics = [json.loads(Path(f).read_text()) for f in metric_files]
    analyses = sorted({str(m.get("analysis")) for m in all_metrics})
    if len(analyses) != 1:
        raise StoreError(
            f"{metric_files[0]}: the model step chooses within one analysis, but these "
            f"configurations belong to {', '.join(analyses)}; fix: rerun the sweep "
            "(configurations written before analyses existed have none)")
    table = leaderboard(all_metrics, study.model.select_by, disclosure)
    disclosure.write_parquet(Path(leaderboard_out), table.to_arrow())
    best = table.filter(pl.col("best"))["config_id"][0]
    chosen = [m["config_id"] for m in all_metrics].index(best)
    events.write_parquet(pl.read_parquet(prediction_files[chosen]).to_arrow(),
                         Path(predictions_out))
    events.write_json(all_metrics[chosen], Path(metrics_out))
