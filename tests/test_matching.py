"""Matched case-control sampling: every matched control satisfies every constraint (checked
by a direct computation over the pairs), no control is used twice, the draw is fixed by its
seed, a case without an eligible control keeps none, and the ratio is respected."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from pydantic import ValidationError

from cohortflow import events
from cohortflow.cohorts import match_controls, read_episodes
from cohortflow.cohorts._matching import (
    MATCH_ROWS,
    balance,
    match_counts,
    match_rows,
    person_facts,
)
from cohortflow.layout import Layout
from cohortflow.study import AnalysisGrid, Matching, load_study
from tests.helpers import run_study, write_many_study


def _rows(cases: int, controls: int, seed: int) -> pl.DataFrame:
    """Random rows: ``cases`` label-true then ``controls`` label-false, with a few nulls."""
    rng = np.random.default_rng(seed)
    n = cases + controls
    frame = pl.DataFrame({
        "row": np.arange(n, dtype=np.int64) * 3 + 7,  # ids that are not positions
        "subject_id": np.arange(n, dtype=np.int64) + 1000,
        "label": np.r_[np.ones(cases, bool), np.zeros(controls, bool)],
        "sex": rng.choice([8507, 8532], n).astype(np.int64),
        "age_years": rng.uniform(0, 18, n).round(3),
        "index_day": rng.integers(17_000, 18_000, n).astype(np.int64),
        "observation_days": rng.integers(0, 2_000, n).astype(np.int64),
    })
    # a control of unknown sex and one outside any observation period never match
    return frame.with_columns(
        sex=pl.when(pl.col("row") == 7 + 3 * (cases + 1)).then(None).otherwise("sex"),
        observation_days=pl.when(pl.col("row") == 7 + 3 * (cases + 2)).then(None)
        .otherwise("observation_days"))


def _violations(rows: pl.DataFrame, matched: pl.DataFrame, spec: Matching) -> list[str]:
    """Every broken constraint of every (case, control) pair, by plain Python."""
    by_row = {r["row"]: r for r in rows.rows(named=True)}
    problems = []
    for set_id, members in matched.group_by("match_set", maintain_order=True):
        case = by_row[int(set_id[0])]  # type: ignore[call-overload]
        if not case["label"]:
            problems.append(f"set {set_id}: its case is not label-true")
        for member in members["row"].to_list():
            if member == case["row"]:
                continue
            control = by_row[member]
            if control["label"]:
                problems.append(f"{member}: a label-true control")
            if spec.sex and (control["sex"] is None or control["sex"] != case["sex"]):
                problems.append(f"{member}: sex {control['sex']} != {case['sex']}")
            if spec.age_years is not None and not (
                    abs(control["age_years"] - case["age_years"]) <= spec.age_years):
                problems.append(f"{member}: age {control['age_years']} vs {case['age_years']}")
            if spec.index_days is not None and not (
                    abs(control["index_day"] - case["index_day"]) <= spec.index_days):
                problems.append(f"{member}: index day {control['index_day']}")
            if spec.observation_days is not None and (
                    control["observation_days"] is None
                    or abs(control["observation_days"] - case["observation_days"])
                    > spec.observation_days):
                problems.append(f"{member}: observation {control['observation_days']}")
    return problems


SPECS = [
    Matching(controls=4, age_years=1.0, index_days=90, observation_days=365),
    Matching(controls=2, sex=False, age_years=0.5, index_days=30, observation_days=None),
    Matching(controls=1, age_years=None, index_days=10, observation_days=100),
]


@pytest.mark.parametrize("spec", SPECS)
def test_every_matched_control_satisfies_every_constraint_and_is_used_once(
        spec: Matching) -> None:
    rows = _rows(cases=40, controls=3_000, seed=1)
    matched = match_controls(rows, spec, seed=5)
    assert matched["match_set"].n_unique() >= 30  # most cases found controls
    assert _violations(rows, matched, spec) == []
    assert matched["row"].is_unique().all()  # no control (and no case) twice
    sizes = matched.group_by("match_set").len()["len"]
    assert sizes.min() >= 2 and sizes.max() <= spec.controls + 1  # ratio respected
    # every match set is named after its case, which is in it
    cases = matched.filter(pl.col("row") == pl.col("match_set"))
    assert cases.height == matched["match_set"].n_unique()


def test_cases_with_enough_controls_get_exactly_k() -> None:
    rows = _rows(cases=10, controls=5_000, seed=2)
    spec = Matching(controls=3, age_years=2.0, index_days=200, observation_days=1_000)
    counts = match_counts(rows, match_controls(rows, spec, seed=1), spec.controls)
    assert counts == {"cases": 10, "cases_with_k": 10, "cases_with_fewer": 0,
                      "cases_with_none": 0, "controls": 30}


def test_the_draw_is_fixed_by_its_seed() -> None:
    rows = _rows(cases=30, controls=2_000, seed=3)
    spec = SPECS[0]
    first = match_controls(rows, spec, seed=11)
    assert first.equals(match_controls(rows, spec, seed=11))
    assert first.equals(match_controls(rows.reverse(), spec, seed=11))  # row order is no input
    assert not first.equals(match_controls(rows, spec, seed=12))


def test_a_case_without_an_eligible_control_keeps_none() -> None:
    rows = pl.DataFrame({
        "row": [0, 1, 2, 3, 4], "subject_id": [1, 2, 3, 4, 5],
        "label": [True, True, False, False, False],
        "sex": [8507, 8532, 8507, 8507, 8507],  # only men among the controls
        "age_years": [10.0, 10.0, 10.5, 11.0, 12.0],
        "index_day": [100, 100, 150, 190, 100],
        "observation_days": [400, 400, 400, 400, 400]}, schema=MATCH_ROWS)
    spec = Matching(controls=4, age_years=1.0, index_days=90, observation_days=0)
    matched = match_controls(rows, spec, seed=0)
    # the woman (row 1) has none; the man gets rows 2 and 3 (row 4: age 2 years off)
    assert matched.rows() == [(0, 0), (2, 0), (3, 0)]
    assert match_counts(rows, matched, 4) == {"cases": 2, "cases_with_k": 0,
                                              "cases_with_fewer": 1, "cases_with_none": 1,
                                              "controls": 2}


def test_tolerance_bounds_are_inclusive() -> None:
    rows = pl.DataFrame({
        "row": [0, 1, 2], "subject_id": [1, 2, 3], "label": [True, False, False],
        "sex": [8507, 8507, 8507], "age_years": [10.0, 11.0, 11.25],
        "index_day": [100, 190, 100], "observation_days": [400, 765, 400]}, schema=MATCH_ROWS)
    spec = Matching(controls=2, age_years=1.0, index_days=90, observation_days=365)
    assert match_controls(rows, spec, seed=0)["row"].to_list() == [0, 1]


def test_scarce_controls_go_to_the_cases_that_have_fewest() -> None:
    # case 0 can use only control 2; case 1 can use 2 or 3: both get one
    rows = pl.DataFrame({
        "row": [0, 1, 2, 3], "subject_id": [1, 2, 3, 4], "label": [True, True, False, False],
        "sex": [8507] * 4, "age_years": [10.0, 11.0, 10.5, 11.8],
        "index_day": [100] * 4, "observation_days": [0] * 4}, schema=MATCH_ROWS)
    spec = Matching(controls=1, age_years=0.9, index_days=0, observation_days=0)
    for seed in range(5):
        assert match_controls(rows, spec, seed=seed).rows() == [(0, 0), (1, 1), (2, 0), (3, 1)]


def test_a_million_controls_match_quickly_enough_to_plan_on() -> None:
    rows = _rows(cases=50, controls=1_000_000, seed=4)
    spec = SPECS[0]
    matched = match_controls(rows, spec, seed=1)
    assert _violations(rows, matched, spec) == []
    assert matched["match_set"].n_unique() == 50


def test_match_rows_measure_age_index_and_prior_observation() -> None:
    from datetime import date, datetime
    labels = pl.DataFrame({"row": [0, 1], "subject_id": [1, 2], "label": [True, False],
                           "index_time": [datetime(2020, 1, 1, 12), datetime(2021, 1, 1)]})
    episodes = pl.DataFrame({"row": [0, 1], "start": [date(2020, 1, 1), date(2021, 1, 1)],
                             "obs_start": [date(2019, 1, 1), None]})
    persons = pl.DataFrame({"subject_id": [1, 2], "birth": [datetime(2010, 1, 1), None],
                            "sex": [8507, 8532]})
    out = match_rows(labels, episodes, persons)
    assert out.row(0) == (0, 1, True, 8507, 3652 / 365.25, 18262, 365)
    assert out.row(1) == (1, 2, False, 8532, None, 18628, None)


def test_balance_compares_cases_with_all_controls_and_with_the_matched() -> None:
    rows = pl.DataFrame({
        "row": [0, 1, 2, 3], "subject_id": [1, 2, 3, 4], "label": [True, False, False, False],
        "sex": [8507, 8507, 8532, 8532], "age_years": [10.0, 10.0, 20.0, 30.0],
        "index_day": [100] * 4, "observation_days": [5, 5, 50, 50]}, schema=MATCH_ROWS)
    table = {r["variable"]: r for r in balance(rows, pl.DataFrame(
        {"row": [0, 1], "match_set": [0, 0]}))}
    age = table["Age at index (years)"]
    assert (age["cases_mean"], age["controls_mean_before"], age["controls_mean_after"]) == (
        10.0, 20.0, 10.0)
    assert age["smd_before"] < -1 and age["smd_after"] == 0.0
    assert table["Male share"]["controls_mean_before"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("block, message", [
    ({"controls": 0}, "greater than or equal to 1"),
    ({"age_years": -1}, "greater than or equal to 0"),
    ({"index_days": -3}, "greater than or equal to 0"),
    ({"ratio": 2}, "Extra inputs"),
])
def test_matching_blocks_are_validated(block: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AnalysisGrid.model_validate({"target": "a", "outcome": "x", "time_at_risk": "r",
                                     "matching": block})


def test_the_split_and_the_folds_keep_each_matched_set_whole() -> None:
    from cohortflow.models import assign_split

    rows = _rows(cases=60, controls=2_000, seed=6)
    matched = match_controls(rows, SPECS[0], seed=1)
    frame = matched.join(rows, on="row").select(
        "subject_id", "label", "match_set", index_time=pl.lit(None, pl.Datetime("us")),
        split=pl.lit("train"))
    is_test, folds = assign_split(load_study(), frame)
    sides = frame.with_columns(test=pl.Series(is_test), fold=pl.Series(folds)).group_by(
        "match_set").agg(pl.col("test").n_unique(), pl.col("fold").n_unique())
    assert sides["test"].max() == 1 and sides["fold"].max() == 1
    assert 0 < is_test.sum() < frame.height  # both sides drawn


# ---- a whole study -------------------------------------------------------------------------

MATCHED_ID, OTHER_ID = "asthma__exacerbation__1y", "asthma__bronchitis__1y"
MATCHING = {"controls": 2, "age_years": 2, "index_days": 365, "observation_days": 730}


def _two_analysis_study(path: Path, matching: dict[str, object] | None) -> Path:
    """The multi-analysis seed study at the suite's size with two analyses of one target:
    exacerbation (matched when ``matching`` is given) and bronchitis (never matched)."""
    write_many_study(path)
    raw = yaml.safe_load(path.read_text())
    first: dict[str, object] = {"target": "asthma", "outcome": "exacerbation",
                                "time_at_risk": "1y"}
    if matching is not None:
        first["matching"] = matching
    raw["analyses"] = [first, {"target": "asthma", "outcome": "bronchitis",
                               "time_at_risk": "1y"}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".snakemake_timestamp"}


@pytest.mark.e2e
def test_a_matched_analysis_trains_and_reports_and_leaves_the_others_unchanged(
        tmp_path: Path) -> None:
    from tests.test_rerun_keys import _dry_run, _rules

    workdir = tmp_path / "run"
    results = run_study(_two_analysis_study(tmp_path / "plain.yaml", None), workdir,
                        name="many")
    layout = Layout(results)
    before = {a: _files(layout.analysis(a)) for a in (MATCHED_ID, OTHER_ID)}
    assert not layout.matched(MATCHED_ID).exists()

    matched_study = _two_analysis_study(tmp_path / "matched.yaml", MATCHING)
    # adding a matching block reruns that analysis's matching, sweep and model (and the
    # shared report and manifest), no cohort, label or feature step, no other analysis
    jobs = _dry_run(matched_study, workdir)
    assert _rules(jobs) == {"match", "sweep_config", "model", "export", "report", "manifest"}
    assert all(OTHER_ID not in wildcards for rule, wildcards in jobs if rule != "sweep_config")
    run_study(matched_study, workdir, name="many")

    assert _files(layout.analysis(OTHER_ID)) == before[OTHER_ID]  # byte for byte
    assert layout.labels(MATCHED_ID).read_bytes() == before[MATCHED_ID]["labels.parquet"]

    # the matched set: every pair within its tolerances, by a direct computation
    study = load_study(matched_study)
    analysis = study.analysis(MATCHED_ID)
    assert analysis.matching is not None
    shards = events.list_shards(layout.store)
    labels = pl.read_parquet(layout.labels(MATCHED_ID))
    rows = match_rows(labels, read_episodes(layout.cohort("asthma"), shards),
                      person_facts(layout.store, shards, labels["subject_id"]))
    matched = pl.read_parquet(layout.matched(MATCHED_ID))
    assert _violations(rows, matched.select("row", "match_set"), analysis.matching) == []
    assert matched["row"].is_unique().all()
    record = json.loads(layout.matching(MATCHED_ID).read_text())
    assert record["counts"]["controls"] == int((~matched["label"]).sum()) > 0

    # the sweep trained on the matched rows, and the report shows the design
    predictions = pl.read_parquet(layout.model_predictions(MATCHED_ID))
    assert predictions.height == matched.height
    page = layout.report.read_text()
    assert "Matched case-control sampling" in page and "set by the 1:2 design" in page
    assert page.count("Matched case-control sampling") == 1  # the unmatched one has none

    # its model package refits on the matched rows (and checks the refit's predictions)
    from cohortflow import package

    assert package.contents(results, matched_study, analysis=MATCHED_ID)


def _many_raw(analyses: list[dict[str, object]]) -> dict[str, object]:
    from tests.helpers import MANY_STUDY

    raw = yaml.safe_load(MANY_STUDY.read_text())
    raw["analyses"] = analyses
    return dict(raw)


def test_a_study_gives_each_analysis_of_a_matched_entry_its_matching() -> None:
    from cohortflow.study import parse_study

    study = parse_study(_many_raw([
        {"targets": ["asthma", "otitis_media"], "outcome": "bronchitis", "time_at_risk": "1y",
         "matching": {"controls": 3, "age_years": None}},
        {"target": "asthma", "outcome": "exacerbation", "time_at_risk": "1y"}]))
    matchings = {a.id: a.matching for a in study.analysis_list()}
    assert matchings["asthma__exacerbation__1y"] is None
    spec = matchings["otitis_media__bronchitis__1y"]
    assert spec is not None and (spec.controls, spec.age_years, spec.index_days) == (3, None, 90)
    assert study.matching_digest("asthma__bronchitis__1y") != study.matching_digest(
        "asthma__exacerbation__1y")


def test_one_analysis_with_two_matchings_is_refused() -> None:
    from cohortflow.errors import StudySpecError
    from cohortflow.study import parse_study

    with pytest.raises(StudySpecError, match=r"analyses\.1\.matching.*also in analyses\.0"):
        parse_study(_many_raw([
            {"target": "asthma", "outcome": "bronchitis", "time_at_risk": "1y",
             "matching": {"controls": 3}},
            {"targets": ["asthma"], "outcome": "bronchitis", "time_at_risk": "1y"}]))


@pytest.mark.parametrize("labels", [[True, True], [False, False], []])
def test_no_case_or_no_control_matches_nothing(labels: list[bool]) -> None:
    n = len(labels)
    rows = pl.DataFrame({"row": range(n), "subject_id": range(n), "label": labels,
                         "sex": [8507] * n, "age_years": [1.0] * n, "index_day": [0] * n,
                         "observation_days": [0] * n}, schema=MATCH_ROWS)
    matched = match_controls(rows, SPECS[0], seed=0)
    assert matched.height == 0
    assert match_counts(rows, matched, 4)["cases_with_none"] == sum(labels)
    assert all(r["smd_after"] is None for r in balance(rows, matched))


def test_the_report_section_shows_the_design_and_hides_small_groups() -> None:
    from cohortflow.disclosure import Disclosure
    from cohortflow.report._matching import matching_html

    gate = Disclosure(Layout.of("results", "s"), 11)
    table = [{"variable": "Age at index (years)", "cases_mean": 8.25,
              "controls_mean_before": 9.5, "controls_mean_after": 8.5,
              "smd_before": -0.4, "smd_after": -0.05}]
    spec = {"controls": 4, "sex": True, "age_years": 1.0, "index_days": 90,
            "observation_days": 365}
    many = {"cases": 60, "cases_with_k": 50, "cases_with_fewer": 10,
            "cases_with_none": 0, "controls": 230}
    page = matching_html({"matching": spec, "counts": many, "balance": table}, gate)
    assert "1:4" in page and "set by the 1:4 design" in page
    assert "<td class=n>8.2</td>" in page and "<td class=n>-0.05</td>" in page
    assert "index date (± 90 days)" in page
    few = {"cases": 6, "cases_with_k": 6, "cases_with_fewer": 0, "cases_with_none": 0,
           "controls": 24}
    page = matching_html({"matching": spec, "counts": few, "balance": table}, gate)
    assert "8.2" not in page and "-0.05" not in page and "&lt;11" in page
    assert "<td class=n>9.5</td>" in page  # every label-false row: a large group


def test_a_matching_that_leaves_every_case_alone_fails_with_the_fix() -> None:
    from cohortflow.cohorts._matching import require_matches
    from cohortflow.errors import CohortflowError

    rows = pl.DataFrame({
        "row": [0, 1, 2], "subject_id": [1, 2, 3], "label": [True, False, False],
        "sex": [8507, 8532, 8532],  # only women among the controls
        "age_years": [10.0, 10.0, 10.0], "index_day": [100, 100, 100],
        "observation_days": [400, 400, 400]}, schema=MATCH_ROWS)
    spec = Matching(controls=2, age_years=0.5, index_days=30)
    matched = match_controls(rows, spec, seed=0)
    counts = match_counts(rows, matched, 2)
    with pytest.raises(CohortflowError) as error:
        require_matches("t__o__1y", spec, counts, 2)
    message = str(error.value)
    assert "'t__o__1y'" in message and "none of its 1 cases" in message
    assert "controls: 2, sex: true, age_years: 0.5, index_days: 30" in message
    assert "fix: widen the tolerances" in message and "more controls" in message
    with pytest.raises(CohortflowError, match=r"no case .* remove matching:"):
        require_matches("t__o__1y", spec, match_counts(rows.filter(~pl.col("label")),
                                                       matched, 2), 2)
    # one case with a control is enough
    rows = rows.with_columns(sex=pl.lit(8507, pl.Int64))
    require_matches("t__o__1y", spec, match_counts(rows, match_controls(rows, spec, 0), 2), 2)


def test_the_overview_marks_a_matched_analysis_and_shows_no_rate() -> None:
    from cohortflow import report
    from cohortflow.disclosure import Disclosure
    from cohortflow.study import Analysis, RiskWindow

    gate = Disclosure(Layout.of("results", "s"), 11)
    metrics = {"test": {"auroc": 0.7, "auroc_ci_low": 0.6, "auroc_ci_high": 0.8},
               "n_test": 100, "outcome_rate_test": 0.2}
    label = np.array([1] * 50 + [0] * 200)
    cells = [report.Cell.of(Analysis("t__o__1y", "t", "o", "1y", "o",
                                     matching=Matching(controls=4)), metrics, label),
             report.Cell.of(Analysis("t__p__1y", "t", "p", "1y", "p"), metrics, label)]
    page = report.overview_html(cells, {"1y": RiskWindow(start_days=1, end_days=365)}, gate)
    rates = re.findall(r"<span class=rate>([^<]*)</span>", page)
    assert rates == ["matched 1:4, 50 cases / 250 rows", "50 / 250 (20.0%)"]
    assert "not the outcome&#x27;s rate" in page or "not the outcome's rate" in page
    plain = report.overview_html(cells[1:], {"1y": RiskWindow(start_days=1, end_days=365)},
                                 gate)
    assert "matched 1:k" not in plain
