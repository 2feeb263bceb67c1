"""OMOP CDM sources: small backends behind one interface.

Each streams a table as record batches with lower-cased column names, because real OMOP
exports often use upper case.  Missing, empty and placeholder tables (columns named
``column0, column1, ...``, as in Eunomia) yield nothing, with a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from cohortflow.errors import SourceError

log = logging.getLogger(__name__)

BATCH_ROWS = 1_000_000
_PLACEHOLDER = re.compile(r"column\d+")


class OmopSource:
    """One OMOP CDM source.  Subclasses override :meth:`_tables` and :meth:`_batches`."""

    kind = "abstract"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._index = {name.lower(): name for name in self._tables()}

    def _tables(self) -> list[str]:
        raise NotImplementedError

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def where(self, table: str) -> str:
        """Human-readable location of a table, for error messages."""
        return f"{self.path} (table {table})"

    def has(self, table: str) -> bool:
        return table in self._index

    def batches(self, table: str, required: list[str]) -> Iterator[pl.DataFrame]:
        """Stream ``table`` as Polars frames with lower-case columns.

        Yields nothing (after a warning) for a missing, empty or placeholder table; raises
        :class:`SourceError` naming the table and column when a required column is absent.
        """
        if table not in self._index:
            log.warning("%s: table %s not found; skipped", self.path, table)
            return
        seen_rows = 0
        for batch in self._batches(self._index[table]):
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
            seen_rows += frame.height
            if frame.height:
                yield frame
        if seen_rows == 0:
            log.warning("%s: empty table; skipped", self.where(table))


class ParquetSource(OmopSource):
    """A directory with ``<table>.parquet`` files or ``<table>/`` directories of parts."""

    kind = "parquet"

    def _tables(self) -> list[str]:
        names = []
        for p in self.path.iterdir():
            if p.suffix.lower() == ".parquet" or (p.is_dir() and any(p.glob("*.parquet"))):
                names.append(p.name[: -len(p.suffix)] if p.suffix else p.name)
        return names

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        file = self.path / f"{table}.parquet"
        target = file if file.exists() else self.path / table
        if not file.exists():
            matches = [p for p in self.path.iterdir() if p.stem == table]
            target = matches[0]
        dataset = pads.dataset(target, format="parquet")
        yield from dataset.to_batches(batch_size=BATCH_ROWS)


class CsvSource(OmopSource):
    """A directory of ``<table>.csv`` files (any case, comma separated, header row)."""

    kind = "csv"

    def _tables(self) -> list[str]:
        return [p.stem for p in self.path.glob("*.csv")] + [
            p.stem for p in self.path.glob("*.CSV")
        ]

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        path = next(p for p in self.path.iterdir() if p.stem == table)
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=64 << 20),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
        yield from reader


class DuckDBSource(OmopSource):
    """Tables of a DuckDB database file, optionally in one schema."""

    kind = "duckdb"

    def __init__(self, path: Path, schema: str | None = None) -> None:
        if not Path(path).is_file():
            raise SourceError(f"{path}: DuckDB file not found; fix: give the .duckdb file path")
        self.schema = schema
        self.con = duckdb.connect(str(path), read_only=True)
        super().__init__(path)

    def _tables(self) -> list[str]:
        query = "SELECT table_schema, table_name FROM information_schema.tables"
        rows = self.con.execute(query).fetchall()
        if self.schema is not None:
            rows = [r for r in rows if r[0].lower() == self.schema.lower()]
        self._schema_of = {name: schema for schema, name in rows}
        return [name for _, name in rows]

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        schema = self._schema_of[table]
        relation = self.con.sql(f'SELECT * FROM "{schema}"."{table}"')
        yield from relation.to_arrow_reader(BATCH_ROWS)


def open_source(path: Path, fmt: str | None = None, schema: str | None = None) -> OmopSource:
    """Open an OMOP CDM source, inferring its format from the path when ``fmt`` is None."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: OMOP source not found; fix: give a .duckdb file or a "
                          "directory of Parquet or CSV tables")
    if fmt is None:
        if path.is_file():
            fmt = "duckdb"
        elif any(path.glob("*.csv")) or any(path.glob("*.CSV")):
            fmt = "csv"
        else:
            fmt = "parquet"
    if fmt == "duckdb":
        return DuckDBSource(path, schema)
    if fmt == "csv":
        return CsvSource(path)
    if fmt == "parquet":
        return ParquetSource(path)
    raise SourceError(f"{path}: unknown source format {fmt!r}; fix: one of duckdb, parquet, csv")
