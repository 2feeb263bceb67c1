"""The sparse layout of the feature tensor: the same tensor as dense to the bit, every cell of
a wide warehouse tensor against DuckDB, the auto rule, crash safety, and models that read
either layout alike (and a CSR matrix when it is too wide to read densely)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import duckdb
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import zarr

from cohortflow import features, manifest, models, omop, synth
from cohortflow.errors import StoreError
from cohortflow.layout import Layout
from cohortflow.models import _train
from cohortflow.package._estimators import export, predict_proba
from cohortflow.report import _load as report_load
from cohortflow.report._tables import table_one
from cohortflow.study import load_study
from tests.helpers import REPO, build_cohorts, build_labels, write_study

RICH = {  # value aggregations (NaN-filled), counts, a custom window, demographics, sequence
    "features__aggregations": ["count", "present", "days_since_last", "last", "mean",
                               "value_count"],
    "features__windows": [{"start_days": -730, "end_days": -366}, {}],
    "features__demographics": ["age", "sex", "race", "ethnicity"],
    "features__sequence": {"bins": 3, "bin_days": 120, "aggregations": ["count", "mean"]},
}


def _build(study_path: Path, store: Path, cohort_dir: Path, out: Path) -> Path:
    with dask.config.set(scheduler="synchronous"):
        features.build_store(load_study(study_path), "cohort", store, cohort_dir, out)
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, event_store: Path) -> dict[str, Path]:
    """The same rich study on the demo event store, built with each layout and auto."""
    root = tmp_path_factory.mktemp("sparsepair")
    out: dict[str, Path] = {"root": root}
    for layout in ("dense", "sparse", "auto"):
        study = write_study(root / f"{layout}.yaml", **RICH, features__layout=layout)
        build_cohorts(study, event_store, root / "cohort")
        out[f"{layout}_study"] = study
        out[layout] = _build(study, event_store, root / "cohort", root / f"{layout}.zarr")
    return out


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def test_sparse_and_dense_stores_hold_the_same_tensor_to_the_bit(pair: dict[str, Path]) -> None:
    dense = features.open_features(pair["dense"])
    sparse = features.open_features(pair["sparse"])
    values = dense["values"].values
    assert np.isnan(values).any() and (values == 0).any()  # both fills occur
    fill = features.fill_values(pair["sparse"])
    matrix = features.read_matrix(pair["sparse"])
    assert isinstance(matrix, sp.csr_matrix) and matrix.shape == values.shape
    np.testing.assert_array_equal(_bits(features.to_dense(matrix, fill)), _bits(values))
    # The dense store read as entries gives the very same CSR arrays.
    other = features.read_matrix(pair["dense"])
    for name in ("indptr", "indices"):
        np.testing.assert_array_equal(getattr(other, name), getattr(matrix, name))
    np.testing.assert_array_equal(_bits(other.data), _bits(matrix.data))
    assert not np.isnan(matrix.data).any()  # missing is never stored
    assert matrix.nnz == sparse.attrs["set_cells"] == dense.attrs["set_cells"]
    # The lazy dense view, the sequence tensor and every coordinate agree too.
    np.testing.assert_array_equal(_bits(sparse["values"].values), _bits(values))
    np.testing.assert_array_equal(sparse["sequence"].values, dense["sequence"].values)
    for name in ("subject", "index_time", "feature", "code", "window", "aggregation"):
        np.testing.assert_array_equal(sparse[name].values, dense[name].values)
    # Rows and columns in any order, repeated, read one shard at a time.
    rng = np.random.default_rng(0)
    rows = rng.integers(0, values.shape[0], 50)
    cols = rng.permutation(values.shape[1])[:40]
    piece = features.read_matrix(pair["sparse"], rows, cols)
    np.testing.assert_array_equal(_bits(features.to_dense(piece, fill[cols])),
                                  _bits(values[rows][:, cols]))


def test_table_one_reads_a_sparse_store_as_the_dense_one(pair: dict[str, Path]) -> None:
    dense, sparse = (report_load.tensor(pair[k]) for k in ("dense", "sparse"))
    assert sp.issparse(sparse.values) and not sp.issparse(dense.values)
    rows = np.arange(0, dense.values.shape[0], 2)
    label = (rows % 3 == 0).astype(np.int8)
    tables = [table_one(t.values, t.code, t.window, t.aggregation, label, {}, fill=t.fill)
              for t in (dense.rows(rows), sparse.rows(rows))]
    assert tables[0].height > 10 and tables[0].equals(tables[1])


def test_store_attributes_record_the_request_the_rule_and_the_choice(
        pair: dict[str, Path]) -> None:
    attrs = {k: zarr.open_group(pair[k], mode="r").attrs.asdict() for k in
             ("dense", "sparse", "auto")}
    assert [attrs[k]["layout"] for k in ("dense", "sparse", "auto")] == ["dense", "sparse",
                                                                          "dense"]
    assert attrs["auto"]["layout_requested"] == "auto"
    assert attrs["auto"]["layout_rule"] == features.AUTO_RULE
    shape = features.open_features(pair["auto"])["values"].shape
    assert attrs["auto"]["fill"] == attrs["auto"]["set_cells"] / (shape[0] * shape[1])
    assert shape[1] < features.AUTO_MIN_FEATURES  # the demo is narrow: dense
    sparse_nodes = sorted(p.name for p in (pair["sparse"] / features.SPARSE_GROUP).iterdir()
                          if p.is_dir())
    assert sparse_nodes == [str(i) for i in range(len(attrs["sparse"]["shards"]))]
    assert not (pair["sparse"] / "values").exists()
    # The default layout stays out of the spec, so older studies keep their digests.
    assert "layout" not in json.loads(attrs["auto"]["feature_spec"])
    assert json.loads(attrs["sparse"]["feature_spec"])["layout"] == "sparse"


KILLED_CHILD = """
import sys, time
from pathlib import Path
import dask
from cohortflow import features
from cohortflow.features import _build
from cohortflow.study import load_study

