"""Writing the feature store: a regular Zarr grid, per-shard region writes, marker last.

Cohort shards have different row counts, but Zarr 3 (zarr-python 3.1) has only the regular
chunk grid, so shard boundaries cannot be chunk boundaries.  Writers must never share a
write unit (a Zarr shard of the sharding codec: writing part of one rewrites all of it), so:

* each cohort shard's Dask task writes every write unit lying wholly inside its rows — most
  of its region — straight into the arrays;
* the rows it has in units that straddle a shard boundary (at most one unit at each end)
  go to a small spill file;
* after all tasks, the driver assembles those boundary units one at a time and writes them.

Every unit is written by exactly one writer, whole, so region writes are idempotent (a
retried task writes the same bytes) and the result does not depend on the worker count.
"""

from __future__ import annotations

import math
import shutil
import warnings
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import xarray as xr
import zarr
import zarr.codecs
import zarr.errors

from cohortflow.errors import StoreError

COMPLETE_ATTR = "cohortflow_complete"
CHUNK_BYTES = 1 << 20
"""Raw bytes per chunk (a power-of-two row count, 64 to 4096 rows).  Measured with
benchmarks/bench_features.py --layouts on 277k subjects × 68 features: 4096-row chunks
(1.1 MiB) read 3× faster than 512-row chunks inside 8192-row shards (0.11 s vs 0.38 s)
and are the smallest on disk; wider tensors get fewer rows per chunk."""
UNIT_ROWS = 4096
"""Rows per write unit.  When chunks are smaller (a wide feature axis), the sharding codec
packs them into one file per unit, so the file count stays that of 4096-row units."""
ZSTD_LEVEL = 3


