"""DuckDB backend: the tables of a DuckDB database file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from cohortflow.errors import SourceError
from cohortflow.omop._source_base import BATCH_ROWS, OmopSource, first_line


class DuckDBSource(OmopSource):
    """Tables of a DuckDB database file, optionally in one schema."""

    kind = "duckdb"

    def __init__(self, path: Path, schema: str | None = None) -> None:
        if not Path(path).is_file():
            raise SourceError(f"{path}: DuckDB file not found; fix: give the .duckdb file path")
        self.schema = schema
        try:
            self.con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            raise SourceError(
                f"{path}: not a readable DuckDB database ({first_line(exc)}); fix: give a "
                ".duckdb file written by DuckDB, or a directory of Parquet or CSV tables"
            ) from None
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
