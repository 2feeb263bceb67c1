"""The sweep's two workflow steps: one configuration fitted into its files, and the
leaderboard of them all with the chosen model."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from cohortflow import events
from cohortflow.disclosure import Disclosure
from cohortflow.models._leaderboard import leaderboard
from cohortflow.models._space import Configuration
from cohortflow.models._train import train
from cohortflow.study import Study


def train_configuration(study: Study, config: Configuration, store: Path, cohort_dir: Path,
                        features_path: Path, *, params_out: Path, metrics_out: Path,
                        predictions_out: Path, threads: int = 1) -> None:
    """The sweep step of one configuration: fit and evaluate it (:func:`train`) and write
    its parameters, predictions and metrics, each atomically, metrics last (the rule's
    outputs are trusted only once all three exist)."""
    metrics, predictions = train(study, config, Path(store), Path(cohort_dir),
                                 Path(features_path), threads=threads)
    events.write_json(config.params(), Path(params_out))
    events.write_parquet(predictions.to_arrow(), Path(predictions_out))
    events.write_json(metrics, Path(metrics_out))


def select_models(study: Study, disclosure: Disclosure, metric_files: list[Path],
                  prediction_files: list[Path], metrics_out: Path, predictions_out: Path
                  ) -> None:
    """The model step: the leaderboard of every configuration (``metric_files`` and
    ``prediction_files`` list their files in the same order), shared, so written through
    the disclosure gate, and a copy of the best (by CV) of the study's first outcome as
    ``metrics_out`` and ``predictions_out``."""
    assert len(prediction_files) == len(metric_files), "one predictions file per metrics file"
    all_metrics = [json.loads(Path(f).read_text()) for f in metric_files]
    table = leaderboard(all_metrics, study.model.select_by)
    disclosure.write_parquet(disclosure.layout.leaderboard, table)
    best = table.filter(pl.col("best") & (pl.col("outcome") == all_metrics[0]["outcome"]))
    chosen = [m["config_id"] for m in all_metrics].index(best["config_id"][0])
    events.write_parquet(pl.read_parquet(prediction_files[chosen]).to_arrow(),
                         Path(predictions_out))
    events.write_json(all_metrics[chosen], Path(metrics_out))