@dataclass(frozen=True)
class ChunkPlan:
    """Where each cohort shard's rows go along the subject axis, and the Zarr grid."""

    offsets: tuple[int, ...]
    unit_rows: int
    chunk_rows: int

    @classmethod
    def plan(cls, shard_rows: list[int], row_bytes: int, unit_rows: int = UNIT_ROWS,
             chunk_bytes: int = CHUNK_BYTES) -> ChunkPlan:
        """Chunks of about ``chunk_bytes``, write units of ``unit_rows`` but at most a
        quarter of a mean shard, so that most of each shard's region is its own.

        >>> ChunkPlan.plan([100_000, 90_000], row_bytes=4 * 68)
        ChunkPlan(offsets=(0, 100000, 190000), unit_rows=4096, chunk_rows=4096)
        >>> ChunkPlan.plan([100_000, 90_000], row_bytes=4 * 5000)
        ChunkPlan(offsets=(0, 100000, 190000), unit_rows=4096, chunk_rows=64)
        >>> ChunkPlan.plan([1000, 900, 1100], row_bytes=4 * 68)
        ChunkPlan(offsets=(0, 1000, 1900, 3000), unit_rows=250, chunk_rows=250)
        """
        offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(shard_rows)]))
        fit = max(1, chunk_bytes // max(1, row_bytes))
        chunk = min(4096, 1 << round(math.log2(fit)))  # the nearest power of two
        mean = offsets[-1] // max(1, len(shard_rows))
        unit = max(1, min(max(unit_rows, chunk), mean // 4))
        chunk = min(chunk, unit)
        return cls(offsets, unit // chunk * chunk, chunk)

    @property
    def rows(self) -> int:
        return self.offsets[-1]

    def own_units(self, shard: int) -> tuple[int, int]:
        """Row range [lo, hi) of the write units wholly inside ``shard`` (lo == hi: none).

        >>> layout = ChunkPlan((0, 5, 12, 13), unit_rows=4, chunk_rows=2)
        >>> [layout.own_units(i) for i in range(3)]
        [(0, 4), (8, 12), (12, 13)]
        """
        a, b = self.offsets[shard], self.offsets[shard + 1]
        lo = -(-a // self.unit_rows) * self.unit_rows
        hi = b if b == self.rows else b // self.unit_rows * self.unit_rows
        return (lo, hi) if lo < hi else (a, a)

    def boundary_units(self) -> list[tuple[int, int]]:
        """Row ranges of the write units no single shard owns.

        >>> ChunkPlan((0, 5, 12, 13), unit_rows=4, chunk_rows=2).boundary_units()
        [(4, 8)]
        """
        owned = [self.own_units(i) for i in range(len(self.offsets) - 1)]
        return [(r, min(r + self.unit_rows, self.rows))
                for r in range(0, self.rows, self.unit_rows)
                if not any(lo <= r < hi for lo, hi in owned)]


def encoding(layout: ChunkPlan, arrays: dict[str, tuple[int, ...]]) -> dict[str, dict[str, Any]]:
    """Zarr encodings: subject-chunked, every other axis whole, zstd, sharding codec."""
    out = {}
    for name, shape in arrays.items():
        rest = tuple(max(1, n) for n in shape[1:])
        out[name] = {
            "chunks": (layout.chunk_rows, *rest),
            "compressors": (zarr.codecs.ZstdCodec(level=ZSTD_LEVEL),),
        }
        if layout.unit_rows > layout.chunk_rows:
            out[name]["shards"] = (layout.unit_rows, *rest)
    return out


def _array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    array = group[name]
    assert isinstance(array, zarr.Array)
    return array


def write_region(partial: Path, layout: ChunkPlan, shard: int, blocks: dict[str, np.ndarray],
                 spill: Path) -> None:
    """Write the units ``shard`` owns; spill its rows in boundary units to ``spill``."""
    a = layout.offsets[shard]
    lo, hi = layout.own_units(shard)
    group = zarr.open_group(partial, mode="r+")
    if lo < hi:
        for name, block in blocks.items():
            _array(group, name)[lo:hi] = block[lo - a:hi - a]
    edges = {f"head_{n}": b[:lo - a] for n, b in blocks.items()}
    edges |= {f"tail_{n}": b[hi - a:] for n, b in blocks.items()}
    tmp = spill.with_name(f".{spill.name}.tmp.npz")
    np.savez(tmp, **edges)  # type: ignore[arg-type]
    tmp.replace(spill)


def write_boundaries(partial: Path, layout: ChunkPlan, spills: list[Path],
                     fills: dict[str, np.ndarray]) -> None:
    """Assemble each boundary unit from the spilled rows of its shards and write it."""
    group = zarr.open_group(partial, mode="r+")
    cache: dict[int, dict[str, np.ndarray]] = {}
    for r0, r1 in layout.boundary_units():
        first = bisect_right(layout.offsets, r0) - 1
        for name, fill in fills.items():
            unit = np.broadcast_to(fill, (r1 - r0, *fill.shape)).copy()
            shard = first
            while shard < len(spills) and layout.offsets[shard] < r1:
                a, b = layout.offsets[shard], layout.offsets[shard + 1]
                s0, s1 = max(a, r0), min(b, r1)
                if s0 < s1:
                    if shard not in cache:  # a shard's spill serves at most two units
                        cache = {k: v for k, v in cache.items() if k >= first}
                        cache[shard] = dict(np.load(spills[shard]))
                    lo, hi = layout.own_units(shard)
                    head = lo < hi and s1 <= lo
                    piece = (cache[shard][f"head_{name}"][s0 - a:s1 - a] if head
                             else cache[shard][f"tail_{name}"][s0 - hi:s1 - hi])
                    unit[s0 - r0:s1 - r0] = piece
                shard += 1
            _array(group, name)[r0:r1] = unit


def work_paths(out: Path) -> tuple[Path, Path, Path]:
    """The half-written store, the spill directory and the trash beside ``out``."""
    return (out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.work"),
            out.with_name(f".{out.name}.old"))


def clear(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def consolidate(path: Path) -> None:
    """Gather every node's metadata into the root ``zarr.json``, so that readers
    (``xarray.open_zarr``) open the store with one read and no warning."""
    with warnings.catch_warnings():
        # zarr-python's own layout for Zarr v3 (the spec has none yet); xarray reads it.
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part",
                                category=UserWarning)
        zarr.consolidate_metadata(path)


def finish(partial: Path, out: Path) -> None:
    """Write the completion marker last, consolidate the metadata (marker included), then
    swap the store into place.

    An old ``out`` is renamed away first, so a kill while it is deleted never leaves a
    half-deleted store that still carries a marker under the name ``out``.
    """
    _, _, trash = work_paths(out)
    if out.exists() or out.is_symlink():
        refuse_foreign(out)
    zarr.open_group(partial, mode="r+").attrs[COMPLETE_ATTR] = True
    consolidate(partial)
    clear(trash)
    if out.exists():
        out.rename(trash)
    partial.rename(out)
    clear(trash)


def _finished(path: Path) -> bool:
    try:
        return zarr.open_group(path, mode="r").attrs.get(COMPLETE_ATTR) is True
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.BaseZarrError):
        return False


def refuse_foreign(out: Path) -> None:
    """Refuse to replace ``out`` unless it is an empty directory or a finished feature
    store: a rebuild never deletes what the features step did not write."""
    ours = out.is_dir() and not out.is_symlink() and (
        _finished(out) or not [p for p in out.iterdir() if p.name != ".snakemake_timestamp"])
    if not ours:
        raise StoreError(
            f"{out}: exists and is not a feature store (no Zarr group with the attribute "
            f"{COMPLETE_ATTR}), so it is left untouched; fix: move it away, or give the "
            "study another results directory")


def open_features(path: Path) -> xr.Dataset:
    """Open a finished feature store lazily; refuse one without its completion marker.

    The same as ``xarray.open_zarr(path)``, which opens a finished store without a warning:
    its metadata is consolidated and it holds nothing but Zarr nodes.  Features are indexed
    by key, ``ds.sel(feature="CONDITION//317009|365d|count")``.  A sparse store
    (``ds.attrs["layout"] == "sparse"``, :mod:`cohortflow.features._sparse`) has no
    ``values`` array for ``open_zarr`` to find; here ``values`` is a lazy Dask view of its
    CSR arrays, dense cells computed block by block only when read (read wide selections
    with :func:`cohortflow.features.read_matrix`, which never densifies).

    >>> open_features(Path("nowhere.zarr"))
    Traceback (most recent call last):
    cohortflow.errors.StoreError: nowhere.zarr: not a finished feature store (no Zarr group \
with the attribute cohortflow_complete), so it may be half-written; fix: delete it and rerun \
the features step
    """
    path = Path(path)
    try:
        group = zarr.open_group(path, mode="r")
        complete = group.attrs.get(COMPLETE_ATTR) is True
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.BaseZarrError):
        complete = False
    if not complete:
        raise StoreError(
            f"{path}: not a finished feature store (no Zarr group with the attribute "
            f"{COMPLETE_ATTR}), so it may be half-written; fix: delete it and rerun the "
            "features step"
        )
    if group.metadata.consolidated_metadata is None:
        raise StoreError(
            f"{path}: a feature store without consolidated metadata (written by an older "
            "cohortflow); fix: delete it and rerun the features step")
    ds = cast(xr.Dataset, xr.open_zarr(path, consolidated=True))  # open_zarr: unannotated
    if ds.attrs.get("layout") == "sparse":
        from cohortflow.features._sparse import dense_view

        ds = ds.assign(values=(("subject", "feature"), dense_view(path)))
    return ds
