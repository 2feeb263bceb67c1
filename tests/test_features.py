"""Feature tensors: tiny-frame edge cases, a DuckDB reference, worker invariance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import duckdb
import numpy as np
import polars as pl
import pytest
import xarray as xr
from distributed import default_client, get_task_stream

from cohortflow import cohorts, compute, events, features, manifest
from cohortflow.errors import StoreError
from cohortflow.study import Features
from tests.helpers import build_cohorts, cohort, ev, write_study

TINY = ev(
    (1, None, "GENDER//8532", None),
    (1, "2005-01-10", events.BIRTH, None),
    (1, "2014-12-11", "CONDITION//1", None),        # 30 days before: in both windows
    (1, "2014-12-10", "CONDITION//1", None),        # 31 days before: 365d window only
    (1, "2013-01-09", "CONDITION//1", None),        # 731 days before: in no window
    (1, "2015-01-11", "CONDITION//1", None),        # after the index day: never counted
    (1, "2015-01-05 08:00", "MEASUREMENT//7", 2.0),
    (1, "2015-01-05 08:00", "MEASUREMENT//7", 6.0),  # same timestamp: both count
    (1, "2015-01-06", "MEASUREMENT//7", None),      # null value: counted, not averaged
    (1, "2015-01-10 23:00", "MEASUREMENT//7", 4.0),  # index day, later hour: included
    (2, None, "GENDER//8507", None),
    (2, "2010-01-10", events.BIRTH, None),
)
SPEC = Features(windows_days=[30, 365], domains=["CONDITION", "MEASUREMENT"])


def tiny_tensor(spec: Features = SPEC, frame: pl.LazyFrame = TINY
                ) -> dict[tuple[str, str, str], np.ndarray]:
    index, block = features.shard_block(spec, frame, cohort(1, 2))
    return {key: block[:, i] for key, i in index.position().items()}


def test_window_boundaries_and_after_index_exclusion() -> None:
    t = tiny_tensor()
    assert t[("CONDITION//1", "30d", "count")].tolist() == [1, 0]
    assert t[("CONDITION//1", "365d", "count")].tolist() == [2, 0]


def test_same_timestamp_values_all_count_and_null_values_are_not_averaged() -> None:
    t = tiny_tensor()
    assert t[("MEASUREMENT//7", "30d", "count")].tolist() == [4, 0]
    mean = t[("MEASUREMENT//7", "30d", "mean")]
    assert mean[0] == pytest.approx(4.0)  # (2 + 6 + 4) / 3
    assert np.isnan(mean[1])              # no value at all: missing, not zero


def test_demographics() -> None:
    t = tiny_tensor()
    assert t[(events.BIRTH, "all", "age_years")] == pytest.approx([10.0, 5.0], abs=0.01)
    assert t[("GENDER//8532", "all", "present")].tolist() == [1, 0]
    assert t[("GENDER//8507", "all", "present")].tolist() == [0, 1]


def test_codes_only_seen_after_index_are_not_features() -> None:
    late = ev((1, "2016-01-01", "CONDITION//5", None), (1, "2014-06-01", "CONDITION//6", None))
    index, _ = features.shard_block(SPEC, late, cohort(1))
    assert set(index.code) == {"CONDITION//6", events.BIRTH}


@pytest.fixture(scope="module")
def built(event_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """Cohort tables and a feature store for the shared synthetic event store."""
    root = tmp_path_factory.mktemp("features")
    cohort_dir = root / "cohort"
    study = build_cohorts(write_study(root / "study.yaml"), event_store, cohort_dir)
    with dask.config.set(scheduler="synchronous"):
        features.build_store(study, "cohort", event_store, cohort_dir, root / "f.zarr")
    return study, cohort_dir, root / "f.zarr"


def reference(store: Path, cohort_dir: Path, windows: list[int]) -> pl.DataFrame:
    """count and mean per (subject, code, window), computed in plain DuckDB SQL."""
    con = duckdb.connect()
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
        for d in windows
    )
    return con.sql(union).pl()


def test_tensor_equals_a_duckdb_reference(event_store: Path, built: tuple) -> None:
    study, cohort_dir, store_path = built
    ds = features.open_features(store_path)
    ref = reference(event_store, cohort_dir, study.features.windows_days)
    assert ref.height > 1000
    values = ds["values"].values
    row = {s: i for i, s in enumerate(ds["subject"].values.tolist())}
    col = {k: i for i, k in enumerate(zip(ds["code"].values, ds["window"].values,
                                          ds["aggregation"].values, strict=True))}
    counted = np.zeros(values.shape, dtype=bool)
    for subject, code, window, count, mean in ref.iter_rows():
        i, j = row[subject], col[(code, window, "count")]
        assert values[i, j] == count, (subject, code, window)
        counted[i, j] = True
        if (code, window, "mean") in col:
            k = col[(code, window, "mean")]
            assert (np.isnan(values[i, k]) if mean is None
                    else values[i, k] == pytest.approx(mean, rel=1e-5)), (subject, code, window)
            counted[i, k] = True
    count_cols = np.array([a == "count" for a in ds["aggregation"].values])
    assert (values[:, count_cols][~counted[:, count_cols]] == 0).all()
    mean_cols = np.array([a == "mean" for a in ds["aggregation"].values])
    assert np.isnan(values[:, mean_cols][~counted[:, mean_cols]]).all()


def test_store_opens_with_labelled_coordinates(built: tuple) -> None:
    _, _, store_path = built
    ds = xr.open_zarr(store_path, consolidated=False)
    assert ds["values"].dims == ("subject", "feature")
    assert {"code", "window", "aggregation", "index_time"} <= set(ds.coords)
    assert ds.attrs["cohortflow_complete"] is True
    assert set(ds["window"].values) == {"30d", "365d", "all"}


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow),
                                     pytest.param(4, marks=pytest.mark.slow)])
def test_tensor_is_identical_with_1_2_and_4_dask_workers(
    event_store: Path, built: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    study, cohort_dir, reference_store = built
    monkeypatch.setenv("COHORTFLOW_WORKERS", str(workers))
    with compute.dask_client(as_default=False) as client:
        assert len(client.scheduler_info()["workers"]) == workers
        features.build_store(study, "cohort", event_store, cohort_dir, tmp_path / "f.zarr",
                             scheduler=client)
    assert manifest.tree_digests(tmp_path / "f.zarr") == manifest.tree_digests(reference_store)


def test_the_features_step_computes_on_its_own_threads_never_the_process_default(
    event_store: Path, built: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Snakemake's threads run several steps in one process (force-use-threads).  Here
    # another step's client is the process default while this step runs: no task of this
    # step may land on it, and no cluster is started for it.
    study, cohort_dir, reference_store = built
    monkeypatch.setenv("COHORTFLOW_WORKERS", "1")

    def no_cluster(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the laptop features step started a Dask cluster")

    with compute.dask_client() as other, get_task_stream(client=other) as theirs:
        assert default_client() is other
        monkeypatch.setattr(compute, "dask_client", no_cluster)
        features.build_tensor(study, "cohort", event_store, cohort_dir, tmp_path / "f.zarr",
                              scratch=tmp_path / ".dask", workers=2)
    assert theirs.data == [], "the features step ran tasks on another step's cluster"
    assert manifest.tree_digests(tmp_path / "f.zarr") == manifest.tree_digests(reference_store)


def test_one_row_per_target_episode_in_shard_table_order(event_store: Path,
                                                         built: tuple) -> None:
    study, cohort_dir, store_path = built
    ds = features.open_features(store_path)
    episodes = cohorts.read_episodes(cohort_dir, events.list_shards(event_store))
    assert ds.sizes["subject"] == episodes.height > 100
    assert ds["subject"].values.tolist() == episodes["subject_id"].to_list()
    np.testing.assert_array_equal(ds["index_time"].values,
                                  episodes["index_time"].to_numpy())
    assert ds.attrs["target"] == "cohort"
    assert ds.attrs["features_digest"] == study.features_digest("cohort")


def test_every_episode_of_a_subject_is_a_row_with_its_own_index(
        event_store: Path, tmp_path: Path) -> None:
    # Every asthma diagnosis starts an episode: subjects with several have several rows,
    # each with the features as of its own index time.
    study = build_cohorts(write_study(tmp_path / "study.yaml", cohort__entry__first_only=False),
                          event_store, tmp_path / "cohort")
    features.build_store(study, "cohort", event_store, tmp_path / "cohort", tmp_path / "f.zarr",
                         scheduler="synchronous")
    ds = features.open_features(tmp_path / "f.zarr")
    episodes = cohorts.read_episodes(tmp_path / "cohort", events.list_shards(event_store))
    assert ds["subject"].values.tolist() == episodes["subject_id"].to_list()
    np.testing.assert_array_equal(ds["index_time"].values, episodes["index_time"].to_numpy())
    age = ds["values"].sel(feature=f"{events.BIRTH}|all|age_years").values
    pairs = 0
    for i, j in zip(range(ds.sizes["subject"] - 1), range(1, ds.sizes["subject"]), strict=True):
        if ds["subject"].values[i] != ds["subject"].values[j]:
            continue
        pairs += 1
        days = (ds["index_time"].values[j] - ds["index_time"].values[i]) / np.timedelta64(1, "D")
        assert days > 0 and age[j] - age[i] == pytest.approx(days / 365.25, abs=0.01)
    assert pairs > 20


def test_half_written_store_is_refused(tmp_path: Path) -> None:
    xr.Dataset({"values": (("subject",), np.zeros(3))}).to_zarr(
        tmp_path / "half.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match="half-written"):
        features.open_features(tmp_path / "half.zarr")
    with pytest.raises(StoreError, match="not a finished feature store"):
        features.open_features(tmp_path / "missing.zarr")
