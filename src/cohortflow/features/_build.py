"""The features step: one event scan per shard, then per-shard region writes, marker last."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dask.array as da
import numpy as np
import polars as pl
import xarray as xr
from dask.base import compute as dask_compute
from dask.delayed import Delayed
from dask.delayed import delayed as dask_delayed

from cohortflow import cohorts, compute, events
from cohortflow.errors import StoreError, StudySpecError
from cohortflow.features import _aggregate as agg
from cohortflow.features import _genomics as gen
from cohortflow.features import _sparse
from cohortflow.features._index import (
    FeatureIndex,
    dense_block,
    dense_sequence,
    feature_index,
    sequence_index,
)
from cohortflow.features._omics import omics_cells, omics_keys
from cohortflow.features._sparse import create_group, csr_block, write_shard
from cohortflow.features._store import (
    ChunkPlan,
    clear,
    encoding,
    finish,
    open_features,
    work_paths,
    write_boundaries,
    write_region,
)
from cohortflow.layout import shard_table
from cohortflow.study import Features, Study

# dask.delayed and dask.compute carry no annotations; these are the types they have here.
_delayed = cast(Callable[..., Callable[[Callable[..., Any]], Callable[..., Delayed]]],
                dask_delayed)
_compute = cast(Callable[..., tuple[Any, ...]], dask_compute)

WINDOW_SEMANTICS = {
    "index_day": (
        "whole calendar days relative to the index date (0 = index day, any hour); a window "
        "[start, end] holds events whose day lies in it, both ends included; 'Nd' = [-N, 0]; "
        "'all' = all history up to the index day; an event later on the index day than the "
        "index time counts (OHDSI); nothing after the index day ever counts"
    ),
    "before_index_time": (
        "whole calendar days relative to the index date, both ends included, as for index_day, "
        "except that a window reaching the index day (end 0, 'Nd', 'all', the last sequence "
        "bin) ends at the index time: only events strictly before index_time count, so an "
        "event at the index time or later on the index day never does"
    ),
}
"""The meaning of ``features.window_end``'s two options, side by side; the store's attribute
``window_semantics`` records the one it was built with."""


@dataclass(frozen=True)
class ShardSummary:
    """What phase 1 returns to the driver for one shard (the cells stay on disk)."""

    rows: int
    vocabulary: pl.DataFrame
    static_codes: list[str]
    cells: pl.DataFrame
    """Window cells per feature code (``feature_code``, ``cells``), for the layout rule."""
    static_cells: int
    """Cells of the demographics and of the genomic and omics blocks."""


def aggregate_shard(spec: Features, mapping: pl.DataFrame | None, ev: pl.LazyFrame,
                    cohort: pl.LazyFrame, train: pl.LazyFrame | None
                    ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """All tidy cells of one shard: (window cells, sequence cells, demographics, vocabulary)."""
    rows = agg.cohort_rows(cohort, train).collect()
    joined = agg.feature_events(spec, mapping, ev, rows.lazy()).collect()
    window, sequence, vocabulary, static = pl.collect_all([
        agg.window_cells(spec, joined.lazy()),
        agg.sequence_cells(spec, joined.lazy()),
        agg.code_vocabulary(joined.lazy()),
        agg.static_cells(spec, ev, rows.lazy()),
    ])
    return window, sequence, static, vocabulary


def resolve_concept_sets(study: Study, codes: pl.DataFrame) -> dict[str, list[str]]:
    """Event-store codes of each concept set named in ``features.concept_sets``, resolved by
    the cohort engine's :func:`cohortflow.cohorts.concept_codes` (literal codes, descendants,
    exclusions), so a concept set means the same in a cohort, a label and a feature.

    A set with no code in the store is logged and gives a feature that is never set.
    """
    out = {}
    for name in study.features.concept_sets:  # each defined: checked when the study loads
        out[name] = cohorts.concept_codes(name, study.concept_sets[name], codes,
                                          required=False)
    return out


def _skeleton(study: Study, target: str, cohort: pl.DataFrame, index: FeatureIndex,
              seq: FeatureIndex, layout: ChunkPlan, shards: list[str],
              storage: dict[str, Any]) -> xr.Dataset:
    n = cohort.height
    data: dict[str, tuple[tuple[str, ...], da.Array]] = {}
    if storage["layout"] == "dense":
        data["values"] = (("subject", "feature"),
                          da.zeros((n, len(index)), dtype=np.float32, chunks=-1))
    coords: dict[str, tuple[str, np.ndarray]] = {
        "subject": ("subject", cohort["subject_id"].to_numpy()),
        "index_time": ("subject", cohort["index_time"].to_numpy()),
        "feature": ("feature", np.array(index.keys(), dtype=object)),
        "code": ("feature", np.array(index.code, dtype=object)),
        "window": ("feature", np.array(index.window, dtype=object)),
        "aggregation": ("feature", np.array(index.aggregation, dtype=object)),
    }
    spec = study.features
    if spec.sequence is not None:
        bins, width = spec.sequence.bins, spec.sequence.bin_days
        data["sequence"] = (("subject", "time_bin", "sequence_feature"),
                            da.zeros((n, bins, len(seq)), dtype=np.float32, chunks=-1))
        b = np.arange(bins)
        coords |= {
            "time_bin": ("time_bin", b),
            "time_bin_start_days": ("time_bin", -(bins - b) * width + 1),
            "time_bin_end_days": ("time_bin", -(bins - 1 - b) * width),
            "sequence_feature": ("sequence_feature", np.array(seq.keys(), dtype=object)),
            "sequence_code": ("sequence_feature", np.array(seq.code, dtype=object)),
            "sequence_aggregation": ("sequence_feature", np.array(seq.aggregation, dtype=object)),
        }
    attrs = {
        "study": study.name,
        "target": target,
        # what shapes it (the features rule's key)
        "features_digest": study.features_digest(target),
        "feature_spec": spec.model_dump_json(),
        "window_semantics": WINDOW_SEMANTICS[spec.window_end],
        "shards": shards,
        "shard_offsets": list(layout.offsets),
        **storage,
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


GenomicTables = tuple[Path, Path | None]
"""The phenotype table and the dosage table (None: no variant declared) of genomic
features."""


def build_tensor(study: Study, target: str, store: Path, cohort_dir: Path, out: Path, *,
                 scratch: Path, workers: int | None = None,
                 dask_config: Path | None = None,
                 genomics: GenomicTables | None = None) -> None:
    """The features step of one target cohort: :func:`build_store` over the shards, on
    Dask's threaded scheduler in this process (:func:`cohortflow.compute.local_scheduler`,
    ``workers`` threads), or on dask-jobqueue workers when ``dask_config`` names their
    settings (a cluster of its own, :func:`cohortflow.compute.dask_client`, with the
    scheduler's files in ``scratch``).

    The step never uses the process's default Dask scheduler: in a profile that runs jobs
    as threads of one process (``force-use-threads``), two features steps at once each
    compute on their own threads or cluster, and no other job's Dask work lands on
    them.  ``genomics``: the tables of genomic features (``features.genomics``)."""
    if dask_config is None:
        build_store(study, target, Path(store), Path(cohort_dir), Path(out),
                    scheduler=compute.local_scheduler(workers), genomics=genomics)
        return
    with compute.dask_client(max_workers=workers, dask_config=dask_config,
                             scheduler_dir=Path(scratch), as_default=False) as client:
        build_store(study, target, Path(store), Path(cohort_dir), Path(out), scheduler=client,
                    genomics=genomics)


def build_store(study: Study, target: str, store: Path, cohort_dir: Path, out: Path, *,
                scheduler: Any = None, genomics: GenomicTables | None = None) -> xr.Dataset:
    """Compute the feature tensors of the target cohort ``target`` over all shards (Dask
    tasks) and write them to Zarr: one row per episode of the cohort tables in
    ``cohort_dir`` (``cohorts/<target>``), shard after shard, in each table's order.

    Phase 1 scans each shard's events once and spills its tidy cells; the driver merges
    the vocabularies into the feature axis; phase 2 turns each shard's cells into dense
    blocks and writes its own region.  Everything goes to ``.<out>.partial``; the completion
    marker is written last and the store renamed into place, so a killed step never leaves
    a store that looks finished, and a rerun starts clean.  ``scheduler`` is what Dask
    computes with (a :class:`distributed.Client`, or a name such as ``"synchronous"``);
    None: the active scheduler.  ``genomics``: the phenotype and dosage tables the genomic
    features (``features.genomics``) are read from, joined to each shard's rows in phase 1.
    """
    spec = study.features
    if spec.genomics is not None and genomics is None:
        raise StudySpecError("features.genomics: the features need the study's phenotype "
                             "table (genomics/phenotypes.parquet); fix: run the genomics "
                             "steps first (cohortflow run builds them)")
    tables = None if spec.genomics is None else genomics
    store, cohort_dir, out = Path(store), Path(cohort_dir), Path(out)
    shards = events.list_shards(store)
    codes = events.read_codes(store)
    mapping = agg.code_map(spec, codes, resolve_concept_sets(study, codes))
    train_path = events.splits_path(store) if spec.min_code_subjects > 0 else None
    if train_path is not None:
        events.read_splits(store)  # a clear error when the splits are missing
    partial, work, _ = work_paths(out)
    clear(partial, work)
    work.mkdir(parents=True)

    @_delayed(pure=True)
    def phase1(shard: str) -> ShardSummary:
        train = None if train_path is None else pl.scan_parquet(train_path).filter(
            pl.col("split") == "train")
        cohort = pl.scan_parquet(shard_table(cohort_dir, shard))
        window, sequence, static, vocab = aggregate_shard(
            spec, mapping, events.scan_shard(store, shard), cohort, train)
        genomic = pl.concat([gen.genomic_cells(spec.genomics, cohort, *gen.read_tables(tables)),
                             omics_cells(study, cohort)])
        for name, frame in (("window", window), ("sequence", sequence), ("static", static),
                            ("genomics", genomic)):
            frame.write_parquet(work / f"{shard}.{name}.parquet")
        rows = cohort.select(pl.len()).collect().item()
        cells = window.group_by("feature_code").agg(cells=pl.len())
        return ShardSummary(rows, vocab, static["feature_code"].unique().to_list(), cells,
                            static.height + genomic.height)

    summaries = _compute(*[phase1(s) for s in shards], scheduler=scheduler)
    vocabulary = pl.concat([s.vocabulary for s in summaries])
    index = feature_index(spec, vocabulary, [c for s in summaries for c in s.static_codes])
    index = FeatureIndex.of([*zip(index.code, index.window, index.aggregation, strict=True),
                             *gen.genomic_keys(spec.genomics), *omics_keys(study)])
    seq = sequence_index(spec, vocabulary)
    cohort = _episode_rows(cohort_dir, shards)
    storage = _storage(spec.layout, sum(s.rows for s in summaries), index, summaries)
    sparse = storage["layout"] == "sparse"
    # the Zarr grid's rows per chunk: of the dense arrays only (a sparse store's values are
    # per-shard CSR arrays)
    row_bytes = 4 * ((0 if sparse else len(index))
                     + (spec.sequence.bins * len(seq) if spec.sequence else 0))
    layout = ChunkPlan.plan([s.rows for s in summaries], row_bytes)
    if layout.rows != cohort.height:
        raise StoreError(f"{cohort_dir}: cohort tables changed while features were built; "
                         "fix: rerun the features step")
    ds = _skeleton(study, target, cohort, index, seq, layout, shards, storage)
    shapes = {str(name): ds[name].shape for name in ds.data_vars}
    ds.to_zarr(partial, mode="w", encoding=encoding(layout, shapes), compute=False,
               zarr_format=3, consolidated=False)
    if sparse:
        create_group(partial, layout.rows, len(index), layout.offsets)
    spills = [work / f"{s}.edges.npz" for s in shards]
    bins = spec.sequence.bins if spec.sequence is not None else 0

    @_delayed(pure=True)
    def phase2(i: int, shard: str) -> None:
        n = layout.offsets[i + 1] - layout.offsets[i]
        cells = pl.concat([pl.read_parquet(work / f"{shard}.{k}.parquet")
                           for k in ("window", "static", "genomics")])
        blocks = {}
        if sparse:
            write_shard(partial, i, csr_block(
                index.fill(), cells.join(index.frame(),
                                         on=["feature_code", "window", "aggregation"]), n))
        else:
            blocks["values"] = dense_block(index, cells, n)
        if "sequence" in shapes:
            blocks["sequence"] = dense_sequence(
                seq, pl.read_parquet(work / f"{shard}.sequence.parquet"), n, bins)
        write_region(partial, layout, i, blocks, spills[i])

    _compute(*[phase2(i, s) for i, s in enumerate(shards)], scheduler=scheduler)
    fills = {} if sparse else {"values": index.fill()}
    if "sequence" in shapes:
        fills["sequence"] = np.broadcast_to(seq.fill(), (bins, len(seq))).copy()
    write_boundaries(partial, layout, spills, fills)
    finish(partial, out)
    clear(work)
    return open_features(out)


def _storage(requested: str, rows: int, index: FeatureIndex,
             summaries: tuple[ShardSummary, ...] | list[ShardSummary]) -> dict[str, Any]:
    """The layout of ``values`` (``features.layout``; ``auto``:
    :data:`~cohortflow.features._sparse.AUTO_RULE` on the cells phase 1 computed) and what
    the store's attributes record of it: the request, the rule, the choice, the cells that
    differ from their fill (``set_cells``) and their share of all cells (``fill``)."""
    kept = pl.DataFrame({"feature_code": sorted(set(index.code))}, schema={
        "feature_code": pl.String})
    per_code = pl.concat([s.cells for s in summaries]) if summaries else pl.DataFrame(
        schema={"feature_code": pl.String, "cells": pl.UInt32})
    window = kept.join(per_code, on="feature_code").select(
        pl.col("cells").cast(pl.Int64).sum()).item()
    cells = int(window or 0) + sum(s.static_cells for s in summaries)
    layout, fill = _sparse.choose_layout(requested, rows, len(index), cells)
    return {"layout": layout, "layout_requested": requested, "layout_rule": _sparse.AUTO_RULE,
            "set_cells": cells, "fill": fill}


def _episode_rows(cohort_dir: Path, shards: list[str]) -> pl.DataFrame:
    """The (subject_id, index_time) of every episode of the cohort, shard after shard: the
    tensor's rows.  Only these two columns are read (never a label: a tensor serves every
    outcome and time at risk of its target)."""
    return pl.concat([pl.read_parquet(shard_table(cohort_dir, s),
                                      columns=["subject_id", "index_time"])
                      for s in shards])


def shard_block(spec: Features, ev: pl.LazyFrame, cohort: pl.LazyFrame,
                mapping: pl.DataFrame | None = None, train: pl.LazyFrame | None = None
                ) -> tuple[FeatureIndex, np.ndarray]:
    """One shard's feature axis and dense (rows × features) block, computed alone in memory.

    >>> import datetime as dt
    >>> ev = pl.LazyFrame({"subject_id": [1], "time": [dt.datetime(2020, 1, 1)],
    ...                    "code": ["DRUG//1"], "numeric_value": [None]},
    ...                   schema_overrides={"numeric_value": pl.Float32})
    >>> cohort = pl.LazyFrame({"subject_id": [1, 2], "index_time": [dt.datetime(2020, 1, 5)] * 2})
    >>> index, block = shard_block(Features(windows_days=[3, 7], demographics=[]), ev, cohort)
    >>> index.window, block.tolist()
    (('3d', '7d'), [[0.0, 1.0], [0.0, 0.0]])
    """
    window, _, static, vocabulary = aggregate_shard(spec, mapping, ev, cohort, train)
    index = feature_index(spec, vocabulary, static["feature_code"].to_list())
    rows = cohort.select(pl.len()).collect().item()
    return index, dense_block(index, pl.concat([window, static]), rows)
