"""Typed feature keys (code, window, aggregation) from the study to the tensor and back, and a
tensor that ``xarray.open_zarr`` opens without a warning, indexed by key."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import yaml

from cohortflow import features, report
from cohortflow.errors import StudySpecError
from cohortflow.layout import Layout
from cohortflow.study import FeatureKey, FeatureWindow, demo_study_path, parse_study
from tests.conftest import REPO, build_cohorts, write_study

KEY = "CONDITION//317009|365d|count"  # the README's example: asthma in the year before index


@pytest.mark.parametrize(("label", "start", "end"), [
    ("30d", -30, 0), ("all", None, 0), ("-365d..-31d", -365, -31), ("all..-31d", None, -31),
    ("-7d..-7d", -7, -7),
])
def test_a_window_label_reads_back_with_its_start_and_end(label: str, start: int | None,
                                                          end: int) -> None:
    window = FeatureWindow.parse(label)
    assert (window.start_days, window.end_days) == (start, end)
    assert window.label == label
    assert window == FeatureWindow(start_days=start, end_days=end)


@pytest.mark.parametrize(("label", "hint"), [
    ("365", "not a window label"), ("-365d..0d", "it is written '365d'"),
    ("-31d..-365d", "not a window label"), ("-30d..5d", "not a window label"),
    ("", "not a window label"),
])
def test_a_malformed_window_label_is_refused_with_the_forms_it_may_take(label: str,
                                                                        hint: str) -> None:
    with pytest.raises(ValueError, match=hint) as err:
        FeatureWindow.parse(label)
    assert "'-365d..-31d'" in str(err.value)  # the message shows a correct example


def test_a_feature_key_round_trips_through_its_text() -> None:
    key = FeatureKey("LAB//K|mmol/L", FeatureWindow(start_days=-365, end_days=-31), "mean")
    assert str(key) == "LAB//K|mmol/L|-365d..-31d|mean"
    assert FeatureKey.parse(str(key)) == key  # a '|' inside the code stays in the code
    assert FeatureKey.parse("MEDS_BIRTH|all|age_years").window.days is None
    with pytest.raises(ValueError, match="unknown aggregation 'cnt'"):
        FeatureKey.parse("CONDITION//1|30d|cnt")


def _demo_with_feature_sets(sets: dict) -> dict:
    raw = yaml.safe_load(demo_study_path().read_text())
    raw["features"].update(windows_days=[30, 365], windows=[{"start_days": -730,
                                                             "end_days": -366}],
                           aggregations=["count", "mean"], demographics=["age", "sex"])
    raw["model"]["sweep"]["feature_sets"] = {"all": {}, **sets}
    return raw


def test_feature_sets_name_only_windows_and_aggregations_the_features_build() -> None:
    raw = _demo_with_feature_sets({
        "old": {"windows": ["-730d..-366d", "all"], "aggregations": ["count", "age_years"]},
    })
    assert parse_study(raw).model.sweep is not None  # an 'all' window: the demographics'


def test_every_unknown_window_and_aggregation_is_named_in_one_message() -> None:
    raw = _demo_with_feature_sets({
        "recent": {"windows": ["7d", "30d"], "aggregations": ["count", "last"]},
        "older": {"windows": ["-365d..-31d"]},
        "typo": {"windows": ["365"], "aggregations": ["cnt"]},
    })
    with pytest.raises(StudySpecError) as err:
        parse_study(raw, origin="study.yaml")
    message = str(err.value)
    assert message.startswith("study.yaml: 2 problem(s)"), message  # the forms first
    assert "model.sweep.feature_sets.typo.windows.0: Value error, '365' is not a window" \
        in message
    assert "model.sweep.feature_sets.typo.aggregations.0: Input should be 'count'" in message
    raw["model"]["sweep"]["feature_sets"].pop("typo")
    with pytest.raises(StudySpecError) as err:
        parse_study(raw, origin="study.yaml")
    message = str(err.value)
    assert message.startswith("study.yaml: 3 problem(s)"), message
    built = "30d, 365d, -730d..-366d, all"
    assert (f"model.sweep.feature_sets.recent.windows.0: the features build no window '7d'; "
            f"built: {built}; fix: name one of them, or add the window under "
            "features.windows_days or features.windows (got '7d')") in message
    assert "feature_sets.older.windows.0: the features build no window '-365d..-31d'" in message
    assert ("feature_sets.recent.aggregations.1: the features build no aggregation 'last'; "
            "built: count, present, mean, age_years") in message


def test_table_one_lists_codes_of_the_longest_window_whatever_its_form() -> None:
    """A '-365d..-31d' window (335 days) is longer than '30d'; its label once parsed as -1."""
    x = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    table = report.table_one(
        x, ["CONDITION//1", "CONDITION//1"], ["-365d..-31d", "30d"], ["count", "count"],
        np.array([1, 0, 1]), {"CONDITION//1": "Asthma"})
    assert table["characteristic"].to_list() == ["Persons", "Asthma (CONDITION//1), -365d..-31d"]
    assert table["target"].to_list() == [3.0, 2.0]


def _assert_opens_cleanly(store: Path) -> xr.Dataset:
    """Only Zarr nodes in the store, and ``xarray.open_zarr`` opens it without a warning."""
    for path in store.rglob("*"):
        inside = path.relative_to(store).parts
        if path.is_file():
            assert path.name == "zarr.json" or "c" in inside[:-1], f"not a Zarr node: {path}"
        elif "c" not in inside:
            assert (path / "zarr.json").is_file(), f"a folder that is no Zarr node: {path}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return xr.open_zarr(store)


@pytest.fixture(scope="module")
def tensor(event_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A feature store of the shared synthetic event store, with a window before index."""
    root = tmp_path_factory.mktemp("keys")
    study = build_cohorts(write_study(root / "study.yaml", features__windows=[
        {"start_days": -365, "end_days": -31}]), event_store, root / "cohort")
    with dask.config.set(scheduler="synchronous"):
        features.build_store(study, "cohort", event_store, root / "cohort",
                             root / "features.zarr")
    return root / "features.zarr"


