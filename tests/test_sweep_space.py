"""The sweep's parameter space, ids, seeds and splits, on tiny specs and arrays."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from cohortflow import models
from cohortflow.errors import StudySpecError
from cohortflow.study import load_study
from tests.conftest import write_study
from tests.helpers import MANY_STUDY

SWEEP = {"families": [
    {"family": "logistic", "penalty": ["l1", "l2", "elasticnet"], "C": [0.1, 1.0],
     "l1_ratio": [0.3]},
    {"family": "gradient_boosting", "learning_rate": [0.05, 0.1], "max_iter": [30]},
    {"family": "random_forest", "n_estimators": [30], "max_depth": [3, 5]}],
    "feature_sets": {"all": {}, "conditions": {"domains": ["CONDITION"]}},
    "seeds": [0, 1]}


def study_with(tmp_path: Path, model: dict) -> object:
    return load_study(write_study(tmp_path / "s.yaml", model=model))


def test_grid_is_the_full_cross_product(tmp_path: Path) -> None:
    configs = models.configurations(study_with(tmp_path, {"sweep": SWEEP}))
    # (6 logistic + 2 boosting + 2 forest) x 2 feature sets x 2 seeds
    assert len(configs) == 40
    families = [c.family for c in configs.values()]
    assert families.count("logistic") == 24 and families.count("random_forest") == 8
    l1 = [c for c in configs.values() if c.hyperparameters.get("penalty") == "l1"]
    assert all("l1_ratio" not in c.hyperparameters for c in l1)  # only the elastic net mixes
    net = [c for c in configs.values() if c.hyperparameters.get("penalty") == "elasticnet"]
    assert {c.hyperparameters["l1_ratio"] for c in net} == {0.3}
    assert {c.outcome for c in configs.values()} == {"asthma_exacerbation"}


def test_ids_are_stable_and_independent_of_the_rest_of_the_sweep(tmp_path: Path) -> None:
    small = models.configurations(study_with(tmp_path, {"sweep": {"families": [
        {"family": "logistic", "C": [1.0]}]}}))
    big = models.configurations(study_with(tmp_path, {"sweep": {"families": [
        {"family": "random_forest"}, {"family": "logistic", "C": [0.1, 1.0]}]}}))
    assert set(small) < set(big)
    (cid, config), = small.items()
    assert big[cid] == config
    # The seed derives from the study seed (42) and the id.
    assert config.seed == models.derive_seed(42, cid)
    assert models.derive_seed(43, cid) != config.seed


def test_the_short_form_is_one_l2_logistic_regression(tmp_path: Path) -> None:
    configs = models.configurations(study_with(tmp_path, {"family": "logistic_l2", "C": 0.5}))
    (config,) = configs.values()
    assert (config.family, config.hyperparameters) == ("logistic", {"penalty": "l2", "C": 0.5})


def test_random_search_draws_inside_ranges_and_repeats(tmp_path: Path) -> None:
    spec = {"sweep": {"search": {"method": "random", "samples": 12}, "families": [
        {"family": "gradient_boosting",
         "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
         "max_iter": {"low": 20, "high": 200, "integer": True}}]}}
    first = models.configurations(study_with(tmp_path, spec))
    again = models.configurations(study_with(tmp_path, spec))
    assert list(first) == list(again) and len(first) == 12
    rates = [c.hyperparameters["learning_rate"] for c in first.values()]
    iters = [c.hyperparameters["max_iter"] for c in first.values()]
    assert all(0.01 <= r <= 0.3 for r in rates) and len(set(rates)) == 12
    assert all(isinstance(i, int) and 20 <= i <= 200 for i in iters)


def test_a_range_in_a_grid_names_the_field_and_the_fix(tmp_path: Path) -> None:
    study = study_with(tmp_path, {"sweep": {"families": [
        {"family": "logistic", "C": {"low": 0.1, "high": 1}}]}})
    with pytest.raises(StudySpecError, match=r"model\.sweep\.families\[0\]\.C: a range needs "
                       r"a random search; fix: .*search: \{method: random\}"):
        models.configurations(study)


def test_unknown_outcome_or_cohort_is_refused_with_the_known_name(tmp_path: Path) -> None:
    study = study_with(tmp_path, {"sweep": {"families": [{"family": "logistic"}],
                                            "outcomes": ["asthma"]}})
    with pytest.raises(StudySpecError, match=r"model\.sweep\.outcomes: unknown outcome "
                       r"'asthma'.*fix: outcomes: \[asthma_exacerbation\]"):
        models.configurations(study)
    study = study_with(tmp_path, {"sweep": {"families": [{"family": "logistic"}],
                                            "cohorts": ["kids"]}})
    with pytest.raises(StudySpecError, match=r"fix: cohorts: \[cohort\]"):
        models.configurations(study)


def test_every_analysis_gets_the_whole_sweep_under_its_own_ids(tmp_path: Path) -> None:
    raw = yaml.safe_load(MANY_STUDY.read_text())
    study = load_study(MANY_STUDY)
    analyses = study.analysis_list()
    configs = models.configurations(study)
    points = {(c.family, json.dumps(c.hyperparameters, sort_keys=True))
              for c in configs.values()}
    assert len(points) == len(raw["model"]["sweep"]["families"]) == 2
    assert len(configs) == len(analyses) * len(points) == 50
    for config in configs.values():
        analysis = study.analysis(config.analysis)
        assert (config.cohort, config.outcome, config.time_at_risk) == (
            analysis.target, analysis.outcome, analysis.time_at_risk)
        params = config.params()
        assert (params["analysis"], params["time_at_risk"]) == (analysis.id,
                                                                 analysis.time_at_risk)
    per_analysis = {a.id: {(c.family, json.dumps(c.hyperparameters, sort_keys=True))
                           for c in configs.values() if c.analysis == a.id} for a in analyses}
    assert all(p == points for p in per_analysis.values())
    # The same model on another time at risk is another configuration, with its own seed.
    one, other = (next(c for c in configs.values()
                       if (c.cohort, c.outcome, c.time_at_risk, c.family)
                       == ("asthma", "exacerbation", tar, "logistic")) for tar in ("1y", "30d"))
    assert one.id != other.id and one.seed != other.seed
    # The single form's sweep axes have no place in a study of analyses.
    raw["model"]["sweep"]["outcomes"] = ["exacerbation"]
    (tmp_path / "many.yaml").write_text(yaml.safe_dump(raw))
    for csv in MANY_STUDY.parent.glob("*.csv"):
        (tmp_path / csv.name).write_bytes(csv.read_bytes())
    with pytest.raises(StudySpecError, match=r"model\.sweep\.outcomes: a study with analyses "
                       r"crosses outcomes under analyses:; fix: remove model\.sweep\.outcomes"):
        load_study(tmp_path / "many.yaml")


def test_sweep_and_short_form_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StudySpecError, match=r"model: .*either family/C .* or sweep"):
        study_with(tmp_path, {"family": "logistic_l2", "sweep": SWEEP})


def test_time_split_needs_a_date(tmp_path: Path) -> None:
    with pytest.raises(StudySpecError, match=r"model\.split: .*fix: e\.g\. split: "
                       r"\{method: time, test_from: 2019-01-01\}"):
        study_with(tmp_path, {"split": {"method": "time"}})


def test_stratified_split_keeps_the_outcome_rate_and_is_a_pure_function() -> None:
    ids = np.arange(10_000, 10_400)
    y = (np.arange(400) % 4 == 0).astype(np.int8)  # 100 outcomes
    test = models.stratified_test(ids, y, 0.25, seed=42)
    assert int(test.sum()) == 100 and int(y[test].sum()) == 25
    # Same persons whatever the row order.
    order = np.random.default_rng(0).permutation(400)
    again = models.stratified_test(ids[order], y[order], 0.25, seed=42)
    assert set(ids[order][again]) == set(ids[test])
    assert set(ids[models.stratified_test(ids, y, 0.25, seed=7)]) != set(ids[test])


def test_cv_folds_hold_only_training_persons_and_are_balanced() -> None:
    ids = np.arange(300)
    y = (ids % 5 == 0).astype(np.int8)  # 60 outcomes
    test = models.stratified_test(ids, y, 0.2, seed=1)
    folds = models.cv_folds(ids, y, test, 3, seed=1)
    assert (folds[test] == -1).all() and (folds[~test] >= 0).all()
    sizes = [int((folds == f).sum()) for f in range(3)]
    cases = [int(y[folds == f].sum()) for f in range(3)]
    assert sizes == [80, 80, 80] and cases == [16, 16, 16]


def test_time_split_tests_index_dates_from_the_cut() -> None:
    t = np.array(["2018-06-30", "2019-01-01", "2020-03-01"], dtype="datetime64[us]")
    assert models.time_test(t, dt.date(2019, 1, 1)).tolist() == [False, True, True]


def test_feature_sets_select_by_domain_window_and_aggregation() -> None:
    code = np.array(["CONDITION//1", "CONDITION//1", "DRUG//2", "MEDS_BIRTH", "GENDER//8532"])
    window = np.array(["30d", "365d", "365d", "all", "all"])
    agg = np.array(["count", "count", "count", "age_years", "present"])
    assert models.select_features(code, window, agg, {"windows": ["365d"]}).tolist() == [1, 2]
    assert models.select_features(code, window, agg, {
        "domains": ["CONDITION", "GENDER"], "aggregations": ["count", "present"],
        "windows": []}).tolist() == [0, 1, 4]
    assert models.select_features(code, window, agg, {}).tolist() == [0, 1, 2, 3, 4]


def test_assign_split_follows_the_study_method(tmp_path: Path) -> None:
    frame = pl.DataFrame({
        "subject_id": np.arange(1, 41),
        "index_time": np.array(["2018-01-01"] * 30 + ["2019-06-01"] * 10,
                               dtype="datetime64[us]"),
        "label": np.arange(40) % 4 == 0,
        "split": ["train"] * 20 + ["tuning"] * 10 + ["held_out"] * 10})
    cases = {
        "stratified": ({"method": "stratified", "test_fraction": 0.25, "cv_folds": 2}, 11),
        "time": ({"method": "time", "test_from": "2019-01-01", "cv_folds": 2}, 10),
        "meds": ({"method": "meds", "cv_folds": 2}, 10),
    }
    for method, (split, n_test) in cases.items():
        study = study_with(tmp_path, {"family": "logistic_l2", "split": split})
        is_test, folds = models.assign_split(study, frame)
        assert int(is_test.sum()) == n_test, method
        assert (folds[is_test] == -1).all() and set(folds[~is_test]) == {0, 1}, method
        if method == "stratified":
            # round(10 cases x 0.25) = 3 (half up) and round(30 controls x 0.25) = 8
            assert int(frame["label"].to_numpy()[is_test].sum()) == 3
        else:  # the last ten persons: index dates from 2019 on, or the held_out split
            assert is_test[30:].all() and not is_test[:30].any(), method


def test_assign_split_draws_persons_not_episodes(tmp_path: Path) -> None:
    """A person's episodes (a target without first_only) go to test, or to one fold,
    together; a person counts in the outcome stratum if any episode has the outcome.  With
    one episode per person the draw is the same as by row."""
    ids = np.repeat(np.arange(1, 41), 3)  # 40 persons, 3 episodes each
    label = np.zeros(ids.size, dtype=bool)
    label[np.arange(0, ids.size, 3)[::4] + 1] = True  # persons 1, 5, 9, ...: the 2nd episode
    frame = pl.DataFrame({"subject_id": ids, "index_time": np.full(
        ids.size, np.datetime64("2018-01-01", "us")), "label": label, "split": "train"})
    study = study_with(tmp_path, {"family": "logistic_l2", "split": {
        "method": "stratified", "test_fraction": 0.25, "cv_folds": 2}})
    is_test, folds = models.assign_split(study, frame)
    by_person = pl.DataFrame({"id": ids, "test": is_test, "fold": folds}).group_by("id").agg(
        pl.col("test").n_unique().alias("tests"), pl.col("fold").n_unique().alias("folds"),
        pl.col("test").first())
    assert (by_person["tests"] == 1).all() and (by_person["folds"] == 1).all()
    # 10 persons with the outcome, 30 without: round(2.5) = 3 and round(7.5) = 8 tested
    tested = set(ids[is_test].tolist())
    assert len(tested) == 11 and len(tested & set(ids[label].tolist())) == 3
    single = frame.filter(pl.int_range(pl.len()) % 3 == 1)  # one episode per person
    once, once_folds = models.assign_split(study, single)
    assert set(single["subject_id"].to_numpy()[once].tolist()) == tested
    assert (once_folds == folds[1::3]).all()
