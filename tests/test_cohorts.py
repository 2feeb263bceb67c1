"""The cohort engine on tiny hand-built event frames."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

from cohortflow import cohorts, events
from cohortflow.errors import StudySpecError
from cohortflow.spec import ConceptSet

ASTHMA, CHILD_ASTHMA, EXACERBATION = "CONDITION//317009", "CONDITION//9", "CONDITION//3"


def frame(*rows: tuple[int, str | None, str]) -> pl.LazyFrame:
    """Events from (subject_id, 'YYYY-MM-DD' or None, code) rows."""
    return pl.LazyFrame(
        {
            "subject_id": [r[0] for r in rows],
            "time": [datetime.fromisoformat(r[1]) if r[1] else None for r in rows],
            "code": [r[2] for r in rows],
            "numeric_value": [None] * len(rows),
            "unit": [None] * len(rows),
        },
        schema=events.POLARS_EVENT_SCHEMA,
    )


def period(subject: int, start: str, end: str) -> list[tuple[int, str | None, str]]:
    return [(subject, start, events.OBSERVATION_START), (subject, end, events.OBSERVATION_END)]


def rules(**changes: object) -> cohorts.CohortRules:
    base: dict = {"entry_codes": [ASTHMA, CHILD_ASTHMA], "first_only": True,
                  "prior_observation_days": 365, "outcome_codes": [EXACERBATION],
                  "tar_start_days": 1, "tar_end_days": 365}
    return cohorts.CohortRules(**(base | changes))


def run(r: cohorts.CohortRules, ev: pl.LazyFrame) -> tuple[pl.DataFrame, list[int]]:
    steps = cohorts.make_cohort(r)(ev)
    collected = [f.collect() for _, f in steps]
    return collected[-1], [f.height for f in collected]


def test_entry_is_first_occurrence_of_any_code_in_the_set() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"),
               (1, "2015-03-01", ASTHMA), (1, "2014-02-01", CHILD_ASTHMA),
               (1, "2013-01-01", "CONDITION//999"))
    cohort, counts = run(rules(), ev)
    assert cohort["index_time"].to_list() == [datetime(2014, 2, 1)]
    assert counts == [1, 1]


def test_all_entry_events_when_not_first_only() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"),
               (1, "2015-03-01", ASTHMA), (1, "2014-02-01", CHILD_ASTHMA))
    cohort, _ = run(rules(first_only=False), ev)
    assert cohort["index_time"].to_list() == [datetime(2014, 2, 1), datetime(2015, 3, 1)]


@pytest.mark.parametrize(("index", "kept"), [
    ("2011-01-01", True),    # exactly 365 days after the period start
    ("2010-12-31", False),   # 364 days
    ("2012-06-30", True),    # the period's last day
    ("2012-07-01", False),   # after the period
])
def test_prior_observation_boundary(index: str, kept: bool) -> None:
    ev = frame(*period(1, "2010-01-01", "2012-06-30"), (1, index, ASTHMA))
    cohort, counts = run(rules(), ev)
    assert cohort.height == int(kept)
    assert counts == [1, int(kept)]


def test_index_must_be_inside_the_same_period_as_the_prior_observation() -> None:
    ev = frame(*period(1, "2005-01-01", "2008-01-01"), *period(1, "2010-01-01", "2012-01-01"),
               (1, "2010-03-01", ASTHMA))  # 59 days into its own period
    cohort, _ = run(rules(), ev)
    assert cohort.height == 0
    ev2 = frame(*period(1, "2005-01-01", "2008-01-01"), *period(1, "2010-01-01", "2012-01-01"),
                (1, "2011-03-01", ASTHMA))  # 424 days into the second period
    cohort2, _ = run(rules(), ev2)
    assert cohort2["index_time"].to_list() == [datetime(2011, 3, 1)]


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
    cohort, _ = run(rules(), ev)
    assert cohort["label"].to_list() == [label]
    assert cohort["event_time"].to_list() == [datetime.fromisoformat(outcome) if label else None]


def test_censor_time_is_the_earlier_of_observation_end_and_time_at_risk_end() -> None:
    ev = frame(*period(1, "2010-01-01", "2015-06-01"), (1, "2015-01-01", ASTHMA),
               *period(2, "2010-01-01", "2020-01-01"), (2, "2015-01-01", ASTHMA))
    cohort, _ = run(rules(), ev)
    assert cohort["censor_time"].to_list() == [datetime(2015, 6, 1), datetime(2016, 1, 1)]


def test_first_outcome_in_window_is_the_event_time() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2015-01-01", ASTHMA),
               (1, "2015-05-01", EXACERBATION), (1, "2015-03-01", EXACERBATION))
    cohort, _ = run(rules(), ev)
    assert cohort["event_time"].to_list() == [datetime(2015, 3, 1)]


def test_person_without_entry_event_or_period_is_not_in_the_cohort() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2015-01-01", EXACERBATION),
               (2, "2015-01-01", ASTHMA))  # subject 2 has no observation period
    cohort, counts = run(rules(), ev)
    assert cohort.height == 0
    assert counts == [1, 0]


def test_concept_set_expands_descendants_transitively() -> None:
    codes = pl.DataFrame({
        "code": [ASTHMA, CHILD_ASTHMA, "CONDITION//10", "CONDITION//11"],
        "parent_codes": [[], [ASTHMA], [CHILD_ASTHMA], []],
    })
    with_desc = ConceptSet(include=[{"concept_id": 317009}])
    without = ConceptSet(include=[{"concept_id": 317009, "descendants": False}])
    assert cohorts.concept_codes("a", with_desc, codes) == [
        "CONDITION//10", ASTHMA, CHILD_ASTHMA]
    assert cohorts.concept_codes("a", without, codes) == [ASTHMA]


def test_concept_set_with_no_known_concept_names_the_set() -> None:
    codes = pl.DataFrame({"code": [ASTHMA], "parent_codes": [[]]})
    missing = ConceptSet(include=[{"concept_id": 42}], domain="DRUG")
    with pytest.raises(StudySpecError, match=r"concept_sets\.nsaid: none of the concepts 42"):
        cohorts.concept_codes("nsaid", missing, codes)
