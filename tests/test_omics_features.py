"""Omics feature blocks in a study (``features.omics``): a tiny AnnData-like Zarr store
(dense ``X``, obs/var indexes, written here with zarr) and its own linkage table, read from
the study file's folder, become ``OMICS//<name>//<feature>|all|value`` columns and a
``OMICS//<name>//missing|all|present`` indicator whose cells equal a direct computation off
the arrays written; the tensor's rerun key covers the store's and the linkage's content."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
import zarr

from cohortflow import cohorts, events, features
from cohortflow.errors import StudySpecError
from cohortflow.study import load_study
from tests.helpers import build_cohorts, write_study
from tests.test_omics import _dataframe

FEATURES = ["GENE_A", "GENE_B", "GENE_C"]


def _store(path: Path, samples: list[str], values: np.ndarray) -> Path:
    """An AnnData store's layout (obs, var, dense X in chunks of 7 rows)."""
    root = zarr.open_group(path, mode="w", zarr_format=2)
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    _dataframe(root, "obs", samples)
    _dataframe(root, "var", FEATURES)
    x = root.create_array("X", shape=values.shape, dtype="f4", chunks=(7, 3))
    x[:] = values
    x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    return path


@pytest.fixture
def omics_study(tmp_path: Path, event_store: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """The demo study with one omics block (``rna``: GENE_C then GENE_A) whose store holds
    every other person of the first cohort shard plus persons outside the cohort, under
    sample ids that are not person ids; a NaN for one sample's GENE_A.  Returns the study
    file and each sampled person's row of values (store columns)."""
    folder = tmp_path / "study"
    folder.mkdir()
    study = build_cohorts(write_study(folder / "plain.yaml"), event_store, tmp_path / "c0")
    shard = events.list_shards(event_store)[0]
    rows = cohorts.read_episodes(tmp_path / "c0", [shard])
    persons = [*sorted(set(rows["subject_id"].to_list()))[::2], 999991, 999992]
    values = np.array([[p % 97 + 0.25, (p % 13) * 1.5, -float(p % 5)] for p in persons],
                      dtype=np.float32)
    values[1, 0] = np.nan
    samples = [f"R{i:05d}" for i in range(len(persons))][::-1]  # store order: not by person
    _store(folder / "data" / "rna.zarr", samples, values)
    (folder / "data" / "rna_link.csv").write_text(
        "sample_id,person_id\n" + "".join(f"{s},{p}\n" for s, p in zip(samples, persons,
                                                                      strict=True)))
    path = write_study(folder / "omics.yaml", features__omics=[
        {"name": "rna", "store": "data/rna.zarr", "linkage": "data/rna_link.csv",
         "features": ["GENE_C", "GENE_A"]}])
    del study
    return path, dict(zip(persons, values, strict=True))


def test_the_omics_cells_equal_a_direct_computation(
        omics_study: tuple[Path, dict[int, np.ndarray]], event_store: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, sampled = omics_study
    monkeypatch.chdir(tmp_path)  # relative paths are read from the study file's folder
    study = build_cohorts(path, event_store, tmp_path / "cohort")
    features.build_store(study, "cohort", event_store, tmp_path / "cohort",
                         tmp_path / "f.zarr", scheduler="synchronous")
    ds = features.open_features(tmp_path / "f.zarr")
    keys = [str(k) for k in ds["feature"].values]
    block = [k for k in keys if k.startswith("OMICS//")]
    assert block == ["OMICS//rna//GENE_C|all|value", "OMICS//rna//GENE_A|all|value",
                     "OMICS//rna//missing|all|present"]
    values = ds["values"].values
    subjects = ds["subject"].values.tolist()
    column = {"GENE_A": 0, "GENE_C": 2}
    seen = 0
    for i, subject in enumerate(subjects):
        row = sampled.get(subject)
        assert values[i, keys.index("OMICS//rna//missing|all|present")] == float(row is None)
        for gene, j in column.items():
            got = values[i, keys.index(f"OMICS//rna//{gene}|all|value")]
            if row is None:
                assert math.isnan(got), (subject, gene)
            else:
                assert np.array_equal(got, row[j], equal_nan=True), (subject, gene)
        seen += row is not None
    assert 0 < seen < len(subjects)
    assert np.isnan(values[:, keys.index("OMICS//rna//GENE_A|all|value")]).sum() > len(
        subjects) - seen  # the stored NaN stays NaN
    without = build_cohorts(write_study(tmp_path / "plain.yaml"), event_store,
                            tmp_path / "cohort")
    features.build_store(without, "cohort", event_store, tmp_path / "cohort",
                         tmp_path / "g.zarr", scheduler="synchronous")
    plain = features.open_features(tmp_path / "g.zarr")
    assert [str(k) for k in plain["feature"].values] == [k for k in keys if k not in block]
    np.testing.assert_array_equal(
        plain["values"].values, ds["values"].sel(feature=plain["feature"].values).values)


def test_all_features_in_store_order_without_a_selection(
        omics_study: tuple[Path, dict[int, np.ndarray]]) -> None:
    from cohortflow.features._omics import omics_cells, omics_keys

    path, sampled = omics_study
    raw = yaml.safe_load(path.read_text())
    del raw["features"]["omics"][0]["features"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    study = load_study(path)
    assert [k[0] for k in omics_keys(study)] == ["OMICS//rna//GENE_A", "OMICS//rna//GENE_B",
                                                 "OMICS//rna//GENE_C", "OMICS//rna//missing"]
    person = next(p for p in sampled if not np.isnan(sampled[p]).any())
    cells = omics_cells(study, pl.LazyFrame({"subject_id": [12_345_678, person]}))
    assert cells.filter(pl.col("row") == 1)["value"].to_list() == [
        np.float32(v) for v in sampled[person]]
    assert cells.filter(pl.col("row") == 0).select("feature_code", "value").rows() == [
        ("OMICS//rna//missing", 1.0)]


def test_the_tensor_key_covers_the_store_and_the_linkage(
        omics_study: tuple[Path, dict[int, np.ndarray]]) -> None:
    path, _ = omics_study
    before = load_study(path).features_digest("cohort")
    store = path.parent / "data" / "rna.zarr"
    x = zarr.open_array(store / "X", mode="r+")
    x[0, 0] = 1234.5  # same files, other content
    after = load_study(path).features_digest("cohort")
    assert after != before
    link = path.parent / "data" / "rna_link.csv"
    link.write_text(link.read_text().replace("999991", "999993"))
    os.utime(link, ns=(link.stat().st_atime_ns, link.stat().st_mtime_ns + 10**9))
    assert load_study(path).features_digest("cohort") not in (before, after)
    plain = load_study(write_study(path.parent / "plain2.yaml"))
    assert "omics" not in plain.features.model_dump(mode="json")
    assert plain.features_digest("cohort") == load_study(
        write_study(path.parent / "plain3.yaml")).features_digest("cohort")


def test_a_missing_store_or_a_bad_block_is_named(tmp_path: Path) -> None:
    path = write_study(tmp_path / "s.yaml", features__omics=[
        {"name": "rna", "store": "nowhere.zarr", "linkage": "link.csv"}])
    with pytest.raises(StudySpecError) as err:
        load_study(path)
    assert f"features.omics.0.store: nowhere.zarr: no such file ({tmp_path / 'nowhere.zarr'})" \
        in str(err.value)
    assert "features.omics.0.linkage: link.csv" in str(err.value)
    for block, message in (({"name": "RNA", "store": "a", "linkage": "b"}, "name"),
                           ({"name": "rna", "store": "a", "linkage": "b",
                             "features": ["G", "G"]}, "features repeat")):
        with pytest.raises(StudySpecError, match=message):
            load_study(write_study(tmp_path / "b.yaml", features__omics=[block]))
