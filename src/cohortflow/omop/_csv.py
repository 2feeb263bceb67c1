"""CSV backend: a directory of ``<table>.csv`` files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from cohortflow.errors import SourceError
from cohortflow.omop._source_base import OmopSource, first_line, regular_tables


class CsvSource(OmopSource):
    """A directory of ``<table>.csv`` files (any case, comma separated, header row)."""

    kind = "csv"

    def _tables(self) -> list[str]:
        return [p.stem for p in regular_tables(self.path, (".csv",), dirs=False)]

    def _file(self, table: str) -> Path:
        return next(p for p in self.path.iterdir()
                    if p.stem == table and p.suffix.lower() == ".csv")

    def where(self, table: str) -> str:
        name = self._index.get(table)
        return f"{self._file(name)} (table {table})" if name else super().where(table)

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        path = self._file(table)
        where = self.where(table.lower())
        try:
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=64 << 20),
                convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
            )
            for batch in reader:
                _check_utf8(batch, where)
                yield batch
        except pa.ArrowInvalid as exc:
            raise SourceError(
                f"{where}: unreadable CSV ({first_line(exc)}); fix: one header row, comma "
                "separated, UTF-8, one type per column (ISO dates, plain integers for ids)"
            ) from None


def _check_utf8(batch: pa.RecordBatch, where: str) -> None:
    """The CSV reader turns a column holding invalid UTF-8 into bytes: refuse it."""
    binary = [f.name for f in batch.schema if pa.types.is_binary(f.type)
              or pa.types.is_large_binary(f.type)]
    if binary:
        raise SourceError(
            f"{where}: column {binary[0].lower()} is not valid UTF-8 text; fix: re-encode the "
            f"file as UTF-8, e.g. iconv -f latin1 -t utf-8 in.csv > out.csv"
        )
