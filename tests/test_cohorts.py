"""The cohort engine on tiny hand-built event frames: entry, observation, labels."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import polars as pl
import pytest

from cohortflow import cohorts, events
from cohortflow.errors import StudySpecError
from cohortflow.study import Cohort, ConceptSet
from tests.helpers import ev as frame  # (subject, time, code[, value[, unit]]) rows

ASTHMA, CHILD_ASTHMA, EXACERBATION = "CONDITION//317009", "CONDITION//9", "CONDITION//3"
CODES = pl.DataFrame({
    "code": [ASTHMA, CHILD_ASTHMA, EXACERBATION, "DRUG//1", "DRUG//2", "DRUG_ERA//1",
             "MEASUREMENT//5", "VISIT//9201", "PROCEDURE//7", "OBSERVATION//8", "CONDITION//4"],
    "parent_codes": [[], [ASTHMA], [], [], ["DRUG//1"], [], [], [], [], [], []],
})
CONCEPT_SETS = {
    "asthma": ConceptSet(include=[{"concept_id": 317009}]),
    "exacerbation": ConceptSet(include=[{"concept_id": 3}]),
    "drug": ConceptSet(include=[{"concept_id": 1}], domain="DRUG"),
    "lab": ConceptSet(include=[{"concept_id": 5}], domain="MEASUREMENT"),
    "visit": ConceptSet(include=[{"concept_id": 9201}], domain="VISIT"),
    "other": ConceptSet(include=[{"concept_id": 4}]),
}

Row = tuple[Any, ...]


def period(subject: int, start: str, end: str) -> list[Row]:
    return [(subject, start, events.OBSERVATION_START), (subject, end, events.OBSERVATION_END)]


def span(subject: int, start: str, end: str, code: str) -> list[Row]:
    """An event with an end date, as the OMOP ingest writes it (start row + END row)."""
    days = (date.fromisoformat(end) - date.fromisoformat(start)).days
    return [(subject, start, code), (subject, end, cohorts.END_PREFIX + code, float(days))]


def plan(**cohort: Any) -> cohorts.CohortPlan:
    raw = {"entry": {"concept_set": "asthma"}, "outcome": {"concept_set": "exacerbation"}}
    return cohorts.CohortPlan(Cohort.model_validate(raw | cohort), CONCEPT_SETS, CODES)


def run(p: cohorts.CohortPlan, ev: pl.LazyFrame) -> tuple[pl.DataFrame, list[int]]:
    steps = cohorts.make_cohort(p)(ev)
    collected = [f.collect() for _, f in steps]
    return collected[-1], [f.height for f in collected]


def episodes(p: cohorts.CohortPlan, ev: pl.LazyFrame) -> list[tuple[int, date, date]]:
    last = cohorts.make_episodes(p)(ev)[-1][1]
    return last.select("subject_id", "start", "end").collect().rows()


def d(text: str) -> date:
    return date.fromisoformat(text)


def test_entry_is_first_occurrence_of_any_code_in_the_set() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"),
               (1, "2015-03-01", ASTHMA), (1, "2014-02-01", CHILD_ASTHMA),
               (1, "2013-01-01", "CONDITION//4"))
    cohort, counts = run(plan(), ev)
    assert cohort["index_time"].to_list() == [datetime(2014, 2, 1)]
    assert counts == [1, 1]


def test_all_entry_events_when_not_first_only() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"),
               (1, "2015-03-01", ASTHMA), (1, "2014-02-01", CHILD_ASTHMA))
    cohort, _ = run(plan(entry={"concept_set": "asthma", "first_only": False}), ev)
    assert cohort["index_time"].to_list() == [datetime(2014, 2, 1), datetime(2015, 3, 1)]


@pytest.mark.parametrize(("limit", "expected"), [("first", [datetime(2011, 2, 1)]),
                                                 ("last", [datetime(2015, 3, 1)])])
def test_entry_limit_applies_after_the_observation_window(limit: str, expected: list) -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2010-02-01", ASTHMA),
               (1, "2011-02-01", ASTHMA), (1, "2015-03-01", ASTHMA))
    entry = {"concept_set": "asthma", "first_only": False, "limit": limit}
    cohort, counts = run(plan(entry=entry), ev)
    assert cohort["index_time"].to_list() == expected
    assert counts == [3, 2, 1]  # events, after 365 days prior observation, after the limit


def test_first_occurrence_is_taken_before_the_observation_window() -> None:
    """A new user whose first use lacks prior observation is out, not re-entered later."""
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2010-02-01", ASTHMA),
               (1, "2015-03-01", ASTHMA))
    assert run(plan(), ev)[1] == [1, 0]


@pytest.mark.parametrize(("index", "kept"), [
    ("2011-01-01", True),    # exactly 365 days after the period start
    ("2010-12-31", False),   # 364 days
    ("2012-06-30", True),    # the period's last day
    ("2012-07-01", False),   # after the period
])
def test_prior_observation_boundary(index: str, kept: bool) -> None:
    ev = frame(*period(1, "2010-01-01", "2012-06-30"), (1, index, ASTHMA))
    cohort, counts = run(plan(), ev)
    assert cohort.height == int(kept)
    assert counts == [1, int(kept)]


@pytest.mark.parametrize(("index", "kept"), [("2012-05-31", True), ("2012-06-01", False)])
def test_post_observation_boundary(index: str, kept: bool) -> None:
    ev = frame(*period(1, "2010-01-01", "2012-06-30"), (1, index, ASTHMA))
    cohort, _ = run(plan(post_observation_days=30), ev)
    assert cohort.height == int(kept)


def test_index_must_be_inside_the_same_period_as_the_prior_observation() -> None:
    ev = frame(*period(1, "2005-01-01", "2008-01-01"), *period(1, "2010-01-01", "2012-01-01"),
               (1, "2010-03-01", ASTHMA))  # 59 days into its own period
    assert run(plan(), ev)[0].height == 0
    ev2 = frame(*period(1, "2005-01-01", "2008-01-01"), *period(1, "2010-01-01", "2012-01-01"),
                (1, "2011-03-01", ASTHMA))  # 424 days into the second period
    assert run(plan(), ev2)[0]["index_time"].to_list() == [datetime(2011, 3, 1)]


def test_overlapping_observation_periods_count_as_their_union() -> None:
    # [2009, 2011] and [2010-06, 2016]: the index in 2010-09 has 2009-01..2010-09 observed.
    ev = frame(*period(1, "2009-01-01", "2011-01-01"), *period(1, "2010-06-01", "2016-01-01"),
               (1, "2010-09-01", ASTHMA))
    cohort, _ = run(plan(), ev)
    assert cohort["censor_time"].to_list() == [datetime(2011, 9, 1)]  # TAR end, not 2011-01
    periods = cohorts.observation_periods(ev).collect()
    assert periods.rows() == [(1, d("2009-01-01"), d("2016-01-01"))]


def test_person_without_observation_period_is_not_in_the_cohort() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2015-01-01", EXACERBATION),
               (2, "2015-01-01", ASTHMA))  # subject 2 has no observation period
    cohort, counts = run(plan(), ev)
    assert cohort.height == 0
    assert counts == [1, 0]


def test_without_required_observation_every_event_enters() -> None:
    ev = frame((2, "2015-01-01", ASTHMA), *period(3, "2010-01-01", "2012-01-01"),
               (3, "2014-01-01", ASTHMA))
    p = plan(require_observation=False, prior_observation_days=0,
             exit={"strategy": "date_offset", "offset_days": 7})
    assert episodes(p, ev) == [(2, d("2015-01-01"), d("2015-01-08")),
                               (3, d("2014-01-01"), d("2014-01-08"))]
    cohort, _ = run(p, ev)
    assert cohort["censor_time"].to_list() == [datetime(2016, 1, 1), datetime(2015, 1, 1)]


@pytest.mark.parametrize(("outcome", "label"), [
    ("2015-01-01", False),   # index day: day 0 is outside [1, 365]
    ("2015-01-02", True),    # day 1
    ("2016-01-01", True),    # day 365
    ("2016-01-02", False),   # day 366
    ("2014-06-01", False),   # before index
])
def test_outcome_time_at_risk_boundaries(outcome: str, label: bool) -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2015-01-01", ASTHMA),
               (1, outcome, EXACERBATION))
    cohort, _ = run(plan(), ev)
    assert cohort["label"].to_list() == [label]
    assert cohort["event_time"].to_list() == [datetime.fromisoformat(outcome) if label else None]


def test_censor_time_is_the_earlier_of_observation_end_and_time_at_risk_end() -> None:
    ev = frame(*period(1, "2010-01-01", "2015-06-01"), (1, "2015-01-01", ASTHMA),
               *period(2, "2010-01-01", "2020-01-01"), (2, "2015-01-01", ASTHMA))
    cohort, _ = run(plan(), ev)
    assert cohort["censor_time"].to_list() == [datetime(2015, 6, 1), datetime(2016, 1, 1)]


def test_outcome_after_the_end_of_observation_is_not_counted() -> None:
    ev = frame(*period(1, "2010-01-01", "2015-06-01"), (1, "2015-01-01", ASTHMA),
               (1, "2015-07-01", EXACERBATION))
    assert run(plan(), ev)[0]["label"].to_list() == [False]


def test_first_outcome_in_window_is_the_event_time() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2015-01-01", ASTHMA),
               (1, "2015-05-01", EXACERBATION), (1, "2015-03-01", EXACERBATION))
    cohort, _ = run(plan(), ev)
    assert cohort["event_time"].to_list() == [datetime(2015, 3, 1)]


def test_exclude_prior_outcome_with_and_without_lookback() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2015-01-01", ASTHMA),
               (1, "2013-01-01", EXACERBATION),
               *period(2, "2010-01-01", "2020-01-01"), (2, "2015-01-01", ASTHMA),
               (2, "2015-01-01", EXACERBATION))  # on the index day: before TAR day 1
    everything = plan(outcome={"concept_set": "exacerbation", "exclude_prior_outcome": True})
    cohort, counts = run(everything, ev)
    assert cohort.height == 0 and counts == [2, 2, 0]
    recent = plan(outcome={"concept_set": "exacerbation", "exclude_prior_outcome": True,
                           "prior_outcome_lookback_days": 365})
    assert run(recent, ev)[0]["subject_id"].to_list() == [1]


def test_minimum_time_at_risk_keeps_early_outcomes_when_asked() -> None:
    ev = frame(*period(1, "2010-01-01", "2015-01-30"), (1, "2015-01-01", ASTHMA),  # 29 days
               *period(2, "2010-01-01", "2015-01-31"), (2, "2015-01-01", ASTHMA),  # 30 days
               *period(3, "2010-01-01", "2015-01-10"), (3, "2015-01-01", ASTHMA),
               (3, "2015-01-05", EXACERBATION))
    strict = {"concept_set": "exacerbation", "min_days_at_risk": 30,
              "keep_outcomes_under_min": False}
    assert run(plan(outcome=strict), ev)[0]["subject_id"].to_list() == [2]
    lenient = strict | {"keep_outcomes_under_min": True}
    cohort, counts = run(plan(outcome=lenient), ev)
    assert cohort["subject_id"].to_list() == [2, 3]
    assert counts == [3, 3, 2]


def test_time_at_risk_can_end_at_the_cohort_exit() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2015-01-01", ASTHMA),
               (1, "2015-02-15", EXACERBATION))
    tar = {"start_days": 1, "end_days": 0, "end_anchor": "exit"}
    p = plan(exit={"strategy": "date_offset", "offset_days": 30},
             outcome={"concept_set": "exacerbation", "time_at_risk": tar})
    cohort, _ = run(p, ev)
    assert cohort.row(0)[2:] == (False, None, datetime(2015, 1, 31))


def test_concept_set_expands_descendants_transitively_and_excludes() -> None:
    codes = pl.DataFrame({
        "code": [ASTHMA, CHILD_ASTHMA, "CONDITION//10", "CONDITION//11"],
        "parent_codes": [[], [ASTHMA], [CHILD_ASTHMA], []],
    })
    with_desc = ConceptSet(include=[{"concept_id": 317009}])
    without = ConceptSet(include=[{"concept_id": 317009, "descendants": False}])
    minus = ConceptSet(include=[{"concept_id": 317009}], exclude=[{"concept_id": 9}])
    minus_one = ConceptSet(include=[{"concept_id": 317009}],
                           exclude=[{"concept_id": 9, "descendants": False}])
    assert cohorts.concept_codes("a", with_desc, codes) == [
        "CONDITION//10", ASTHMA, CHILD_ASTHMA]
    assert cohorts.concept_codes("a", without, codes) == [ASTHMA]
    assert cohorts.concept_codes("a", minus, codes) == [ASTHMA]
    assert cohorts.concept_codes("a", minus_one, codes) == ["CONDITION//10", ASTHMA]


def test_concept_set_by_literal_meds_code() -> None:
    codes = pl.DataFrame({"code": ["ICD10CM//K92", "ICD10CM//K92.2"],
                          "parent_codes": [[], ["ICD10CM//K92"]]})
    meds = ConceptSet(include=[{"code": "ICD10CM//K92"}])
    assert cohorts.concept_codes("gi", meds, codes) == ["ICD10CM//K92", "ICD10CM//K92.2"]


def test_concept_set_with_no_known_concept_names_the_set() -> None:
    codes = pl.DataFrame({"code": [ASTHMA], "parent_codes": [[]]})
    missing = ConceptSet(include=[{"concept_id": 42}], domain="DRUG")
    with pytest.raises(StudySpecError, match=r"concept_sets\.nsaid: none of the concepts 42"):
        cohorts.concept_codes("nsaid", missing, codes)


def test_unknown_entry_concept_fails_before_any_work() -> None:
    p = cohorts.CohortPlan(plan().cohort, {**CONCEPT_SETS, "asthma": ConceptSet(
        include=[{"concept_id": 99}])}, CODES)
    with pytest.raises(StudySpecError, match=r"concept_sets\.asthma"):
        p.check()


def test_a_library_cohort_needs_no_outcome_but_its_entry_concepts() -> None:
    library = Cohort.model_validate({"entry": {"concept_set": "asthma"}})
    cohorts.CohortPlan(library, CONCEPT_SETS, CODES).check()
    unknown = {**CONCEPT_SETS, "asthma": ConceptSet(include=[{"concept_id": 99}])}
    with pytest.raises(StudySpecError, match=r"concept_sets\.asthma"):
        cohorts.CohortPlan(library, unknown, CODES).check()


def test_make_cohort_needs_the_single_form_outcome() -> None:
    library = cohorts.CohortPlan(Cohort.model_validate({"entry": {"concept_set": "asthma"}}),
                                 CONCEPT_SETS, CODES)
    with pytest.raises(StudySpecError, match="make_cohort needs a cohort with its outcome"):
        cohorts.make_cohort(library)
