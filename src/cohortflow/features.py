"""Windowed feature tensors: per-shard aggregation → xarray → Zarr v3.

A feature is a (code, window, aggregation) triple.  A window of ``d`` days covers the
calendar days ``[index - d, index]``, index day included; events after the index day never
count.  ``count`` is the number of events of the code in the window, ``mean`` the mean of
their non-null numeric values (NaN when there is none).  Demographics are ``age_years`` at
index and the presence of each sex code.

Each shard's block is computed by a Dask task; the blocks are stacked along ``subject`` in
shard order and written to one Zarr store; its completion marker (the group attribute
``cohortflow_complete``) is written last.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import polars as pl
import xarray as xr
import zarr
import zarr.errors

from cohortflow import cohorts, events
from cohortflow.errors import StoreError
from cohortflow.spec import Features, Study

COMPLETE_ATTR = "cohortflow_complete"
STATIC_WINDOW = "all"


@dataclass(frozen=True)
class FeatureIndex:
    """The ordered feature axis: one (code, window, aggregation) per column."""

    code: tuple[str, ...]
    window: tuple[str, ...]
    aggregation: tuple[str, ...]

    def position(self) -> dict[tuple[str, str, str], int]:
        keys = zip(self.code, self.window, self.aggregation, strict=True)
        return {key: i for i, key in enumerate(keys)}

    def __len__(self) -> int:
        return len(self.code)


def window_label(days: int) -> str:
    return f"{days}d"


def _in_domains(spec: Features) -> pl.Expr:
    return pl.any_horizontal(
        [pl.col("code").str.starts_with(f"{d}{events.CODE_SEPARATOR}") for d in spec.domains]
    )


def _with_days_before(ev: pl.LazyFrame, cohort: pl.LazyFrame) -> pl.LazyFrame:
    """Each event of each cohort row, with whole days from the event to the index date."""
    rows = cohort.select("subject_id", "index_time").with_row_index("row")
    return rows.join(ev, on="subject_id").with_columns(
        days_before=(pl.col("index_time").dt.date() - pl.col("time").dt.date()).dt.total_days()
    )


def shard_vocabulary(spec: Features, ev: pl.LazyFrame, cohort: pl.LazyFrame) -> pl.LazyFrame:
    """Codes seen in the widest window of a shard's cohort rows, with a has-value flag."""
    widest = max(spec.windows_days)
    demo = []
    if "sex" in spec.demographics:
        demo.append(pl.col("code").str.starts_with("GENDER//") & pl.col("time").is_null())
    seen = _with_days_before(ev, cohort).filter(
        (_in_domains(spec) & pl.col("days_before").is_between(0, widest))
        | pl.any_horizontal(demo or [pl.lit(False)])
    )
    return seen.group_by("code").agg(has_value=pl.col("numeric_value").is_not_null().any())


def feature_index(spec: Features, vocabulary: pl.DataFrame) -> FeatureIndex:
    """The feature axis of a study: sorted codes × windows × aggregations, then demographics.

    >>> vocab = pl.DataFrame({"code": ["DRUG//1", "MEASUREMENT//2"], "has_value": [False, True]})
    >>> ix = feature_index(Features(windows_days=[30], demographics=["age"]), vocab)
    >>> list(zip(ix.code, ix.window, ix.aggregation))  # doctest: +NORMALIZE_WHITESPACE
    [('DRUG//1', '30d', 'count'), ('MEASUREMENT//2', '30d', 'count'),
     ('MEASUREMENT//2', '30d', 'mean'), ('MEDS_BIRTH', 'all', 'age_years')]
    """
    vocab = vocabulary.group_by("code").agg(pl.col("has_value").any()).sort("code")
    keys: list[tuple[str, str, str]] = []
    for code, has_value in vocab.iter_rows():
        if code.startswith("GENDER//"):
            continue
        for days in sorted(spec.windows_days):
            keys.append((code, window_label(days), "count"))
            if has_value:
                keys.append((code, window_label(days), "mean"))
    if "age" in spec.demographics:
        keys.append((events.BIRTH, STATIC_WINDOW, "age_years"))
    if "sex" in spec.demographics:
        for code in vocab["code"].to_list():
            if code.startswith("GENDER//"):
                keys.append((code, STATIC_WINDOW, "present"))
    code, window, aggregation = zip(*keys, strict=True) if keys else ((), (), ())
    return FeatureIndex(tuple(code), tuple(window), tuple(aggregation))


