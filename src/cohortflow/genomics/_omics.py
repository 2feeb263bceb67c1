"""Omics matrices (samples × features: expression, methylation, proteomics, metabolite
levels) read from Zarr and joined to persons through a linkage table.

Two layouts, read with zarr directly (no anndata dependency):

* **plain**: a Zarr group holding ``values`` (2-D, numeric, samples × features),
  ``sample_id`` (1-D strings, one per row) and ``feature_id`` (1-D strings, one per
  column); it is what ``xarray.Dataset({"values": (("samples", "features"), x)},
  coords={"sample_id": ("samples", s), "feature_id": ("features", f)}).to_zarr(path)``
  writes.
* **AnnData** (the group ``anndata.AnnData.write_zarr`` writes, root attribute
  ``encoding-type: anndata``): samples are the ``obs`` index, features the ``var`` index
  (each a dataframe group whose ``_index`` attribute names its index array), values ``X``
  (or ``layers/<layer>``), dense (``encoding-type: array``) or sparse CSR
  (``encoding-type: csr_matrix``: ``data``, ``indices``, ``indptr``, ``shape``; absent
  entries are 0).  CSC is refused (its rows are scattered over every chunk).

API (wired into features by the workflow later)::

    matrix = open_omics(path, layer=None)         # checks the layout, reads the ids only
    linkage = read_linkage(linkage_path)            # sample_id -> person_id, one-to-one
    block = omics_block(matrix, linkage, persons, features=None, where=linkage_path)
    block.values    # float64, len(persons) × len(features); NaN rows for persons without
    block.missing   # a sample, flagged True here
    block.persons, block.features
    block.to_xarray()  # DataArray (person, feature) with a ``missing`` coordinate

Only the chunks holding the requested persons' rows (and the requested features'
columns, for a dense matrix) are read: a person × feature block for a cohort costs what
the cohort's rows cost, not what the store costs.  Every sample of the matrix must be in
the linkage table (as for a VCF), so a wrong table fails instead of linking nobody.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import xarray as xr
import zarr

from cohortflow.genomics._errors import GenomicsError
from cohortflow.genomics._linkage import link_samples

_FIX = ("fix: give a Zarr group with values (samples × features), sample_id and "
        "feature_id arrays, or an AnnData store (`adata.write_zarr(path)`)")


@dataclass(frozen=True)
class OmicsMatrix:
    """An opened omics matrix: where it is, its layout, its sample and feature ids (in
    store order) and the Zarr node(s) holding the values, read lazily."""

    path: Path
    layout: str  # "plain", "anndata dense" or "anndata csr"
    samples: npt.NDArray[np.str_]
    features: npt.NDArray[np.str_]
    values: Any  # zarr.Array (dense) or zarr.Group (CSR: data, indices, indptr)

    @property
    def shape(self) -> tuple[int, int]:
        """(samples, features)."""
        return len(self.samples), len(self.features)


@dataclass(frozen=True)
class OmicsBlock:
    """The values of ``features`` for ``persons`` (in the order asked): NaN rows and
    ``missing`` True for persons without a sample."""

    persons: npt.NDArray[np.int64]
    features: npt.NDArray[np.str_]
    values: npt.NDArray[np.float64]
    missing: npt.NDArray[np.bool_]

    def to_xarray(self) -> xr.DataArray:
        """The block as a DataArray (person, feature) with a ``missing`` coordinate."""
        return xr.DataArray(self.values, dims=("person", "feature"),
                            coords={"person_id": ("person", self.persons),
                                    "feature_id": ("feature", self.features),
                                    "missing": ("person", self.missing)},
                            name="omics")


def _strings(values: Any) -> npt.NDArray[np.str_]:
    """Ids as a numpy unicode array (zarr gives object, bytes or StringDType arrays).

    >>> _strings(np.array([b"a", b"bc"], dtype=object)).tolist()
    ['a', 'bc']
    """
    array = np.asarray(values)
    if array.dtype.kind != "U":
        array = np.array([v.decode() if isinstance(v, bytes) else str(v)
                          for v in array.tolist()], dtype=str)
    return array.astype(str)


def _ids(node: Any, path: Path, what: str) -> npt.NDArray[np.str_]:
    if not isinstance(node, zarr.Array) or node.ndim != 1:
        raise GenomicsError(f"{path}: {what}: not a 1-D array of ids; {_FIX}")
    ids = _strings(node[:])
    seen, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise GenomicsError(f"{path}: {what}: {str(seen[counts > 1][0])!r} listed "
                            f"{int(counts[counts > 1][0])} times ({int((counts > 1).sum())} id(s) "
                            "repeated); fix: keep one row per sample and one column per "
                            "feature")
    return ids


def _index(group: Any, path: Path, name: str) -> npt.NDArray[np.str_]:
    """The index of an AnnData dataframe group (``obs`` or ``var``)."""
    if not isinstance(group, zarr.Group):
        raise GenomicsError(f"{path}: {name}: missing; an AnnData store has obs and var "
                            f"groups; {_FIX}")
    key = str(group.attrs.get("_index", "_index"))
    if key not in group:
        raise GenomicsError(f"{path}: {name}: no index array {key!r}; {_FIX}")
    return _ids(group[key], path, f"{name}/{key}")


def _numeric(array: Any, path: Path, what: str) -> None:
    if np.dtype(array.dtype).kind not in "biuf":
        raise GenomicsError(f"{path}: {what}: dtype {array.dtype} is not numeric; fix: "
                            "store the values as numbers (float32/float64/int)")


def _anndata(root: zarr.Group, path: Path, layer: str | None) -> OmicsMatrix:
    samples, features = _index(root.get("obs"), path, "obs"), _index(root.get("var"), path,
                                                                      "var")
    name = "X" if layer is None else f"layers/{layer}"
    node = root.get(name)
    if node is None:
        raise GenomicsError(f"{path}: {name}: missing; fix: name a layer the store has "
                            "or leave layer unset for X")
    kind = str(node.attrs.get("encoding-type", "array"))
    shape = (len(samples), len(features))
    if isinstance(node, zarr.Array) and kind == "array":
        if node.shape != shape:
            raise GenomicsError(f"{path}: {name}: shape {node.shape} is not obs × var "
                                f"{shape}; {_FIX}")
        _numeric(node, path, name)
        return OmicsMatrix(path, "anndata dense", samples, features, node)
    if kind == "csr_matrix" and isinstance(node, zarr.Group):
        parts = [p for p in ("data", "indices", "indptr") if p not in node]
        if parts:
            raise GenomicsError(f"{path}: {name}: CSR matrix without {', '.join(parts)}; "
                                f"{_FIX}")
        declared = node.attrs.get("shape")
        indptr = node["indptr"]
        if (not isinstance(declared, list | tuple) or tuple(declared) != shape
                or not isinstance(indptr, zarr.Array) or indptr.shape != (shape[0] + 1,)):
            raise GenomicsError(f"{path}: {name}: CSR shape {node.attrs.get('shape')} or "
                                f"indptr length does not match obs × var {shape}; {_FIX}")
        _numeric(node["data"], path, f"{name}/data")
        return OmicsMatrix(path, "anndata csr", samples, features, node)
    raise GenomicsError(f"{path}: {name}: encoding {kind!r} is not read (dense arrays and "
                        "csr_matrix are); fix: store it as CSR (`adata.X = adata.X.tocsr()`) "
                        "or dense")


def open_omics(path: Path, layer: str | None = None) -> OmicsMatrix:
    """The omics matrix at ``path`` (plain or AnnData layout, see the module docstring),
    after checking its ids and shape; only the id arrays are read.

    >>> open_omics(Path("/nowhere.zarr"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cohortflow.errors.GenomicsError: /nowhere.zarr: no Zarr store here; fix: give ...
    """
    path = Path(path)
    if not path.is_dir():
        raise GenomicsError(f"{path}: no Zarr store here; {_FIX}")
    try:
        root = zarr.open_group(path, mode="r")
        if root.attrs.get("encoding-type") == "anndata":
            return _anndata(root, path, layer)
        if layer is not None:
            raise GenomicsError(f"{path}: layer {layer!r}: only AnnData stores have layers; "
                                "fix: leave layer unset for a plain matrix")
        missing = [n for n in ("values", "sample_id", "feature_id") if n not in root]
        if missing:
            raise GenomicsError(f"{path}: not an omics matrix: no {', '.join(missing)} "
                                f"array(s) and no AnnData encoding; {_FIX}")
        values = root["values"]
        samples = _ids(root["sample_id"], path, "sample_id")
        features = _ids(root["feature_id"], path, "feature_id")
        if not isinstance(values, zarr.Array) or values.shape != (len(samples),
                                                                   len(features)):
            shape = getattr(values, "shape", None)
            raise GenomicsError(f"{path}: values: shape {shape} is not sample_id × "
                                f"feature_id ({len(samples)}, {len(features)}); {_FIX}")
        _numeric(values, path, "values")
        return OmicsMatrix(path, "plain", samples, features, values)
    except GenomicsError:
        raise
    except Exception as e:  # zarr and the codecs raise many kinds for a damaged store
        raise GenomicsError(f"{path}: unreadable omics matrix ({type(e).__name__}: {e}); "
                            f"{_FIX}") from None


def _spans(starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], gap: int
           ) -> list[tuple[int, int]]:
    """Sorted ``[start, end)`` ranges merged where less than ``gap`` apart, so each chunk
    of a CSR data array is read once, not once per row.

    >>> _spans(np.array([0, 5, 40]), np.array([3, 9, 44]), gap=10)
    [(0, 9), (40, 44)]
    """
    out: list[tuple[int, int]] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if out and s - out[-1][1] < gap:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _csr_rows(group: Any, rows: npt.NDArray[np.int64], columns: npt.NDArray[np.int64],
              n_features: int) -> npt.NDArray[np.float64]:
    """Rows ``rows`` (sorted, unique) of a CSR matrix, columns ``columns``, dense."""
    out = np.zeros((len(rows), len(columns)))
    if not len(rows):
        return out
    indptr = np.asarray(group["indptr"][:], dtype=np.int64)
    starts, ends = indptr[rows], indptr[rows + 1]
    where = np.full(n_features, -1, dtype=np.int64)
    where[columns] = np.arange(len(columns))
    data, indices = group["data"], group["indices"]
    gap = int(data.chunks[0])
    for lo, hi in _spans(starts, ends, gap):
        if hi <= lo:
            continue
        values = np.asarray(data[lo:hi], dtype=np.float64)
        cols = np.asarray(indices[lo:hi], dtype=np.int64)
        inside = np.flatnonzero((starts >= lo) & (ends <= hi))
        for k in inside.tolist():
            a, b = int(starts[k]) - lo, int(ends[k]) - lo
            target = where[cols[a:b]]
            keep = target >= 0
            out[k, target[keep]] = values[a:b][keep]
    return out


def omics_block(matrix: OmicsMatrix, linkage: pl.DataFrame, persons: Sequence[int],
                features: Sequence[str] | None = None, where: Path | None = None
                ) -> OmicsBlock:
    """The values of ``features`` (default: all, in store order) for ``persons`` (in the
    order given, repeats allowed), reading only the chunks of their samples' rows;
    ``linkage`` is :func:`read_linkage`'s table (``where``: its file, for messages)."""
    linked = link_samples(linkage, matrix.samples.tolist(), where or matrix.path,
                          what="sample(s) of the omics matrix",
                          drop=f"remove them from {matrix.path}")
    wanted = np.asarray(persons, dtype=np.int64)
    if features is None:
        columns = np.arange(len(matrix.features), dtype=np.int64)
    else:
        position = {f: i for i, f in enumerate(matrix.features.tolist())}
        unknown = [f for f in features if f not in position]
        if unknown:
            raise GenomicsError(f"{matrix.path}: feature_id: {len(unknown)} requested "
                                f"feature(s) not in the matrix, e.g. {unknown[0]!r}; fix: "
                                "request features the matrix has")
        columns = np.array([position[f] for f in features], dtype=np.int64)
    row_of = dict(zip(linked["person_id"].to_list(), range(linked.height), strict=True))
    sample_row = np.array([row_of.get(int(p), -1) for p in wanted.tolist()], dtype=np.int64)
    missing = sample_row < 0
    rows, back = np.unique(sample_row[~missing], return_inverse=True)
    try:
        if matrix.layout == "anndata csr":
            read = _csr_rows(matrix.values, rows, columns, len(matrix.features))
        elif len(rows):
            read = np.asarray(matrix.values.get_orthogonal_selection((rows, columns)),
                              dtype=np.float64)
        else:
            read = np.zeros((0, len(columns)))
    except Exception as e:  # a damaged chunk of the rows asked for
        raise GenomicsError(f"{matrix.path}: unreadable omics matrix chunk ({type(e).__name__}"
                            f": {e}); {_FIX}") from None
    values = np.full((len(wanted), len(columns)), np.nan)
    values[~missing] = read[back.reshape(-1)]
    return OmicsBlock(wanted, matrix.features[columns], values, missing)
