"""The sparse layout of the ``values`` tensor: per-shard CSR arrays in the same Zarr store.

A wide tensor (10^4–10^5 features) of which under 1% of the cells are set is mostly fill,
so it is stored as what is set.  Under the store's root, beside the same ``subject``,
``feature``, ``code``, ``window`` and ``aggregation`` coordinates a dense store has, the
group :data:`SPARSE_GROUP` holds one group per cohort shard (``0``, ``1``, ... in the
shard order of the ``shards`` attribute) with three 1-D arrays, the shard's rows in CSR form:

* ``indptr`` (int64, rows + 1): row ``r``'s entries are ``indptr[r]:indptr[r + 1]``;
* ``indices`` (int32): each entry's feature column, increasing within a row;
* ``data`` (float32): each entry's value.

Each shard's arrays are written by that shard's task alone (one writer per array), and the
whole store is finished as a dense one is (:func:`cohortflow.features.finish`: marker last,
then renamed into place), so a killed step leaves nothing a rerun trusts.

**Missing is not zero.**  An entry is a cell whose value differs from its column's *fill*:
0 for ``count``, ``present`` and ``value_count``, NaN for every other aggregation (a subject
with no value has no mean).  A cell not stored holds its column's fill, so the dense tensor
is ``fill`` broadcast over the rows with the entries written in, bit for bit the dense
layout's ``values``.  An explicit 0.0 is a stored entry of a NaN-filled column (a mean of
0), never dropped; a stored NaN never occurs.  :func:`read_matrix` returns the entries as a
``scipy.sparse.csr_matrix``, in which, as in SciPy, an entry not stored reads 0: pair it with
:func:`fill_values` (or :func:`to_dense` for a small piece) wherever NaN-filled columns are
read.

The layout is the study's ``features.layout``; ``auto`` (the default) applies
:data:`AUTO_RULE` to the cells the step computed.  The store's attributes record the
request, the rule, the choice, the stored cells and the fill fraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import scipy.sparse as sp
import zarr
import zarr.codecs

from cohortflow.errors import StoreError
from cohortflow.features._aggregate import ZERO_FILLED

SPARSE_GROUP = "values_csr"
"""The group of the per-shard CSR arrays of a sparse store."""
AUTO_MIN_FEATURES = 2048
AUTO_MAX_FILL = 0.05
AUTO_RULE = (f"sparse when the feature axis has at least {AUTO_MIN_FEATURES} features and at "
             f"most {AUTO_MAX_FILL:.0%} of the subject x feature cells differ from their "
             "column's fill (0 for count/present/value_count, NaN otherwise), else dense")
"""``features.layout: auto``.  A CSR entry costs 8 bytes (value and column) against 4 for a
dense cell, and zstd shrinks a dense tensor's runs of fill, so only a tensor well under
half filled gains; below a few thousand columns a dense block is small whatever its fill,
and every tool reads a dense Zarr array, so narrow tensors stay dense."""
ENTRY_CHUNK = 1 << 20
"""Entries per Zarr chunk of ``indices`` and ``data`` (4 MiB raw each)."""
BLOCK_COLUMNS = 4096
"""Columns per block of the lazy dense view :func:`dense_view` gives a sparse store."""


def fill_of(aggregations: Sequence[str]) -> np.ndarray:
    """The value of each column where a subject has nothing: 0 for counts, else NaN.

    >>> fill_of(["count", "mean", "present"]).tolist()
    [0.0, nan, 0.0]
    """
    return np.array([0.0 if a in ZERO_FILLED else np.nan for a in aggregations],
                    dtype=np.float32)


def choose_layout(requested: str, rows: int, n_features: int, cells: int) -> tuple[str, float]:
    """The layout of a tensor of ``rows`` x ``n_features`` with ``cells`` cells differing
    from their fill, and its fill fraction: ``requested`` unless it is ``auto``, then
    :data:`AUTO_RULE`.

    >>> choose_layout("auto", 1000, 20_000, 150_000)
    ('sparse', 0.0075)
    >>> choose_layout("auto", 1000, 150, 15_000)
    ('dense', 0.1)
    >>> choose_layout("sparse", 10, 3, 30)
    ('sparse', 1.0)
    """
    total = rows * n_features
    fill = cells / total if total else 0.0
    if requested != "auto":
        return requested, fill
    sparse = n_features >= AUTO_MIN_FEATURES and fill <= AUTO_MAX_FILL
    return ("sparse" if sparse else "dense"), fill


def csr_block(fill: np.ndarray, placed: pl.DataFrame, n_rows: int) -> sp.csr_matrix:
    """One shard's (rows x features) entries in CSR form from its placed cells (``row``,
    ``col``, ``value``): the cells differing from their column's ``fill``, a repeated cell
    taking its last value, as the dense block does.

    >>> placed = pl.DataFrame({"row": [1, 0, 1], "col": [1, 0, 0], "value": [0.0, 3.0, 2.0]},
    ...                       schema={"row": pl.Int64, "col": pl.Int64, "value": pl.Float32})
    >>> m = csr_block(np.array([0.0, np.nan], dtype=np.float32), placed, 3)
    >>> m.indptr.tolist(), m.indices.tolist(), m.data.tolist()
    ([0, 1, 3, 3], [0, 0, 1], [3.0, 2.0, 0.0])
    """
    n_cols = len(fill)
    cells = placed.select("row", "col", "value").unique(subset=["row", "col"], keep="last",
                                                        maintain_order=True)
    values = cells["value"].to_numpy().astype(np.float32, copy=False)
    cols = cells["col"].to_numpy().astype(np.int64, copy=False)
    fills = fill[cols] if cols.size else np.zeros(0, dtype=np.float32)
    keep = ~(np.isnan(values) if values.size else np.zeros(0, bool))
    keep &= ~((fills == 0) & (values == 0))
    rows = cells["row"].to_numpy().astype(np.int64, copy=False)[keep]
    cols, values = cols[keep], values[keep]
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix((values, cols.astype(np.int32), indptr), shape=(n_rows, n_cols))


def _entries_array(group: zarr.Group, name: str, data: np.ndarray, chunk: int) -> None:
    group.create_array(name, data=np.ascontiguousarray(data),
                       chunks=(max(1, min(len(data), chunk)),),
                       compressors=(zarr.codecs.ZstdCodec(level=3),), overwrite=True)


def create_group(partial: Path, n_rows: int, n_features: int, offsets: Sequence[int]) -> None:
    """The (empty) group of the per-shard CSR arrays, with the tensor's shape and the
    shards' first rows in its attributes."""
    root = zarr.open_group(partial, mode="r+")
    root.create_group(SPARSE_GROUP, overwrite=True, attributes={
        "format": "csr", "shape": [n_rows, n_features],
        "shard_offsets": [int(o) for o in offsets], "dtype": "float32",
        "fill": "0 for count, present and value_count; NaN otherwise (cells not stored)"})


