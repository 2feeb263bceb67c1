"""A MEDS dataset made by any ETL as a study's source (``source: {meds: DIR}``).

The dataset is checked against the MEDS schema, file by file, before anything is written:
``data/**/*.parquet`` with ``subject_id`` (int64; any integer type that fits is taken),
``time`` (timestamp without time zone, any unit; null for static rows), ``code`` (string)
and ``numeric_value`` (float; null when there is none); an optional string ``unit`` is kept.
``metadata/codes.parquet`` (``code``, optional ``description`` and ``parent_codes``) is
optional but used: descriptions and the hierarchy (a code's descendants are the transitive
closure of ``parent_codes``).  ``metadata/subject_splits.parquet`` (``subject_id``,
``split``), when present, gives the splits of the subjects it lists.

The ingest step then copies the dataset into the study's event store
(``results/<study>/events``), re-sharded by :func:`cohortflow.events.shard_of` into the
study's ``shards`` and sorted, exactly as the OMOP ingest writes it.  Why a copy rather than
reading the dataset in place: every later step relies on the store's contracts — shard
``data/<i>.parquet`` for ``i < shards`` holding exactly the subjects that
:func:`~cohortflow.events.shard_of` puts there, rows sorted by subject and time,
``numeric_value`` float32, a codes table naming every code, subject splits, and
``dataset.json`` and ``source_fingerprint.json`` for the manifest — and a dataset from
another ETL promises none of the sharding ones.  The copy costs one pass and the disk of
the events; memory stays bounded by one input row group while reading and one shard while
sorting; the dataset itself is never modified.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from cohortflow import events, store_guard, store_writer
from cohortflow.errors import SourceError
from cohortflow.privacy import DEFAULT_MIN_CELL_COUNT, suppress

log = logging.getLogger(__name__)

BATCH_ROWS = 1 << 20
"""Rows read at a time from a data file."""
EXPECTED = {
    "subject_id": "int64",
    "time": "timestamp[us] (no time zone)",
    "code": "string",
    "numeric_value": "float32",
}
"""The MEDS data columns and their types, as the error messages name them."""


def _accepts(column: str, kind: pa.DataType) -> bool:
    if column == "subject_id":
        return bool(pa.types.is_integer(kind))
    if column == "time":
        return bool(pa.types.is_null(kind)
                    or (pa.types.is_timestamp(kind) and kind.tz is None))
    if column == "code":
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind)
                    or pa.types.is_string_view(kind))
    return bool(pa.types.is_floating(kind) or pa.types.is_null(kind))


def data_files(root: Path) -> list[Path]:
    """The dataset's data files, ``data/**/*.parquet`` in path order; a clear error when the
    directory or its files are missing.

    >>> data_files(Path("nowhere"))
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: nowhere: MEDS dataset not found ...
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(
            f"{root}: MEDS dataset not found (source.meds.path must be a directory holding "
            "data/*.parquet); fix: give the dataset's root directory, e.g. source: {meds: "
            "{path: my_meds_dataset}} (a relative path is read from the study file's folder)")
    files = sorted(p for p in (root / "data").glob("**/*.parquet") if p.is_file())
    if not files:
        raise SourceError(
            f"{root / 'data'}: no Parquet files; a MEDS dataset keeps its events in "
            "data/*.parquet (or data/<split>/*.parquet); fix: point source.meds.path at the "
            "dataset's root directory")
    return files


def _parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file ({type(exc).__name__}); fix: "
                          "rewrite the file, or remove it from the dataset") from None


def check_data_file(path: Path) -> pa.Schema:
    """The Arrow schema of one data file, checked against the MEDS data schema: one clear
    error naming the file, the column and the fix for the first column that is missing or
    of another type."""
    schema = _parquet(path).schema_arrow
    for column, expected in EXPECTED.items():
        if column not in schema.names:
            raise SourceError(
                f"{path}: column {column} is missing; a MEDS data file has subject_id "
                f"(int64), time (timestamp), code (string) and numeric_value (float32, null "
                f"when there is no value); fix: add {column}: {expected}")
        kind = schema.field(column).type
        if column == "time" and pa.types.is_timestamp(kind) and kind.tz is not None:
            raise SourceError(
                f"{path}: column time is {kind}; MEDS times carry no time zone; fix: convert "
                "them to local (or UTC) wall-clock times, e.g. "
                "pl.col('time').dt.convert_time_zone('UTC').dt.replace_time_zone(None)")
        if not _accepts(column, kind):
            raise SourceError(
                f"{path}: column {column} is {kind}; MEDS needs {column}: {expected}; fix: "
                f"cast it, e.g. pl.col('{column}').cast({_polars_type(column)}) before "
                "writing the file")
    return schema