def shard_block(spec: Features, index: FeatureIndex, ev: pl.LazyFrame,
                cohort: pl.LazyFrame) -> np.ndarray:
    """The dense (cohort rows × features) float32 block of one shard."""
    n_rows = cohort.select(pl.len()).collect().item()
    block = np.zeros((n_rows, len(index)), dtype=np.float32)
    position = index.position()
    joined = _with_days_before(ev, cohort)
    mean_cols = np.array([a == "mean" for a in index.aggregation])
    block[:, mean_cols] = np.nan

    windowed = []
    for days in sorted(spec.windows_days):
        windowed.append(
            joined.filter(_in_domains(spec) & pl.col("days_before").is_between(0, days))
            .group_by("row", "code")
            .agg(count=pl.len(), mean=pl.col("numeric_value").mean())
            .with_columns(window=pl.lit(window_label(days)))
        )
    for frame in pl.collect_all(windowed):
        for aggregation in ("count", "mean"):
            keys = zip(frame["code"].to_list(), frame["window"].to_list(), strict=True)
            cols = np.array([position.get((c, w, aggregation), -1) for c, w in keys],
                            dtype=np.int64)
            keep = cols >= 0
            rows = frame["row"].to_numpy()[keep]
            block[rows, cols[keep]] = frame[aggregation].to_numpy()[keep]

    if (events.BIRTH, STATIC_WINDOW, "age_years") in position:
        birth = joined.filter(pl.col("code") == events.BIRTH).group_by("row").agg(
            age=(pl.col("index_time").first() - pl.col("time").min()).dt.total_days() / 365.25
        ).collect()
        age_col = position[(events.BIRTH, STATIC_WINDOW, "age_years")]
        block[:, age_col] = np.nan
        block[birth["row"].to_numpy(), age_col] = birth["age"].to_numpy()
    static = joined.filter(pl.col("time").is_null()).select("row", "code").collect()
    for row, code in static.iter_rows():
        col = position.get((code, STATIC_WINDOW, "present"))
        if col is not None:
            block[row, col] = 1.0
    return block


def build_store(study: Study, store: Path, cohort_dir: Path, out: Path) -> xr.Dataset:
    """Compute the study's feature tensor over all shards (Dask tasks) and write it to Zarr.

    Uses the active Dask scheduler (a distributed client when one is running).  The store is
    written beside ``out`` and renamed into place after its completion marker, so a killed
    step never leaves a store that looks finished.
    """
    spec = study.features
    shards = events.list_shards(store)

    def scan(shard: str) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        cohort = pl.scan_parquet(cohorts.cohort_shard_path(cohort_dir, shard))
        return events.scan_shard(store, shard), cohort

    @dask.delayed(pure=True)
    def vocabulary(shard: str) -> pl.DataFrame:
        return shard_vocabulary(spec, *scan(shard)).collect()

    @dask.delayed(pure=True)
    def block(shard: str, index: FeatureIndex) -> np.ndarray:
        return shard_block(spec, index, *scan(shard))

    vocabs = dask.compute(*[vocabulary(s) for s in shards])
    index = feature_index(spec, pl.concat(vocabs))
    cohort = cohorts.read_cohort(cohort_dir, shards)
    sizes = cohort.group_by("shard", maintain_order=True).len()
    rows_of = dict(zip(sizes["shard"].to_list(), sizes["len"].to_list(), strict=True))
    blocks = [
        da.from_delayed(block(s, index), shape=(rows_of.get(s, 0), len(index)), dtype=np.float32)
        for s in shards
    ]
    values = da.concatenate(blocks, axis=0) if blocks else da.zeros((0, len(index)))
    chunk_rows = max(1, -(-cohort.height // len(shards)))
    values = values.rechunk((chunk_rows, len(index)))

    ds = xr.Dataset(
        {"values": (("subject", "feature"), values)},
        coords={
            "subject": ("subject", cohort["subject_id"].to_numpy()),
            "index_time": ("subject", cohort["index_time"].to_numpy()),
            # Variable-length UTF-8 strings: the Zarr v3 string type with a specification.
            "code": ("feature", np.array(index.code, dtype=object)),
            "window": ("feature", np.array(index.window, dtype=object)),
            "aggregation": ("feature", np.array(index.aggregation, dtype=object)),
        },
        attrs={
            "study": study.name,
            "study_digest": study.digest(),
            "feature_spec": spec.model_dump_json(),
            "window_semantics": "days in [index - d, index], index day included",
        },
    )
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    ds.to_zarr(partial, mode="w", zarr_format=3, consolidated=False)
    zarr.open_group(partial, mode="r+").attrs[COMPLETE_ATTR] = True  # the marker, last

    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return ds


def open_features(path: Path) -> xr.Dataset:
    """Open a finished feature store lazily; refuse one without its completion marker."""
    path = Path(path)
    try:
        complete = zarr.open_group(path, mode="r").attrs.get(COMPLETE_ATTR) is True
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.BaseZarrError):
        complete = False
    if not complete:
        raise StoreError(
            f"{path}: not a finished feature store (no Zarr group with the attribute "
            f"{COMPLETE_ATTR}), so it may be half-written; fix: delete it and rerun the "
            "features step"
        )
    with warnings.catch_warnings():
        # Snakemake leaves a .snakemake_timestamp file in directory outputs.
        warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp")
        return xr.open_zarr(path, consolidated=False)