def write_shard(partial: Path, shard: int, block: sp.csr_matrix) -> None:
    """Write one cohort shard's CSR arrays into their own group (this task alone writes
    them; a retried task writes the same bytes)."""
    group = zarr.open_group(partial / SPARSE_GROUP / str(shard), mode="w", zarr_format=3)
    _entries_array(group, "indptr", block.indptr.astype(np.int64), 1 << 16)
    _entries_array(group, "indices", block.indices.astype(np.int32), ENTRY_CHUNK)
    _entries_array(group, "data", block.data.astype(np.float32), ENTRY_CHUNK)


def _open(path: Path) -> zarr.Group:
    from cohortflow.features._store import open_features  # the marker check

    open_features(path)  # refuses a store without its completion marker
    return zarr.open_group(path, mode="r")


def _array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    node = group[name]
    assert isinstance(node, zarr.Array)
    return node


def _read(group: zarr.Group, name: str, a: int | None = None, b: int | None = None
          ) -> np.ndarray:
    return np.asarray(_array(group, name)[a:b])


def _offsets(root: zarr.Group) -> list[int]:
    return [int(o) for o in cast(list[int], root.attrs["shard_offsets"])]


def layout_of(path: Path) -> str:
    """``dense`` or ``sparse``: how a finished store holds its ``values``."""
    return str(zarr.open_group(Path(path), mode="r").attrs.get("layout", "dense"))


def fill_values(path: Path) -> np.ndarray:
    """The fill of each feature column of the store at ``path`` (0 or NaN, float32)."""
    root = zarr.open_group(Path(path), mode="r")
    return fill_of([str(a) for a in _read(root, "aggregation")])


def shard_matrix(path: Path, shard: int) -> sp.csr_matrix:
    """One cohort shard's rows of a sparse store, as stored."""
    root = zarr.open_group(Path(path), mode="r")
    attrs = cast(dict[str, Any], root[SPARSE_GROUP].attrs.asdict())
    offsets = attrs["shard_offsets"]
    group = cast(zarr.Group, root[f"{SPARSE_GROUP}/{shard}"])
    n = offsets[shard + 1] - offsets[shard]
    return sp.csr_matrix((_read(group, "data"), _read(group, "indices"),
                          _read(group, "indptr")), shape=(n, attrs["shape"][1]))


def _dense_rows(root: zarr.Group, a: int, b: int, fill: np.ndarray) -> sp.csr_matrix:
    """Rows [a, b) of a dense store's ``values`` as entries (cells differing from fill)."""
    block = _read(root, "values", a, b)
    stored = ~np.isnan(block) & (block != fill[None, :]) if block.size else np.zeros(
        block.shape, bool)
    rows, cols = np.nonzero(stored)
    indptr = np.zeros(b - a + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=b - a), out=indptr[1:])
    return sp.csr_matrix((block[rows, cols], cols.astype(np.int32), indptr),
                         shape=block.shape)


