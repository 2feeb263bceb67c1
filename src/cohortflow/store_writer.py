"""Writing an event store's contents: events buffered per shard and sorted once, and the
``metadata/dataset.json`` summary.  The OMOP ingest and the MEDS-source copy both write
through here (where the store goes, and what it may replace, is :mod:`store_guard`'s job).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from cohortflow import __version__, events, store_guard

#: The order of the rows of every shard.
SORT_KEY = ["subject_id", "time", "code", "numeric_value", "unit"]
#: Shards sorted and written at once by :meth:`ShardWriter.finish`.
WORKERS = 2
#: The codec of the parts.  Every part of a store is on disk at once before the first shard
#: is sorted, beside the source: uncompressed they took about 70 bytes per event (a 10⁹-event
#: warehouse, 1.4 × 10⁹ store events: about 100 GB), LZ4 about 14, at no more CPU (10⁷
#: warehouse events on 2 cores: 15 CPU s with LZ4, 16 uncompressed; zstd 7 bytes, 16 s).
PARTS_COMPRESSION: Literal["lz4"] = "lz4"


#: Events a :class:`ShardWriter` gathers before writing them out as parts.  One part per
#: source batch and shard made a 10⁹-event ingest (3,900 batches × 400 shards) write and
#: read 1.2 million files of about 1,200 events, at about 1 ms of CPU each: a cost that grows
#: with events × shards, i.e. with the square of the data.  Gathering 2 M events first cuts
#: the parts to one per 2 M events and shard (10⁹: ingest CPU 4,080 → 2,381 s); the frames
#: gathered and the ones being written raise the ingest's peak RSS by about 0.3–0.5 GB.
SPILL_ROWS = 1 << 21


class ShardWriter:
    """Gathers event frames (:data:`SPILL_ROWS` events at a time), buffers them per shard
    as part files under ``root/parts``, then sorts each shard once; keeps the distinct codes
    and how often each occurs.

    Parts are Arrow IPC, :data:`PARTS_COMPRESSION`: written and read back at memory speed,
    with no Parquet encoding of data that lives for seconds.  :meth:`finish` sorts and writes
    :data:`WORKERS` shards at a time (the sort and the Parquet encoder release the GIL), so
    memory is bounded by that many shards.  A shard's rows are its frames' rows in the order
    they were added, however they were gathered, so the store does not depend on
    :data:`SPILL_ROWS`.
    """

    def __init__(self, root: Path, shards: int, background: bool = False) -> None:
        self.root = root
        self.shards = shards
        self.parts = 0
        self.code_counts: dict[str, int] = {}
        self.units: set[str] = set()
        self._gathered: list[pl.DataFrame] = []
        self._gathered_counts: dict[str, int] = {}
        self._gathered_rows = 0
        # With ``background``, one thread writes gathered frames' parts while the caller
        # reads on; at most one spill waits, so memory stays bounded by two spills' frames.
        # The caller must then call :meth:`close` (also on failure) before removing root.
        self._spiller = ThreadPoolExecutor(1) if background else None
        self._pending: Future[None] | None = None

    @property
    def codes(self) -> set[str]:
        """The distinct codes added (complete after :meth:`finish`: a flush in the
        background counts its codes only once its parts are written)."""
        return set(self.code_counts)

    def add(self, frame: pl.DataFrame, code_counts: dict[str, int] | None = None) -> None:
        """Buffer ``frame``'s events.  ``code_counts``, when the caller has them (the OMOP
        ingest counts concept ids, not the longer code strings), must be the events of
        each code in ``frame``; without them they are counted here."""
        if frame.height == 0:
            return
        counted = (code_counts.items() if code_counts is not None
                   else frame["code"].value_counts().iter_rows())
        for code, n in counted:
            self._gathered_counts[code] = self._gathered_counts.get(code, 0) + n
        self._gathered.append(frame.select(pl.col(name).cast(dtype) for name, dtype
                                           in events.POLARS_EVENT_SCHEMA.items()))
        self._gathered_rows += frame.height
        if self._gathered_rows >= SPILL_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the gathered frames out as parts (in the background, if so made)."""
        if not self._gathered:
            return
        frame = pl.concat(self._gathered, rechunk=False)
        counts = self._gathered_counts
        self._gathered, self._gathered_counts, self._gathered_rows = [], {}, 0
        self._wait()
        if self._spiller is None:
            self._spill(frame, self.parts, counts)
        else:
            self._pending = self._spiller.submit(self._spill, frame, self.parts, counts)
        self.parts += 1

    def _spill(self, frame: pl.DataFrame, number: int, code_counts: dict[str, int]) -> None:
        for code, n in code_counts.items():
            self.code_counts[code] = self.code_counts.get(code, 0) + n
        self.units.update(frame["unit"].drop_nulls().unique().to_list())
        shard = events.shard_of(frame["subject_id"].to_numpy(), self.shards)
        frame = frame.with_columns(pl.Series("_shard", shard))
        for (index,), part in frame.partition_by("_shard", as_dict=True).items():
            path = self.root / "parts" / str(index) / f"{number:08d}.arrow"
            path.parent.mkdir(parents=True, exist_ok=True)
            part.drop("_shard").write_ipc(path, compression=PARTS_COMPRESSION)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the part being written, if any (its error, if any, is raised); frames
        gathered since the last :meth:`flush` are not written."""
        try:
            self._wait()
        finally:
            if self._spiller is not None:
                self._spiller.shutdown(wait=True)

    def finish(self, store: Path,
               inspect: Callable[[pl.DataFrame], None] | None = None) -> int:
        """Write every shard of ``store`` sorted (``inspect`` sees each sorted shard, one
        at a time); returns the number of events.  The part folders are removed."""
        self.flush()
        self.close()
        lock = threading.Lock()
        known = (pl.Series(sorted(self.code_counts), dtype=pl.String),
                 pl.Series(sorted(self.units), dtype=pl.String))

        def one(shard: str) -> int:
            frame = sort_events(self._read(shard), *known)
            if inspect is not None:
                with lock:
                    inspect(frame)
            events.write_parquet(frame.to_arrow().cast(events.EVENT_SCHEMA),
                                 events.shard_path(store, shard))
            shutil.rmtree(self.root / "parts" / shard, ignore_errors=True)
            return frame.height

        names = events.shard_names(self.shards)
        if WORKERS == 1:
            total = sum(map(one, names))
        else:
            with ThreadPoolExecutor(WORKERS) as pool:
                total = sum(pool.map(one, names))
        shutil.rmtree(self.root / "parts", ignore_errors=True)
        return total

    def _read(self, shard: str) -> pl.DataFrame:
        files = sorted((self.root / "parts" / shard).glob("*.arrow"))
        if not files:
            return pl.DataFrame(schema=events.POLARS_EVENT_SCHEMA)
        return pl.concat([pl.read_ipc(f) for f in files],
                         rechunk=False)


def sort_events(frame: pl.DataFrame, codes: pl.Series | None = None,
                units: pl.Series | None = None) -> pl.DataFrame:
    """``frame`` in :data:`SORT_KEY` order, nulls first, equal keys in their input order.

    ``code``, ``numeric_value`` and ``unit`` are packed into one 64-bit number that orders
    as they do (each string by its rank among the frame's distinct values, the float by its
    order-preserving bits), so the sort compares three integers, not text; a frame where
    that cannot be exact (a NaN or a negative zero, or too many distinct codes and units to
    pack) is sorted on the columns themselves.  So is a frame that is nearly in subject
    order already (a source exported person by person; see :func:`_nearly_sorted`): there
    the sort's merge runs are long and comparing the columns costs less than making the key.
    Either way the result is the same, since equal keys are equal rows.  ``codes`` and
    ``units``, sorted and holding every code and unit of the frame, spare finding them
    again.

    >>> frame = pl.DataFrame({"subject_id": [2, 1, 1, 1], "time": [None, 5, 5, None],
    ...                       "code": ["B", "b", "A", "A"], "numeric_value": [1.0, None, -2.0, 3.0],
    ...                       "unit": [None, None, "mg", None]}, schema_overrides={
    ...                       "numeric_value": pl.Float32})
    >>> sort_events(frame)["code"].to_list()
    ['A', 'A', 'b', 'B']
    """
    key = None if _nearly_sorted(frame) else _packed_key(frame, {"code": codes, "unit": units})
    if key is None:
        return frame.sort(SORT_KEY, nulls_last=False, maintain_order=True)
    return (frame.with_columns(pl.Series("_key", key)).sort(
        [*SORT_KEY[:2], "_key"], nulls_last=False, maintain_order=True).select(SORT_KEY))


#: A frame with fewer subject-order breaks than this share of its rows is nearly sorted.
NEARLY_SORTED = 0.001


def _nearly_sorted(frame: pl.DataFrame) -> bool:
    """Whether ``subject_id`` falls between neighbouring rows at most :data:`NEARLY_SORTED`
    of the time (a shard's parts are the source's tables one after another: a source
    exported person by person breaks the order once per table and batch).

    >>> _nearly_sorted(pl.DataFrame({"subject_id": list(range(5000)) * 2}))
    True
    >>> _nearly_sorted(pl.DataFrame({"subject_id": [2, 1] * 5000}))
    False
    """
    ids = frame["subject_id"].to_numpy()
    if ids.size < 2:
        return True
    breaks = int(np.count_nonzero(ids[1:] < ids[:-1]))
    return breaks <= NEARLY_SORTED * ids.size


def _packed_key(frame: pl.DataFrame,
                known: dict[str, pl.Series | None]) -> np.ndarray | None:
    """(code rank, value present, value bits, unit rank) in one uint64, or None when the
    frame cannot be packed exactly."""
    values = frame["numeric_value"].cast(pl.Float32)
    present = values.is_not_null().to_numpy()
    floats = values.fill_null(0.0).to_numpy().astype(np.float32, copy=False)
    if np.isnan(floats).any() or np.signbit(floats[floats == 0]).any():
        return None
    ranks = []
    for column in ("code", "unit"):
        distinct = known[column]
        if distinct is None:
            distinct = frame[column].drop_nulls().unique().sort()
        rank = frame[column].cast(pl.Enum(distinct)).to_physical().cast(pl.Int64) + 1
        ranks.append((rank.fill_null(0).to_numpy().astype(np.uint64), len(distinct) + 1))
    (code, n_codes), (unit, n_units) = ranks
    unit_bits, code_bits = (n_units - 1).bit_length(), (n_codes - 1).bit_length()
    if code_bits + 33 + unit_bits > 64:
        return None
    bits = floats.view(np.uint32).astype(np.uint64)
    ordered = np.where(bits >> np.uint64(31), ~bits & np.uint64(0xFFFFFFFF),
                       bits | np.uint64(0x80000000))
    value = np.where(present, ordered | np.uint64(1 << 32), np.uint64(0))
    shift = np.uint64(33 + unit_bits)
    return np.asarray((code << shift) | (value << np.uint64(unit_bits)) | unit, np.uint64)


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
