"""The feature store: region writes on a regular grid, crash safety, byte-identical reruns."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from cohortflow import cohorts, events, features, manifest
from cohortflow.errors import StoreError
from cohortflow.layout import shard_attrition, shard_table
from cohortflow.study import load_study
from tests.conftest import REPO, write_study


@pytest.mark.parametrize("shard_rows", [[5, 7, 1], [0, 9, 0, 3, 11], [2, 2, 2, 2], [40, 1]])
def test_region_writes_and_boundary_units_give_the_stacked_blocks(
    tmp_path: Path, shard_rows: list[int]
) -> None:
    """Shards of any size (empty, smaller than a write unit, unaligned) land exactly."""
    offsets = tuple(int(x) for x in np.cumsum([0, *shard_rows]))
    layout = features.ChunkPlan(offsets, unit_rows=4, chunk_rows=2)
    blocks = [np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 100 * i
              for i, n in enumerate(shard_rows)]
    root = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    root.create_array("values", shape=(layout.rows, 3), dtype="float32",
                      chunks=(layout.chunk_rows, 3), shards=(layout.unit_rows, 3),
                      fill_value=np.nan)
    spills = [tmp_path / f"{i}.npz" for i in range(len(shard_rows))]
    for i in reversed(range(len(shard_rows))):  # any order
        features.write_region(tmp_path / "s.zarr", layout, i, {"values": blocks[i]}, spills[i])
    features.write_boundaries(tmp_path / "s.zarr", layout, spills,
                            {"values": np.full(3, -1, dtype=np.float32)})
    got = zarr.open_array(tmp_path / "s.zarr" / "values", mode="r")[:]
    np.testing.assert_array_equal(got, np.concatenate(blocks))


@pytest.fixture(scope="module")
def seq_study(tmp_path_factory: pytest.TempPathFactory, event_store: Path) -> tuple:
    """A study with a sequence tensor and more aggregations, and its cohort tables."""
    root = tmp_path_factory.mktemp("seqstudy")
    study = load_study(write_study(
        root / "study.yaml",
        features__aggregations=["count", "days_since_last", "last", "mean"],
        features__windows=[{"start_days": -730, "end_days": -366}],
        features__demographics=["age", "sex", "race", "ethnicity"],
        features__sequence={"bins": 4, "bin_days": 90, "aggregations": ["count"]},
    ))
    cohort_dir = root / "cohort"
    for shard in events.list_shards(event_store):
        cohorts.write_shard(study, "cohort", event_store, shard,
                            shard_table(cohort_dir, shard), shard_attrition(cohort_dir, shard))
    out = root / "f.zarr"
    with dask.config.set(scheduler="synchronous"):
        features.build_store(study, "cohort", event_store, cohort_dir, out)
    return root / "study.yaml", cohort_dir, out


def test_store_opens_with_labelled_coordinates_and_its_spec(seq_study: tuple) -> None:
    study_path, _, out = seq_study
    ds = xr.open_zarr(out)
    assert ds["values"].dims == ("subject", "feature")
    assert ds["sequence"].dims == ("subject", "time_bin", "sequence_feature")
    code = next(str(c) for c in ds["sequence_code"].values)
    assert ds["sequence"].sel(sequence_feature=f"{code}|bin|count").dims == ("subject",
                                                                            "time_bin")
    assert ds["time_bin_start_days"].values.tolist() == [-359, -269, -179, -89]
    assert ds["time_bin_end_days"].values.tolist() == [-270, -180, -90, 0]
    assert set(ds["window"].values) == {"30d", "365d", "-730d..-366d", "all"}
    assert any(str(c).startswith("RACE//") for c in ds["code"].values)
    study = load_study(study_path)
    assert ds.attrs["features_digest"] == study.features_digest("cohort")
    assert ds.attrs["target"] == "cohort"
    assert ds.attrs["feature_spec"] == study.features.model_dump_json()
    assert ds.attrs["shard_offsets"][-1] == ds.sizes["subject"]


def test_sequence_sums_to_the_windowed_count(seq_study: tuple) -> None:
    """Four 90-day bins cover days 0..359 before index: their counts sum to the 360-day
    count, which lies between the 30d and the 365d counts of every code."""
    _, _, out = seq_study
    ds = features.open_features(out)
    per_code = ds["sequence"].sum("time_bin").values
    codes = ds["sequence_code"].values.tolist()
    count = ds["values"].sel(feature=(ds["aggregation"] == "count").values)
    col = {(c, w): i for i, (c, w) in enumerate(zip(count["code"].values.tolist(),
                                                     count["window"].values.tolist(),
                                                     strict=True))}
    x = count.values
    assert per_code.sum() > 100
    for j, code in enumerate(codes):
        assert (per_code[:, j] <= x[:, col[(code, "365d")]]).all()
        assert (per_code[:, j] >= x[:, col[(code, "30d")]]).all()


KILLED_CHILD = """
import sys, time
from pathlib import Path
import dask
from cohortflow import features
from cohortflow.features import _build  # white-box: the step's own writer is the fault hook
from cohortflow.study import load_study

study_path, store, cohort_dir, out, flag, hook = sys.argv[1:]
original = getattr(_build, hook)

def stall(*args, **kwargs):
    original(*args, **kwargs)
    Path(flag).touch()
    time.sleep(3600)

setattr(_build, hook, stall)
with dask.config.set(scheduler="synchronous"):
    features.build_store(load_study(study_path), "cohort", Path(store), Path(cohort_dir),
                         Path(out))
"""


@pytest.mark.parametrize("hook", ["write_region", "write_boundaries"])
def test_killed_mid_write_leaves_nothing_trusted_and_rerun_is_identical(
    event_store: Path, seq_study: tuple, tmp_path: Path, hook: str
) -> None:
    study_path, cohort_dir, reference = seq_study
    out, flag = tmp_path / "f.zarr", tmp_path / "stalled"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_CHILD), str(study_path), str(event_store),
         str(cohort_dir), str(out), str(flag), hook],
        cwd=REPO, stderr=subprocess.PIPE)
    while not flag.exists():  # the child stalls right after its first region write
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    partial, _, _ = features.work_paths(out)
    assert list((partial / "values").rglob("c/*")), "the kill should leave written chunks"
    with pytest.raises(StoreError, match="not a finished feature store"):
        features.open_features(out)
    with pytest.raises(StoreError):
        features.open_features(partial)

    with dask.config.set(scheduler="synchronous"):
        features.build_store(load_study(study_path), "cohort", event_store, cohort_dir, out)
    assert manifest.tree_digests(out) == manifest.tree_digests(reference)
    assert not partial.exists()


def test_rebuild_over_a_finished_store_is_byte_identical(
    event_store: Path, seq_study: tuple, tmp_path: Path
) -> None:
    study_path, cohort_dir, reference = seq_study
    out = tmp_path / "f.zarr"
    with dask.config.set(scheduler="threads"):
        for _ in range(2):
            features.build_store(load_study(study_path), "cohort", event_store, cohort_dir, out)
    assert manifest.tree_digests(out) == manifest.tree_digests(reference)
