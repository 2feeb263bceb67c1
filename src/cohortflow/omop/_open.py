"""Opening a source: the backend is chosen from the location, or named."""

from __future__ import annotations

from pathlib import Path

from cohortflow.errors import SourceError
from cohortflow.omop._csv import CsvSource
from cohortflow.omop._duckdb import DuckDBSource
from cohortflow.omop._parquet import ParquetSource
from cohortflow.omop._postgres import PostgresSource, is_postgres_url
from cohortflow.omop._source_base import OmopSource


def open_source(path: str | Path, fmt: str | None = None,
                schema: str | None = None) -> OmopSource:
    """Open an OMOP CDM source, inferring its format from the location when ``fmt`` is None.

    A ``postgresql://`` URL opens a :class:`PostgresSource`; a file, a DuckDB database; a
    directory, its Parquet or CSV tables.
    """
    if is_postgres_url(path) or fmt == "postgresql":
        return PostgresSource(str(path), schema)
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: OMOP source not found; fix: give a .duckdb file, a "
                          "directory of Parquet or CSV tables, or a postgresql:// URL")
    if not path.is_file() and not path.is_dir():
        raise SourceError(f"{path}: OMOP source is neither a file nor a directory (a FIFO or "
                          "device?); fix: give a .duckdb file or a directory of tables")
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
    raise SourceError(f"{path}: unknown source format {fmt!r}; fix: one of duckdb, parquet, "
                      "csv, postgresql")