def _polars_type(column: str) -> str:
    return {"subject_id": "pl.Int64", "time": "pl.Datetime('us')", "code": "pl.String",
            "numeric_value": "pl.Float32"}[column]


def _events(batch: pa.RecordBatch, has_unit: bool, path: Path, offset: int) -> pl.DataFrame:
    """One batch as event-store rows (``events.POLARS_EVENT_SCHEMA``)."""
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    for column in ("subject_id", "code"):
        nulls = frame[column].is_null()
        if nulls.any():
            row = offset + int(nulls.arg_max() or 0)
            raise SourceError(f"{path}: {column} is null in row {row}; MEDS requires a "
                              f"{column} on every row; fix: fill it or drop those rows")
    if frame.schema["subject_id"] == pl.UInt64:
        too_big = frame["subject_id"] > np.iinfo(np.int64).max
        if too_big.any():
            row = offset + int(too_big.arg_max() or 0)
            raise SourceError(f"{path}: subject_id in row {row} does not fit in int64; "
                              "fix: renumber the subjects with ids below 2**63")
    unit = pl.col("unit").cast(pl.String) if has_unit else pl.lit(None, pl.String)
    return frame.select(
        pl.col("subject_id").cast(pl.Int64),
        pl.col("time").cast(pl.Datetime("us")),
        pl.col("code").cast(pl.String),
        pl.col("numeric_value").cast(pl.Float32),
        unit.alias("unit"),
    )


def _metadata(path: Path, columns: dict[str, str], required: set[str]) -> pl.DataFrame | None:
    """An optional metadata table with its columns checked; None when it is absent."""
    if not path.is_file():
        return None
    schema = _parquet(path).schema_arrow
    for column, expected in columns.items():
        if column not in schema.names:
            if column in required:
                raise SourceError(f"{path}: column {column} is missing; fix: add {column} "
                                  f"({expected}), or remove the file")
            continue
        kind = schema.field(column).type
        fine = {
            "string": pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or (pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type)),
            "list of strings": (pa.types.is_list(kind) or pa.types.is_large_list(kind))
            and (pa.types.is_string(kind.value_type) or pa.types.is_large_string(
                kind.value_type) or pa.types.is_null(kind.value_type)),
            "integer": pa.types.is_integer(kind),
        }[expected]
        if not fine and not pa.types.is_null(kind):
            raise SourceError(f"{path}: column {column} is {kind}; MEDS needs {column}: "
                              f"{expected}; fix: cast it, or remove the file")
    present = [c for c in columns if c in schema.names]
    return pl.read_parquet(path, columns=present)


_CODE_LISTS = ["parent_codes", events.ANCESTOR_CODES]


def _read_codes(root: Path) -> pl.DataFrame | None:
    """The dataset's ``metadata/codes.parquet``, its columns checked; None when absent."""
    return _metadata(root / "metadata" / "codes.parquet",
                     {"code": "string", "description": "string",
                      **dict.fromkeys(_CODE_LISTS, "list of strings")}, required={"code"})


def _codes(table: pl.DataFrame | None, seen: list[str]) -> pl.DataFrame:
    """The store's codes table: every code of the data and of the dataset's codes table,
    with its description (the code itself when there is none), ``parent_codes`` and, when
    the dataset gives one (a store written by cohortflow), the closure ``ancestor_codes``."""
    lists = _CODE_LISTS
    present = [c for c in lists if table is not None and c in table.columns]
    kept = ["parent_codes", *[c for c in present if c != "parent_codes"]]
    schema = pl.Schema({"code": pl.String(), "description": pl.String(),
                        **{c: pl.List(pl.String()) for c in kept}})
    given = pl.DataFrame(schema=schema)
    if table is not None:
        given = table.select(
            pl.col("code").cast(pl.String),
            (pl.col("description") if "description" in table.columns
             else pl.lit(None)).cast(pl.String).alias("description"),
            *[(pl.col(c) if c in present else pl.lit(None)).cast(pl.List(pl.String)).alias(c)
              for c in kept],
        ).drop_nulls("code")
    only_seen = pl.DataFrame({"code": seen}, schema={"code": pl.String}).with_columns(
        pl.lit(None, pl.String).alias("description"),
        *[pl.lit(None, pl.List(pl.String)).alias(c) for c in kept])
    # MEDS allows several rows per code (one per value range...): the first row with a
    # description wins, then the links of all its rows.
    merged = (
        pl.concat([given, only_seen])
        .group_by("code", maintain_order=True)
        .agg(pl.col("description").drop_nulls().first(),
             *[pl.col(c).explode().drop_nulls().unique().sort() for c in kept])
    )
    return merged.select(
        "code", pl.coalesce("description", "code").alias("description"), *kept
    ).sort("code")


