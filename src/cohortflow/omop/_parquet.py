"""Parquet backend: a directory of ``<table>.parquet`` files or directories of parts."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from cohortflow.errors import SourceError
from cohortflow.omop._source_base import BATCH_ROWS, OmopSource, first_line, regular_tables


def _unreadable(where: str, kind: str, exc: BaseException) -> SourceError:
    return SourceError(
        f"{where}: unreadable {kind} file ({first_line(exc)}), truncated or not {kind}; fix: "
        "export the table again, and copy the whole file")


class ParquetSource(OmopSource):
    """A directory with ``<table>.parquet`` files or ``<table>/`` directories of parts."""

    kind = "parquet"

    def _tables(self) -> list[str]:
        return [p.name[: -len(p.suffix)] if p.suffix else p.name
                for p in regular_tables(self.path, (".parquet",), dirs=True)]

    def where(self, table: str) -> str:
        name = self._index.get(table)
        if name is None:
            return super().where(table)
        file = self.path / f"{name}.parquet"
        return f"{file if file.exists() else self.path / name} (table {table})"

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        return self._read(table, [], None)

    def _read(self, table: str, required: list[str],
              optional: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        """With ``optional`` given, only ``required`` and the columns of ``optional`` the
        table has are decoded when it has every required one (a measurement row has 21
        columns; the ingest reads 7); otherwise all, so the caller's checks see the table
        as it is."""
        file = self.path / f"{table}.parquet"
        target = file if file.exists() else self.path / table
        if not file.exists():
            matches = [p for p in self.path.iterdir() if p.stem == table]
            target = matches[0]
        try:
            dataset = pads.dataset(target, format="parquet")
            names = {name.lower(): name for name in dataset.schema.names}
            kept = None
            if optional is not None and required and all(c in names for c in required):
                kept = [names[c] for c in dict.fromkeys([*required, *optional]) if c in names]
            yield from dataset.to_batches(columns=kept, batch_size=BATCH_ROWS)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(self.where(table.lower()), "Parquet", exc) from None

    def fingerprint(self, table: str) -> dict[str, int | str]:
        """Rows from the Parquet footers and a hash of the files' bytes: no data is decoded."""
        name = self._index[table]
        files = sorted((self.path / name).glob("*.parquet")) or [
            p for p in self.path.iterdir() if p.is_file() and p.stem == name]
        digest = hashlib.sha256()
        rows = 0
        for file in files:
            try:
                rows += pq.ParquetFile(file).metadata.num_rows
            except (pa.ArrowException, OSError) as exc:
                raise _unreadable(self.where(table), "Parquet", exc) from None
            with file.open("rb") as fh:
                for block in iter(functools.partial(fh.read, 1 << 20), b""):
                    digest.update(block)
        return {"rows": rows, "sha256": digest.hexdigest()}
