"""Omics matrices (genomics.open_omics / omics_block) on tiny stores written here with zarr:
the plain layout (as xarray writes it) and AnnData's (dense X and CSR X, as
``AnnData.write_zarr`` lays them out), joined to persons through a linkage table; persons
without a sample get a NaN row and a missing flag; only the chunks of the persons asked
for are read (the others are garbage and never touched); bad stores and requests fail with
one message naming the store, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xarray as xr
import zarr

from cohortflow import genomics
from cohortflow.genomics import GenomicsError

SAMPLES = ["S4", "S1", "S6", "S2", "S5", "S3"]  # store order is not sample order
FEATURES = ["GENE_A", "GENE_B", "GENE_C", "GENE_D"]
# sample Sk is person 100 + k; row i, column j holds 10·i + j (+ 0.5), a few zeros (sparse)
VALUES = np.array([[10 * i + j + 0.5 if (i + j) % 3 else 0.0 for j in range(4)]
                   for i in range(6)])
PERSONS = [103, 999, 101, 103, 106]  # a repeat and a person without a sample


@pytest.fixture
def linkage(tmp_path: Path) -> pl.DataFrame:
    path = tmp_path / "omics_linkage.csv"
    path.write_text("sample_id,person_id\n" + "".join(f"S{k},{100 + k}\n" for k in range(1, 7)))
    return genomics.read_linkage(path)


def expected(persons: list[int], columns: list[int]) -> np.ndarray:
    out = np.full((len(persons), len(columns)), np.nan)
    for r, p in enumerate(persons):
        if f"S{p - 100}" in SAMPLES:
            out[r] = VALUES[SAMPLES.index(f"S{p - 100}"), columns]
    return out


def plain(path: Path) -> Path:
    """The plain layout, written the way the module docstring says xarray writes it."""
    xr.Dataset({"values": (("samples", "features"), VALUES)},
               coords={"sample_id": ("samples", SAMPLES),
                       "feature_id": ("features", FEATURES)}).to_zarr(
        path, zarr_format=2, consolidated=False,
        encoding={"values": {"chunks": (2, 2)}})
    return path


def _dataframe(group: zarr.Group, name: str, ids: list[str]) -> None:
    frame = group.create_group(name)
    frame.attrs.update({"_index": "_index", "column-order": [], "encoding-type": "dataframe",
                        "encoding-version": "0.2.0"})
    index = frame.create_array("_index", shape=(len(ids),), dtype=str, chunks=(len(ids),))
    index[:] = np.array(ids)
    index.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})


def anndata(path: Path, sparse: bool, zarr_format: int = 2, chunk: int = 3) -> Path:
    """AnnData's on-disk layout (anndata's "AnnData on-disk format" spec, 0.1.0)."""
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    _dataframe(root, "obs", SAMPLES)
    _dataframe(root, "var", FEATURES)
    if not sparse:
        x = root.create_array("X", shape=VALUES.shape, dtype="f4", chunks=(2, 4))
        x[:] = VALUES
        x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        return path
    rows, cols = np.nonzero(VALUES)
    x = root.create_group("X")
    x.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                    "shape": list(VALUES.shape)})
    for name, data in (("data", VALUES[rows, cols].astype("f4")),
                       ("indices", cols.astype("i4")),
                       ("indptr", np.r_[0, np.cumsum(np.count_nonzero(VALUES, axis=1))]
                        .astype("i8"))):
        a = x.create_array(name, shape=data.shape, dtype=data.dtype,
                           chunks=(chunk if name != "indptr" else len(data),))
        a[:] = data
    return path


@pytest.mark.parametrize("layout", ["plain", "dense", "csr", "csr v3"])
def test_a_block_of_persons_by_features(tmp_path: Path, linkage: pl.DataFrame,
                                        layout: str) -> None:
    path = tmp_path / "m.zarr"
    if layout == "plain":
        plain(path)
    else:
        anndata(path, sparse=layout != "dense", zarr_format=3 if "v3" in layout else 2)
    matrix = genomics.open_omics(path)
    assert matrix.shape == (6, 4) and matrix.samples.tolist() == SAMPLES
    block = genomics.omics_block(matrix, linkage, PERSONS)
    assert block.persons.tolist() == PERSONS and block.features.tolist() == FEATURES
    np.testing.assert_array_equal(block.values, expected(PERSONS, [0, 1, 2, 3]))
    assert block.missing.tolist() == [False, True, False, False, False]
    some = genomics.omics_block(matrix, linkage, [106, 102], features=["GENE_D", "GENE_A"])
    np.testing.assert_array_equal(some.values, expected([106, 102], [3, 0]))
    array = block.to_xarray()
    assert array.dims == ("person", "feature")
    assert int(array.isel(feature=1).isnull().sum()) == 1  # person 999's row only
    assert array["missing"].values.tolist() == block.missing.tolist()
    nobody = genomics.omics_block(matrix, linkage, [999])
    assert nobody.missing.tolist() == [True] and np.isnan(nobody.values).all()


def _garbage(folder: Path, keep: set[str]) -> int:
    """Overwrite every chunk file under ``folder`` except ``keep`` with bytes no codec
    reads; returns how many."""
    n = 0
    for chunk in folder.iterdir():
        if chunk.name[0] != "." and chunk.name not in keep:
            chunk.write_bytes(b"not a chunk")
            n += 1
    return n


def test_only_the_chunks_of_the_persons_asked_for_are_read(tmp_path: Path,
                                                           linkage: pl.DataFrame) -> None:
    path = plain(tmp_path / "m.zarr")  # values chunked 2 × 2: rows {0,1} {2,3} {4,5}
    # persons 104 and 101 are samples S4, S1: rows 0 and 1, features C, D: chunk 0.1
    assert _garbage(path / "values", keep={"0.1"}) == 5
    block = genomics.omics_block(genomics.open_omics(path), linkage, [101, 104],
                                 features=["GENE_C", "GENE_D"])
    np.testing.assert_array_equal(block.values, expected([101, 104], [2, 3]))
    with pytest.raises(GenomicsError, match=r"m\.zarr: unreadable omics matrix chunk .*fix:"):
        genomics.omics_block(genomics.open_omics(path), linkage, [106])

    sparse = anndata(tmp_path / "s.zarr", sparse=True, chunk=2)
    # S4 (row 0) holds CSR entries 0-1 (its zeros are not stored): data/indices chunk 0
    assert _garbage(sparse / "X" / "data", keep={"0"}) > 2
    assert _garbage(sparse / "X" / "indices", keep={"0"}) > 2
    block = genomics.omics_block(genomics.open_omics(sparse), linkage, [104])
    np.testing.assert_array_equal(block.values, expected([104], [0, 1, 2, 3]))
    with pytest.raises(GenomicsError, match=r"s\.zarr: unreadable omics matrix chunk"):
        genomics.omics_block(genomics.open_omics(sparse), linkage, [103])


def test_a_sample_without_a_person_and_an_unknown_feature(tmp_path: Path) -> None:
    matrix = genomics.open_omics(plain(tmp_path / "m.zarr"))
    path = tmp_path / "partial.csv"
    path.write_text("sample_id,person_id\nS1,101\nS2,102\n")
    with pytest.raises(GenomicsError, match=r"partial\.csv: sample_id: 4 sample\(s\) of the "
                                            r"omics matrix not in the linkage table: S4, S6, "
                                            r"S5 \(4 in all\); fix: add a row"):
        genomics.omics_block(matrix, genomics.read_linkage(path), [101], where=path)
    full = tmp_path / "full.csv"
    full.write_text("sample_id,person_id\n" + "".join(f"S{k},{100 + k}\n" for k in range(1, 7)))
    with pytest.raises(GenomicsError, match=r"m\.zarr: feature_id: 1 requested feature\(s\) not "
                                            r"in the matrix, e\.g\. 'GENE_Z'; fix: request"):
        genomics.omics_block(matrix, genomics.read_linkage(full), [101],
                             features=["GENE_A", "GENE_Z"])


def _rewrite(path: Path, name: str, data: np.ndarray) -> None:
    group = zarr.open_group(path, mode="r+")
    del group[name]
    array = group.create_array(name, shape=data.shape, dtype=data.dtype)
    array[:] = data


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: _rewrite(p, "sample_id", np.array(["S1", "S2", "S1", "S3", "S4", "S5"])),
     r"sample_id: 'S1' listed 2 times \(1 id\(s\) repeated\); fix: keep one row per sample"),
    (lambda p: _rewrite(p, "feature_id", np.array(["A", "B", "C"])),
     r"values: shape \(6, 4\) is not sample_id × feature_id \(6, 3\); fix: give a Zarr group"),
    (lambda p: _rewrite(p, "values", np.array([["x"] * 4] * 6)),
     r"values: dtype .* is not numeric; fix: store the values as numbers"),
    (lambda p: zarr.open_group(p, mode="r+").__delitem__("feature_id"),
     r"not an omics matrix: no feature_id array\(s\) and no AnnData encoding; fix: give"),
])
def test_a_bad_plain_matrix(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    path = plain(tmp_path / "m.zarr")
    damage(path)
    with pytest.raises(GenomicsError, match=r"m\.zarr: " + message):
        genomics.open_omics(path)


def test_a_bad_anndata_store(tmp_path: Path) -> None:
    path = anndata(tmp_path / "a.zarr", sparse=True)
    zarr.open_group(path / "X", mode="r+").attrs["encoding-type"] = "csc_matrix"
    with pytest.raises(GenomicsError, match=r"a\.zarr: X: encoding 'csc_matrix' is not read .*"
                                            r"fix: store it as CSR"):
        genomics.open_omics(path)
    with pytest.raises(GenomicsError, match=r"a\.zarr: layers/counts: missing; fix: name a "
                                            r"layer"):
        genomics.open_omics(path, layer="counts")
    dense = anndata(tmp_path / "d.zarr", sparse=False)
    _rewrite(dense / "var", "_index", np.array(FEATURES[:3]))
    with pytest.raises(GenomicsError, match=r"d\.zarr: X: shape \(6, 4\) is not obs × var "
                                            r"\(6, 3\)"):
        genomics.open_omics(dense)
    with pytest.raises(GenomicsError, match=r"nowhere\.zarr: no Zarr store here"):
        genomics.open_omics(tmp_path / "nowhere.zarr")
