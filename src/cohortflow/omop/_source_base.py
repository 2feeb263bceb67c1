"""OMOP CDM sources: small backends behind one interface, :class:`OmopSource`.

Each streams a table as record batches with lower-cased column names, because real OMOP
exports often use upper case.  Missing, empty and placeholder tables (columns named
``column0, column1, ...``, as in Eunomia) yield nothing, with a warning.  A backend
overrides :meth:`OmopSource._tables` and :meth:`OmopSource._batches` (and ``location``
when it is not a file path), one module each: Parquet (``_parquet``), CSV (``_csv``),
DuckDB (``_duckdb``) and PostgreSQL (``_postgres``); ``_open`` picks one from a location.
This module also holds what they share: the id and number checks every batch passes, and
the listing of a directory's table files.
"""

from __future__ import annotations

import hashlib
import logging
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa

from cohortflow.errors import SourceError

log = logging.getLogger(__name__)

BATCH_ROWS = 1_000_000
_PLACEHOLDER = re.compile(r"column\d+")
#: Numeric columns the ingest reads: text in them must parse as a number.
NUMERIC_COLUMNS = ("value_as_number", "days_supply")
_INT64_EXACT = 2**53  # the largest whole float64 that is still an exact integer


class OmopSource:
    """One OMOP CDM source.  Subclasses override :meth:`_tables` and :meth:`_batches`."""

    kind = "abstract"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._index = {name.lower(): name for name in self._tables()}

    @property
    def location(self) -> str:
        """Where the source is, safe to show (never holds a credential)."""
        return str(self.path)

    def tables(self) -> list[str]:
        """Lower-case names of the tables the source holds."""
        return sorted(self._index)

    def inputs(self) -> list[Path]:
        """The paths the source reads (its location, and where each linked table really
        lies), which no output may hold, replace or lie inside."""
        found = [self.path]
        if self.path.is_dir():
            for entry in sorted(self.path.iterdir()):
                if entry.is_symlink() and entry.exists():
                    found.append(entry.resolve())
        return found

    def close(self) -> None:
        """Release connections; reading after this is an error."""

    def __enter__(self) -> OmopSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tables(self) -> list[str]:
        raise NotImplementedError

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def where(self, table: str) -> str:
        """Human-readable location of a table, for error messages."""
        return f"{self.location} (table {table})"

    def has(self, table: str) -> bool:
        return table in self._index

    def _read(self, table: str, required: list[str],
              optional: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        """Batches of ``table``: every column, or (when ``optional`` is given) at least
        those of ``required`` and ``optional`` it has (lower-case names); a backend that
        can read fewer columns than the table's overrides this."""
        return self._batches(table)

    def batches(self, table: str, required: list[str],
                optional: Sequence[str] | None = None) -> Iterator[pl.DataFrame]:
        """Stream ``table`` as Polars frames with lower-case columns: every column, or, when
        ``optional`` is given, at least ``required`` and those of ``optional`` the table
        has (a backend may then leave out the others).

        Yields nothing (after a warning) for a missing, empty or placeholder table; raises
        :class:`SourceError` naming the table and column when a required column is absent.
        """
        if table not in self._index:
            log.warning("%s: table %s not found; skipped", self.location, table)
            return
        seen_rows = 0
        for batch in self._read(self._index[table], required, optional):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            frame = frame.rename({c: c.lower() for c in frame.columns})
            if seen_rows == 0:
                if all(_PLACEHOLDER.fullmatch(c) for c in frame.columns):
                    log.warning("%s: placeholder table (columns %s...); skipped",
                                self.where(table), frame.columns[0])
                    return
                missing = [c for c in required if c not in frame.columns]
                if missing:
                    raise SourceError(
                        f"{self.where(table)}: required column(s) {', '.join(missing)} missing "
                        f"(found: {', '.join(frame.columns)}); fix: export the table with the "
                        "OMOP CDM v5.4 column names"
                    )
            frame = _integer_ids(frame, required, self.where(table), seen_rows)
            frame = _numbers(frame, self.where(table), seen_rows)
            seen_rows += frame.height
            if frame.height:
                yield frame
        if seen_rows == 0:
            log.warning("%s: empty table; skipped", self.where(table))

    def fingerprint(self, table: str) -> dict[str, int | str]:
        """Row count and SHA-256 of a table's content, as this source serves it.

        The base reads the table once as Arrow IPC (any backend); file backends override it
        with a hash of the files' bytes.  Run manifests record it per table.
        """
        rows, digest = 0, hashlib.sha256()
        for batch in self._batches(self._index[table]):
            rows += batch.num_rows
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            digest.update(sink.getvalue().to_pybytes())
        return {"rows": rows, "sha256": digest.hexdigest()}


def _integer_ids(frame: pl.DataFrame, required: list[str], where: str,
                 offset: int) -> pl.DataFrame:
    """Required id and year columns as integers: integral floats and digit strings are
    converted; anything else is refused, naming the column and the first bad row (never the
    value, which may identify a person).

    >>> _integer_ids(pl.DataFrame({"person_id": ["1", "2"]}), ["person_id"], "p", 0).dtypes
    [Int64]
    >>> _integer_ids(pl.DataFrame({"person_id": ["1", "P2"]}), ["person_id"], "p.csv", 0)
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: p.csv: column person_id: 1 value(s) are not integers ...
    """
    for column in required:
        if not (column.endswith("concept_id") or column == "person_id"
                or column.startswith(("year_", "min_levels"))):
            continue
        dtype = frame.schema[column]
        if dtype.is_integer() and (dtype != pl.UInt64 or not frame.height
                                   or (frame[column].max() or 0) < 2**63):  # type: ignore[operator]
            continue
        if dtype == pl.String or dtype.is_float() or dtype.is_integer():
            values = pl.col(column)
            exact = pl.lit(None, pl.Int64)
            if dtype == pl.String:
                values = values.str.strip_chars()
                exact = values.cast(pl.Int64, strict=False)  # digits within 64 bits, exactly
            converted = values.cast(pl.Float64, strict=False)
            whole = (converted.is_finite() & (converted == converted.floor())
                     & (converted.abs() <= _INT64_EXACT))
            ok = pl.coalesce(exact, pl.when(whole).then(converted.cast(pl.Int64)))
            checked = frame.select(ok.alias("v"), pl.col(column).is_null().alias("null"))
            bad = checked.with_row_index().filter(pl.col("v").is_null() & ~pl.col("null"))
            if bad.height == 0:
                frame = frame.with_columns(checked["v"].alias(column))
                continue
            raise SourceError(
                f"{where}: column {column}: {bad.height} value(s) are not integers of at "
                f"most 64 bits (first at data row {offset + int(bad['index'][0]) + 1}); fix: "
                f"export {column} as an integer column (OMOP CDM ids and years are 64-bit "
                "integers)"
            )
        raise SourceError(
            f"{where}: column {column} has type {dtype}, expected an integer; fix: export "
            f"{column} as an integer column (OMOP CDM ids and years are integers)"
        )
    return frame


def _numbers(frame: pl.DataFrame, where: str, offset: int) -> pl.DataFrame:
    """Numeric columns (:data:`NUMERIC_COLUMNS`) given as text, as numbers: an empty cell is
    no value; text that is not a number is refused, naming the column and the first bad row.

    >>> _numbers(pl.DataFrame({"value_as_number": [" 1.5", None]}), "m", 0).dtypes
    [Float64]
    >>> _numbers(pl.DataFrame({"value_as_number": ["1.5", "n/a"]}), "m.csv", 0)
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: m.csv: column value_as_number: 1 value(s) are not numbers ...
    """
    for column in NUMERIC_COLUMNS:
        if column not in frame.columns or frame.schema[column] != pl.String:
            continue
        text = pl.col(column).str.strip_chars()
        checked = frame.select(text.cast(pl.Float64, strict=False).alias("v"),
                               (text.is_null() | (text == "")).alias("empty"))
        bad = checked.with_row_index().filter(pl.col("v").is_null() & ~pl.col("empty"))
        if bad.height:
            raise SourceError(
                f"{where}: column {column}: {bad.height} value(s) are not numbers (first at "
                f"data row {offset + int(bad['index'][0]) + 1}); fix: write plain numbers such "
                f"as 12.5 in {column}, and leave the cell empty where there is no value")
        frame = frame.with_columns(checked["v"].alias(column))
    return frame


def regular_tables(path: Path, suffixes: tuple[str, ...], dirs: bool) -> list[Path]:
    """Entries of ``path`` with one of ``suffixes`` (or, with ``dirs``, directories of such
    files); one that is not a regular file (a FIFO, a device, a dangling or looping link)
    is refused before it is opened, since reading it could block or fail half-way."""
    found = []
    for entry in sorted(path.iterdir()):
        if entry.suffix.lower() not in suffixes and not (dirs and entry.is_dir()):
            continue
        try:
            mode = entry.stat().st_mode
        except OSError as exc:
            raise SourceError(
                f"{entry}: table file cannot be opened ({exc.strerror}: a dangling or looping "
                "symbolic link?); fix: replace it with the table's file, or remove it"
            ) from None
        if stat.S_ISDIR(mode):
            if dirs and (entry.suffix.lower() in suffixes
                         or any(p.suffix.lower() in suffixes for p in entry.iterdir())):
                found.append(entry)
        elif stat.S_ISREG(mode):
            found.append(entry)
        else:
            raise SourceError(
                f"{entry}: table file is not a regular file (a FIFO, socket or device); "
                "fix: replace it with the table's exported file, or remove it")
    return found


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