def read_matrix(path: Path, rows: np.ndarray | Sequence[int] | None = None,
                columns: np.ndarray | Sequence[int] | None = None) -> sp.csr_matrix:
    """The stored entries of a finished feature store's ``values`` (either layout) as a
    float32 ``scipy.sparse.csr_matrix``: ``rows`` (tensor rows, in that order, repeats
    allowed; None: every row) x ``columns`` (feature positions, in that order; None: every
    feature).

    Read one cohort shard at a time (a dense store: its rows of the Zarr array), so memory
    holds the result and one shard, never the dense tensor.  An entry is a cell differing
    from its column's fill (:func:`fill_values`): a cell not stored is 0 in a count column
    and *missing* (NaN) in a value column, as the module docstring says;
    ``to_dense(m, fill_values(path)[columns])`` gives the dense cells of a small piece.
    """
    path = Path(path)
    root = _open(path)
    offsets = _offsets(root)
    n_rows, n_cols = offsets[-1], int(_array(root, "feature").shape[0])
    want = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    cols = None if columns is None else np.asarray(columns, dtype=np.int64)
    if want.size and (want.min() < 0 or want.max() >= n_rows):
        raise StoreError(f"{path}: rows outside the tensor's {n_rows} rows; fix: give tensor "
                         "rows (an analysis's labels 'row' column)")
    sparse = layout_of(path) == "sparse"
    fill = None if sparse else fill_of([str(a) for a in _read(root, "aggregation")])
    shard_of = np.searchsorted(np.asarray(offsets), want, side="right") - 1
    pieces, order = [], []
    for shard in np.unique(shard_of):
        mine = np.flatnonzero(shard_of == shard)
        a, b = offsets[shard], offsets[shard + 1]
        if sparse:
            block = shard_matrix(path, int(shard))
        else:
            assert fill is not None
            block = _dense_rows(root, a, b, fill)
        block = block[want[mine] - a]
        pieces.append(block if cols is None else block[:, cols])
        order.append(mine)
    width = n_cols if cols is None else len(cols)
    if not pieces:
        return sp.csr_matrix((len(want), width), dtype=np.float32)
    stacked = cast(sp.csr_matrix, sp.vstack(pieces, format="csr"))
    del pieces  # memory holds the result and at most one copy of it
    position = np.empty(len(want), dtype=np.int64)
    position[np.concatenate(order)] = np.arange(len(want))
    in_order = bool((position == np.arange(len(want))).all())
    out = stacked if in_order else cast(sp.csr_matrix, stacked[position])
    del stacked
    out.sort_indices()
    return out


def to_dense(matrix: sp.csr_matrix, fill: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """A (small) piece of the tensor as dense cells: each column's ``fill`` where nothing
    is stored, the entries elsewhere — the dense layout's values, bit for bit.

    >>> m = sp.csr_matrix(([0.0, 2.0], [1, 0], [0, 1, 2]), shape=(2, 2))
    >>> to_dense(m, np.array([0.0, np.nan], dtype=np.float32)).tolist()
    [[0.0, 0.0], [2.0, nan]]
    """
    out = np.broadcast_to(np.asarray(fill, dtype=dtype), matrix.shape).copy()
    coo = matrix.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


def _dense_piece(path: Path, shard: int, c0: int, c1: int, fill: np.ndarray) -> np.ndarray:
    return to_dense(shard_matrix(path, shard)[:, c0:c1], fill[c0:c1])


def dense_view(path: Path) -> Any:
    """A sparse store's ``values`` as a lazy Dask array of dense cells (fill where nothing
    is stored): one block per cohort shard and :data:`BLOCK_COLUMNS` columns, each computed
    from that shard's CSR arrays only when read, so ``ds["values"].isel(...)`` reads what
    it selects; computing all of it densifies the whole tensor (use :func:`read_matrix`)."""
    import dask.array as da
    from dask.delayed import delayed

    from_delayed = cast(Any, da.from_delayed)

    path = Path(path)
    root = zarr.open_group(path, mode="r")
    offsets = _offsets(root)
    fill = fill_values(path)
    n_cols = len(fill)
    edges = [*range(0, n_cols, BLOCK_COLUMNS), n_cols] if n_cols else [0, 0]
    piece = delayed(_dense_piece, pure=True)
    rows = []
    for shard in range(len(offsets) - 1):
        n = offsets[shard + 1] - offsets[shard]
        rows.append([from_delayed(piece(path, shard, c0, c1, fill), shape=(n, c1 - c0),
                                     dtype=np.float32)
                     for c0, c1 in pairwise(edges)])
    if not rows:
        return da.zeros((0, n_cols), dtype=np.float32)
    return cast(Any, da).block(rows)