def test_the_tensor_opens_cleanly_and_selects_a_feature_by_key(tensor: Path) -> None:
    ds = _assert_opens_cleanly(tensor)
    assert "consolidated_metadata" in (tensor / "zarr.json").read_text()
    column = ds["values"].sel(feature=KEY)
    position = [i for i, k in enumerate(zip(ds["code"].values, ds["window"].values,
                                            ds["aggregation"].values, strict=True))
                if k == ("CONDITION//317009", "365d", "count")]
    assert len(position) == 1 and column.values.any()
    np.testing.assert_array_equal(column.values, ds["values"].values[:, position[0]])
    keys = features.feature_keys(ds)
    assert [str(k) for k in keys] == ds["feature"].values.tolist()
    before = [k for k in keys if k.window == FeatureWindow(start_days=-365, end_days=-31)]
    assert before and all(k.window.days == 335 for k in before)
    assert ds.sel(feature=[str(k) for k in before])["values"].shape[1] == len(before)


def test_the_readme_example_reads_the_tensor_without_a_warning(tensor: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Reading the feature tensor", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "README: no example under 'Reading the feature tensor'"
    code = match.group(1).replace("results/demo/features/cohort/features.zarr",
                                  str(tensor))
    scope: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(code, "README.md", "exec"), scope)
    assert scope["asthma"].dims == ("subject",)
    assert set(scope["counts"]["aggregation"].values.tolist()) == {"count"}


def test_the_demo_tensor_opens_cleanly_with_snakemakes_marker_beside_it(
        laptop_run: tuple) -> None:
    layout = Layout(laptop_run[0])
    store = layout.tensor("cohort")
    assert (layout.features("cohort") / ".snakemake_timestamp").is_file()
    ds = _assert_opens_cleanly(store)
    assert float(ds["values"].sel(feature=KEY).sum()) > 0