study_path, store, cohort_dir, out, flag = sys.argv[1:]
original = _build.write_shard

def stall(*args, **kwargs):
    original(*args, **kwargs)
    Path(flag).touch()
    time.sleep(3600)

_build.write_shard = stall
with dask.config.set(scheduler="synchronous"):
    features.build_store(load_study(study_path), "cohort", Path(store), Path(cohort_dir),
                         Path(out))
"""


def test_killed_mid_write_leaves_nothing_trusted_and_rerun_is_identical(
        event_store: Path, pair: dict[str, Path], tmp_path: Path) -> None:
    out, flag = tmp_path / "f.zarr", tmp_path / "stalled"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_CHILD), str(pair["sparse_study"]),
         str(event_store), str(pair["root"] / "cohort"), str(out), str(flag)],
        cwd=REPO, stderr=subprocess.PIPE)
    while not flag.exists():  # the child stalls right after its first shard's CSR arrays
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    partial, _, _ = features.work_paths(out)
    assert list((partial / features.SPARSE_GROUP).rglob("c/*")), "arrays should be written"
    for path in (out, partial):
        with pytest.raises(StoreError, match="not a finished feature store"):
            features.read_matrix(path)
    with dask.config.set(scheduler="threads"):
        for _ in range(2):  # a rebuild over a finished store is identical too
            features.build_store(load_study(pair["sparse_study"]), "cohort", event_store,
                                 pair["root"] / "cohort", out)
    assert manifest.tree_digests(out) == manifest.tree_digests(pair["sparse"])
    assert not partial.exists()


# ---- the warehouse preset: wide, sparse, every cell against DuckDB --------------------------

WAREHOUSE_PERSONS = 400


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A few hundred warehouse persons, their demo cohort and its auto and dense tensors."""
    root = tmp_path_factory.mktemp("warehouse_sparse")
    synth.generate(WAREHOUSE_PERSONS, 5, root / "cdm", progress=False, preset="warehouse")
    omop.ingest(omop.open_source(root / "cdm"), root / "events", shards=2)
    out = {"root": root, "events": root / "events", "cohort": root / "cohort"}
    for layout in ("auto", "dense"):
        study = write_study(root / f"{layout}.yaml", shards=2, features__layout=layout,
                            source={"omop": {"path": str(root / "cdm")}})
        build_cohorts(study, root / "events", root / "cohort")
        out[layout] = _build(study, root / "events", root / "cohort", root / f"{layout}.zarr")
    return out


def _reference(store: Path, cohort_dir: Path, windows: list[int]) -> pl.DataFrame:
    """count and mean per (subject, code, window), in plain DuckDB SQL."""
    union = " UNION ALL ".join(
        f"""SELECT c.subject_id, e.code, '{d}d' AS window, count(*) AS count,
                   avg(e.numeric_value) AS mean
            FROM read_parquet('{cohort_dir}/shards/*.parquet') c
            JOIN read_parquet('{store}/data/*.parquet') e USING (subject_id)
            WHERE e.time IS NOT NULL
              AND split_part(e.code, '//', 1) IN ('CONDITION','DRUG','PROCEDURE','MEASUREMENT')
              AND date_diff('day', CAST(e.time AS DATE), CAST(c.index_time AS DATE))
                  BETWEEN 0 AND {d}
            GROUP BY ALL"""
        for d in windows)
    return duckdb.connect().sql(union).pl()


