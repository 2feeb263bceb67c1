"""Chunk layouts and dense vs sparse storage of one finished feature tensor.

Rewrites ``values`` of a store in several layouts and prints disk size, write and read
seconds (a full read into a dense NumPy array; for sparse, read + densify).  Sparse is COO:
(row, col, value) of every cell that differs from its column's fill value, zstd-compressed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs

ZSTD = (zarr.codecs.ZstdCodec(level=3),)


def _size(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def dense(x: np.ndarray, root: Path, chunk: int, shard: int | None) -> tuple[float, float, float]:
    path = root / f"dense_{chunk}_{shard}"
    t = time.perf_counter()
    arr = zarr.create_array(path, shape=x.shape, dtype=x.dtype, chunks=(chunk, x.shape[1]),
                            shards=(shard, x.shape[1]) if shard else None, compressors=ZSTD,
                            fill_value=np.nan, zarr_format=3)
    arr[:] = x
    write = time.perf_counter() - t
    t = time.perf_counter()
    zarr.open_array(path, mode="r")[:]
    return _size(path), write, time.perf_counter() - t


def sparse(x: np.ndarray, fill: np.ndarray, root: Path) -> tuple[float, float, float]:
    path = root / "sparse"
    t = time.perf_counter()
    differs = ~((x == fill) | (np.isnan(x) & np.isnan(fill)))
    rows, cols = np.nonzero(differs)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    for name, data in (("row", rows.astype(np.int32)), ("col", cols.astype(np.int32)),
                       ("value", x[rows, cols])):
        group.create_array(name, shape=data.shape, dtype=data.dtype,
                           chunks=(1 << 20,), compressors=ZSTD)[:] = data
    write = time.perf_counter() - t
    t = time.perf_counter()
    g = zarr.open_group(path, mode="r")
    out = np.broadcast_to(fill, x.shape).copy()
    out[g["row"][:], g["col"][:]] = g["value"][:]
    read = time.perf_counter() - t
    assert np.array_equal(out, x, equal_nan=True)
    return _size(path), write, read


def compare(x: np.ndarray, fill: np.ndarray, what: str) -> None:
    density = float((~((x == fill) | np.isnan(x))).mean())
    print(f"\n{what}: {x.shape[0]:,} subjects × {x.shape[1]} features, "
          f"{x.nbytes / 2**20:.1f} MiB dense, {density:.1%} of cells hold a value")
    print(f"{'layout':<36} {'disk MiB':>9} {'write s':>8} {'read s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for chunk, shard in ((512, 8192), (512, None), (4096, None), (128, 8192),
                             (2048, 32768)):
            label = f"dense, chunk {chunk} rows" + (f", shard {shard}" if shard else "")
            size, write, read = dense(x, root, chunk, shard)
            print(f"{label:<36} {size:>9.2f} {write:>8.2f} {read:>7.2f}")
        size, write, read = sparse(x, fill, root)
        print(f"{'sparse COO (row, col, value)':<36} {size:>9.2f} {write:>8.2f} {read:>7.2f}")
        shutil.rmtree(root, ignore_errors=True)


def main(store: Path) -> None:
    group = zarr.open_group(store, mode="r")
    x = np.asarray(group["values"][:])
    aggregation = np.asarray(group["aggregation"][:])
    fill = np.array([0.0 if a in ("count", "present") else np.nan for a in aggregation],
                    dtype=np.float32)
    compare(x, fill, f"all features of {store.name}")
    per_column = (~((x == fill) | np.isnan(x))).mean(axis=0)
    low = per_column < 0.05
    if low.any():
        compare(x[:, low], fill[low], "its low-density features (< 5% of cells hold a value)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
