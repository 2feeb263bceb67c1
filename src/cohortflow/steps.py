"""One function per workflow step: read inputs, call the logic, write outputs atomically.

Snakemake rules call exactly one of these, so the ``.smk`` files hold no logic and every
step can also be run (and tested) without Snakemake.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from cohortflow import (
    cohorts,
    compute,
    events,
    features,
    meds,
    models,
    omop,
    privacy,
    report,
    report_sections,
    synth,
)
from cohortflow.study import Study

log = logging.getLogger(__name__)


@contextlib.contextmanager
def logging_to(path: str | Path) -> Iterator[None]:
    """Send cohortflow's log records (and warnings) to a step's log file while it runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Snakemake runs local jobs in threads: keep each job's records in its own log.
    job_thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == job_thread)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(min(previous_level, logging.INFO) if previous_level else logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    except Exception as exc:  # the step's log says why it failed, stack frames included
        log.error("step failed: %s", exc, exc_info=True)
        raise
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def synthesize(study: Study, out: Path) -> None:
    """Generate the study's synthetic OMOP CDM (``source.synth``)."""
    assert study.source.synth is not None
    synth.generate(study.source.synth.persons, study.source.synth.seed, Path(out),
                   progress=False)


def ingest(study: Study, source_path: Path | None, out: Path) -> None:
    """Build the sharded event store from the study's OMOP CDM, or copy the study's MEDS
    dataset into it re-sharded (:mod:`cohortflow.meds` says why a copy).

    ``source_path`` is None for a database source (``source.omop.url``), which has no file
    for Snakemake to track; its password comes from PGPASSWORD or ~/.pgpass.
    """
    if study.source.meds is not None:
        assert source_path is not None, "a MEDS source is a directory"
        meds.ingest(Path(source_path), Path(out), study.shards, dataset_name=study.name,
                    min_cell_count=study.min_cell_count)
        return
    fmt = schema = None
    location: str | Path | None = source_path
    if study.source.omop is not None:
        fmt, schema = study.source.omop.format, study.source.omop.schema_name
        if study.source.omop.url is not None:
            location = study.source.omop.url
    assert location is not None, "a file source needs its path"
    summary = omop.ingest(omop.open_source(location, fmt, schema), Path(out),
                          study.shards, dataset_name=study.name,
                          min_cell_count=study.min_cell_count)
    log.info("ingested %s events into %d shards",
             privacy.suppress(summary["events"], study.min_cell_count), study.shards)


def cohort_shard(study: Study, store: Path, shard: str, table: Path, attrition: Path) -> None:
    """The cohort table and attrition counts of one shard."""
    frame, steps = cohorts.build_shard(study, Path(store), shard)
    events.write_parquet(frame.to_arrow(), Path(table))
    events.write_json(steps, Path(attrition))


def merge_attrition(parts: list[Path], out: Path) -> None:
    """Sum per-shard attrition into the cohort's attrition.json."""
    per_shard = [json.loads(Path(p).read_text()) for p in parts]
    events.write_json(cohorts.merge_attrition(per_shard), Path(out))


def build_features(study: Study, store: Path, cohort_dir: Path, out: Path,
                   workers: int | None = None, dask_config: Path | None = None) -> None:
    """The feature tensor of the cohort, computed by Dask workers over the shards."""
    with compute.dask_client(max_workers=workers, dask_config=dask_config,
                             scheduler_dir=Path(out).parent / ".dask"):
        features.build_store(study, Path(store), Path(cohort_dir), Path(out))


def train_configuration(study: Study, config: models.Configuration, store: Path,
                        cohort_dir: Path, features_path: Path, out: Path,
                        threads: int = 1) -> None:
    """Fit and evaluate one sweep configuration into ``out``: params.json, metrics.json,
    predictions.parquet (metrics last, so a half-written directory is never trusted)."""
    out = Path(out)
    metrics, predictions = models.train(study, config, Path(store), Path(cohort_dir),
                                        Path(features_path), threads=threads)
    events.write_json(config.params(), out / "params.json")
    events.write_parquet(predictions.to_arrow(), out / "predictions.parquet")
    events.write_json(metrics, out / "metrics.json")


def select_models(study: Study, metric_files: list[Path], leaderboard_out: Path,
                  metrics_out: Path, predictions_out: Path) -> None:
    """The leaderboard of every configuration, and a copy of the best (by CV) of the
    study's first outcome as ``model/metrics.json`` and ``model/predictions.parquet``."""
    all_metrics = [json.loads(Path(f).read_text()) for f in metric_files]
    table = models.leaderboard(all_metrics, study.model.select_by)
    events.write_parquet(table.to_arrow(), Path(leaderboard_out))
    best = table.filter(pl.col("best") & (pl.col("outcome") == all_metrics[0]["outcome"]))
    chosen = Path(metric_files[[m["config_id"] for m in all_metrics].index(best["config_id"][0])])
    events.write_parquet(pl.read_parquet(chosen.parent / "predictions.parquet").to_arrow(),
                         Path(predictions_out))
    events.write_json(json.loads(chosen.read_text()), Path(metrics_out))


def write_report(study: Study, attrition: Path, metrics: Path, predictions: Path,
                 out: Path, oracle_dirs: list[Path] | None = None,
                 sweep: dict[str, Path] | None = None, quality: Path | None = None) -> None:
    """Render the self-contained HTML report (with the oracle AUROC of a synthetic study).

    ``sweep`` (keys features, store, cohort, leaderboard, sweep_dir, roc, calibration) adds
    Table 1, the leaderboard, the best models' plots (also written as PNG files) and their
    top features; ``quality`` (data_quality.json) the data-quality section."""
    oracle_files = [Path(d) / "oracle.json" for d in oracle_dirs or ()]
    oracle_info = next((json.loads(f.read_text()) for f in oracle_files if f.is_file()), None)
    sections = ""
    if sweep is not None:
        sections, figures = report_sections.render_sections(
            *report_sections.load_inputs(sweep["features"], sweep["store"], sweep["cohort"],
                                         sweep["leaderboard"], sweep["sweep_dir"]),
            k=study.min_cell_count, select_by=study.model.select_by)
        for name, png in figures.items():
            Path(sweep[name]).parent.mkdir(parents=True, exist_ok=True)
            Path(sweep[name]).write_bytes(png)
    page = report.render(
        study,
        json.loads(Path(attrition).read_text()),
        json.loads(Path(metrics).read_text()),
        pl.read_parquet(predictions),
        oracle_info,
        sections=sections,
        quality=json.loads(Path(quality).read_text()) if quality is not None else None,
    )
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page)
    tmp.replace(out)
