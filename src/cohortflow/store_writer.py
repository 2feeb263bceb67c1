"""Writing an event store's contents: events buffered per shard and sorted once, and the
``metadata/dataset.json`` summary.  The OMOP ingest and the MEDS-source copy both write
through here (where the store goes, and what it may replace, is :mod:`store_guard`'s job).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from cohortflow import __version__, events, store_guard

#: The order of the rows of every shard.
SORT_KEY = ["subject_id", "time", "code", "numeric_value", "unit"]


class ShardWriter:
    """Buffers event frames per shard as part files under ``root/parts``, then sorts each
    shard once; keeps the distinct codes and how often each occurs."""

    def __init__(self, root: Path, shards: int) -> None:
        self.root = root
        self.shards = shards
        self.parts = 0
        self.codes: set[str] = set()
        self.code_counts: dict[str, int] = {}

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        shard = events.shard_of(frame["subject_id"].to_numpy(), self.shards)
        frame = frame.with_columns(pl.Series("_shard", shard))
        self.codes.update(frame["code"].unique().to_list())
        for code, n in frame["code"].value_counts().iter_rows():
            self.code_counts[code] = self.code_counts.get(code, 0) + n
        for (index,), part in frame.partition_by("_shard", as_dict=True).items():
            path = self.root / "parts" / str(index) / f"{self.parts:08d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            part.drop("_shard").write_parquet(path)
        self.parts += 1

    def finish(self, store: Path,
               inspect: Callable[[pl.DataFrame], None] | None = None) -> int:
        """Write every shard of ``store`` sorted (``inspect`` sees each sorted shard);
        returns the number of events.  The part folders are removed."""
        total = 0
        for shard in events.shard_names(self.shards):
            parts = self.root / "parts" / shard
            frame = (
                pl.read_parquet(parts / "*.parquet", schema=events.POLARS_EVENT_SCHEMA)
                if parts.exists() else pl.DataFrame(schema=events.POLARS_EVENT_SCHEMA)
            )
            frame = frame.sort(SORT_KEY, nulls_last=False, maintain_order=True)
            if inspect is not None:
                inspect(frame)
            events.write_parquet(frame.to_arrow().cast(events.EVENT_SCHEMA),
                                 events.shard_path(store, shard))
            total += frame.height
            shutil.rmtree(parts, ignore_errors=True)
        shutil.rmtree(self.root / "parts", ignore_errors=True)
        return total


def write_summary(store: Path, dataset_name: str, shards: int, subjects: int, total: int,
                  **extra: Any) -> dict[str, Any]:
    """Write ``metadata/dataset.json`` (MEDS's dataset metadata plus the store's counts and
    ``extra``), marking the store as this tool's; returns the summary."""
    summary = {
        "dataset_name": dataset_name,
        "dataset_version": "1",
        "etl_name": store_guard.STORE_ETL_NAME,
        "etl_version": __version__,
        "meds_version": events.MEDS_VERSION,
        "shards": shards,
        "subjects": subjects,
        "events": total,
        **extra,
    }
    events.write_json(summary, events.dataset_json_path(store))
    return summary