def _read_splits(root: Path) -> pl.DataFrame | None:
    """The dataset's ``metadata/subject_splits.parquet``, its columns checked; None when
    absent."""
    return _metadata(root / "metadata" / "subject_splits.parquet",
                     {"subject_id": "integer", "split": "string"},
                     required={"subject_id", "split"})


def _splits(own: pl.DataFrame | None, ids: np.ndarray) -> pl.DataFrame:
    """Each subject's split: the dataset's own where it lists the subject, else
    :func:`cohortflow.events.split_of`."""
    frame = pl.DataFrame({"subject_id": ids, "split": events.split_of(ids).astype(str)})
    if own is None:
        return frame
    own = own.select(pl.col("subject_id").cast(pl.Int64), pl.col("split").cast(pl.String))
    listed = own.drop_nulls().unique("subject_id", keep="first", maintain_order=True)
    return frame.join(listed, on="subject_id", how="left", suffix="_own").select(
        "subject_id", pl.coalesce("split_own", "split").alias("split")).sort("subject_id")


def fingerprint(path: Path) -> dict[str, int | str]:
    """Rows (from the Parquet footer) and SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"rows": _parquet(path).metadata.num_rows, "sha256": digest.hexdigest()}


def _source_dataset(root: Path) -> dict[str, Any]:
    """What the dataset says of itself (``metadata/dataset.json``), the names only."""
    try:
        meta = json.loads((root / "metadata" / "dataset.json").read_text())
    except (OSError, ValueError):
        return {}
    keys = ("dataset_name", "dataset_version", "etl_name", "etl_version", "meds_version")
    return {k: meta[k] for k in keys if isinstance(meta, dict) and isinstance(meta.get(k), str)}


def ingest(root: Path, out: Path, shards: int, dataset_name: str = "meds",
           min_cell_count: int = DEFAULT_MIN_CELL_COUNT) -> dict[str, Any]:
    """Copy the MEDS dataset at ``root`` into the event store ``out``, re-sharded into
    ``shards`` (``out`` is replaced only when complete, and only if it is new, empty or an
    earlier event store; it must not overlap the dataset).

    Every file is checked before anything is written; bad input raises
    :class:`~cohortflow.errors.SourceError` naming the file, the column and the fix.
    """
    root, out = Path(root), Path(out)
    files = data_files(root)
    schemas = [check_data_file(f) for f in files]
    codes_table, splits_table = _read_codes(root), _read_splits(root)
    store_guard.check_output(out, [root])
    work = out.with_name(f".{out.name}.partial")
    with store_guard.nothing_half_written(work, out):
        writer = store_writer.ShardWriter(work, shards)
        seen: set[str] = set()
        subjects: list[np.ndarray] = []
        for path, schema in zip(files, schemas, strict=True):
            has_unit = "unit" in schema.names and (pa.types.is_string(schema.field("unit").type)
                                                   or pa.types.is_large_string(
                                                       schema.field("unit").type))
            columns = [*EXPECTED, *(["unit"] if has_unit else [])]
            offset = 0
            for batch in _parquet(path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                frame = _events(batch, has_unit, path, offset)
                offset += frame.height
                seen.update(frame["code"].unique().to_list())
                subjects.append(frame["subject_id"].unique().to_numpy())
                writer.add(frame)
        total = writer.finish(work)
        ids = np.unique(np.concatenate(subjects)) if subjects else np.array([], np.int64)
        if ids.size == 0:
            raise SourceError(f"{root / 'data'}: the data files hold no events; fix: point "
                              "source.meds.path at a dataset with events")
        events.write_parquet(_codes(codes_table, sorted(seen)).to_arrow(),
                             events.codes_path(work))
        events.write_parquet(_splits(splits_table, ids).to_arrow(), events.splits_path(work))
        summary = store_writer.write_summary(work, dataset_name, shards, int(ids.size),
                                             total, source_format="meds",
                                             source_dataset=_source_dataset(root))
        inputs = [*files, *(p for p in (root / "metadata" / "codes.parquet",
                                        root / "metadata" / "subject_splits.parquet")
                            if p.is_file())]
        events.write_json({p.relative_to(root).as_posix(): fingerprint(p) for p in inputs},
                          events.source_fingerprint_path(work))
        store_guard.replace_store(work, out)
    log.info("copied %s events of %s subjects from the MEDS dataset %s into %d shards",
             suppress(total, min_cell_count), suppress(int(ids.size), min_cell_count), root,
             shards)
    return summary