def test_auto_stores_the_warehouse_tensor_sparse_and_every_cell_is_the_reference(
        warehouse: dict[str, Path]) -> None:
    path = warehouse["auto"]
    ds = features.open_features(path)
    n_rows, n_cols = ds.sizes["subject"], ds.sizes["feature"]
    assert ds.attrs["layout"] == "sparse" and ds.attrs["layout_requested"] == "auto"
    assert n_cols >= features.AUTO_MIN_FEATURES and ds.attrs["fill"] < 0.05
    matrix = features.read_matrix(path)
    ref = _reference(warehouse["events"], warehouse["cohort"], [30, 365])
    row = {s: i for i, s in enumerate(ds["subject"].values.tolist())}
    col = {k: i for i, k in enumerate(zip(ds["code"].values.tolist(),
                                          ds["window"].values.tolist(),
                                          ds["aggregation"].values.tolist(), strict=True))}
    expected: dict[tuple[int, int], float] = {}
    for subject, code, window, count, mean in ref.iter_rows():
        expected[(row[subject], col[(code, window, "count")])] = float(count)
        if mean is not None:  # no value at all: missing, not stored
            expected[(row[subject], col[(code, window, "mean")])] = float(mean)
    assert len(expected) > 5000
    windowed = np.array([w != "all" for w in ds["window"].values])
    coo = matrix.tocoo()
    stored = {(int(r), int(c)): float(v) for r, c, v in zip(coo.row, coo.col, coo.data,
                                                              strict=True) if windowed[c]}
    assert stored.keys() == expected.keys()  # nothing more, nothing less, in every cell
    for key, value in expected.items():
        assert stored[key] == pytest.approx(value, rel=1e-5), key
    fill = features.fill_values(path)
    assert {str(a) for a, f in zip(ds["aggregation"].values, fill, strict=True)
            if np.isnan(f)} == {"mean", "age_years"}
    # The dense store of the same study holds the same tensor to the bit.
    dense = features.open_features(warehouse["dense"])["values"].values
    np.testing.assert_array_equal(_bits(features.to_dense(matrix, fill)), _bits(dense))
    assert n_rows * n_cols * 4 > 8 * matrix.nnz * 10  # the CSR arrays are far smaller


# ---- models read both layouts alike ----------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synth_omop: Path, event_store: Path
            ) -> dict[str, object]:
    """The demo study's labels, and its tensor built dense and sparse."""
    root = tmp_path_factory.mktemp("sparsemodels")
    out: dict[str, object] = {}
    for layout in ("dense", "sparse"):
        study_path = write_study(root / f"{layout}.yaml", features__layout=layout)
        study, _ = build_labels(study_path, event_store, root / layout)
        lay = Layout(root / layout)
        analysis = study.analysis_list()[0]
        out[layout] = _build(study_path, event_store, lay.cohort(analysis.target),
                             root / f"{layout}.zarr")
        out[f"{layout}_labels"] = lay.labels(analysis.id)
        out["study"] = study
    return out


def _train_all(trained: dict, layout: str, event_store: Path) -> dict[str, tuple]:
    study = trained["study"]
    return {c.id: models.train(study, c, event_store, trained[f"{layout}_labels"],
                               trained[layout])
            for c in models.configurations(study).values()}


def test_models_of_a_sparse_store_equal_those_of_the_dense_store(
        trained: dict, event_store: Path) -> None:
    dense, sparse = (_train_all(trained, k, event_store) for k in ("dense", "sparse"))
    assert dense.keys() == sparse.keys() and len(dense) == 4
    for config_id, (metrics, predictions) in dense.items():
        other_metrics, other_predictions = sparse[config_id]
        assert json.dumps(other_metrics, sort_keys=True) == json.dumps(metrics, sort_keys=True)
        assert "input" not in metrics  # the dense matrix's metrics are as they were
        gap = np.abs(other_predictions["prediction"].to_numpy()
                     - predictions["prediction"].to_numpy())
        assert gap.max() <= 1e-9


def test_a_matrix_too_wide_to_read_densely_trains_from_csr(
        trained: dict, event_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = trained["study"]
    configs = {c.family + str(c.hyperparameters.get("penalty", "")): c
               for c in models.configurations(study).values()}
    labels, tensor = trained["sparse_labels"], trained["sparse"]
    dense_auroc = {k: models.train(study, c, event_store, labels, tensor)[0]["test"]["auroc"]
                   for k, c in configs.items() if k != "gradient_boosting"}
    monkeypatch.setattr(_train, "DENSE_MATRIX_BYTES", 0)
    x, _, _ = models.load_matrix(tensor, {}, None)
    assert sp.issparse(x)
    for key, config in configs.items():
        if key == "gradient_boosting":
            with pytest.raises(StoreError, match=r"takes dense input only; fix: drop "
                               r"gradient_boosting from model\.sweep\.families"):
                models.train(study, config, event_store, labels, tensor)
            continue
        metrics, predictions = models.train(study, config, event_store, labels, tensor)
        assert metrics["input"] == "sparse"
        # A different estimator (no centring, presence for missing): close, not equal.
        assert metrics["test"]["auroc"] == pytest.approx(dense_auroc[key], abs=0.05), key
        fitted, x, _ = models.fit_configuration(study, config, event_store, labels,
                                                      tensor)
        assert sp.issparse(x)
        refit = fitted.predict_proba(x)[:, 1]
        assert np.abs(refit - predictions["prediction"].to_numpy()).max() <= 1e-9
        # The package's arrays, given dense cells (NaN where missing), predict the same.
        keep = np.arange(x.shape[1])
        cells = features.to_dense(x, features.fill_values(tensor)[keep], np.float64)
        packaged = predict_proba(config.family, export(config.family, fitted), cells)
        assert np.abs(packaged - refit).max() <= 1e-12, key
