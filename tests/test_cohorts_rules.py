"""The cohort engine on tiny frames: entry domains, inclusion rules, exits, censoring, eras."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from cohortflow import cohorts, events
from tests.test_cohorts import ASTHMA, d, episodes, frame, period, plan, run, span

OBS = period(1, "2000-01-01", "2030-01-01")
INDEX = (1, "2015-01-01", ASTHMA)


def rule(*criteria: dict[str, Any], name: str = "rule", **group: Any) -> dict[str, Any]:
    return {"name": name, "criteria": list(criteria), **group}


def occurrence(start: int | None, end: int | None, op: str = "at_least", n: int = 1,
               **extra: Any) -> dict[str, Any]:
    window = {"start_days": start, "end_days": end} | extra.pop("window", {})
    return {"occurrence": {"concept_set": "drug", "count": {"op": op, "n": n},
                           "window": window, **extra}}


def kept(ev_rows: list, *rules: dict[str, Any], **cohort: Any) -> bool:
    p = plan(inclusion_rules=list(rules), **cohort)
    return run(p, frame(*OBS, INDEX, *ev_rows))[0].height == 1


# ---- entry domains --------------------------------------------------------------------


def test_entry_in_the_drug_domain_keeps_the_drug_end_date() -> None:
    ev = frame(*OBS, *span(1, "2015-01-01", "2015-01-31", "DRUG//2"))
    p = plan(entry={"concept_set": "drug"},
             exit={"strategy": "date_offset", "date_field": "end", "offset_days": 0})
    assert episodes(p, ev) == [(1, d("2015-01-01"), d("2015-01-31"))]


def test_drug_era_entry_uses_the_era_domain_and_all_events() -> None:
    ev = frame(*OBS, *span(1, "2015-01-01", "2015-03-01", "DRUG_ERA//1"),
               *span(1, "2016-01-01", "2016-02-01", "DRUG_ERA//1"),
               *span(1, "2014-01-01", "2014-02-01", "DRUG//1"))
    p = plan(entry={"concept_set": "drug", "domain": "DRUG_ERA", "first_only": False},
             exit={"strategy": "date_offset", "date_field": "end"})
    assert episodes(p, ev) == [(1, d("2015-01-01"), d("2015-03-01")),
                               (1, d("2016-01-01"), d("2016-02-01"))]


def test_overlapping_events_of_one_code_keep_their_own_end_dates() -> None:
    ev = frame(*OBS, *span(1, "2015-01-01", "2015-12-31", "DRUG//1"),
               *span(1, "2015-02-01", "2015-02-10", "DRUG//1"),
               *span(1, "2015-02-01", "2015-02-05", "DRUG//1"))
    p = plan(entry={"concept_set": "drug", "first_only": False},
             exit={"strategy": "date_offset", "date_field": "end"})
    assert episodes(p, ev) == [(1, d("2015-01-01"), d("2015-12-31")),
                               (1, d("2015-02-01"), d("2015-02-05")),
                               (1, d("2015-02-01"), d("2015-02-10"))]


def test_same_day_entries_reaching_the_same_exit_give_one_episode() -> None:
    # two events of the concept set at the same time, with different end dates
    ev = frame(*OBS, *span(1, "2015-02-01", "2015-02-10", "DRUG//1"),
               *span(1, "2015-02-01", "2015-02-05", "DRUG//2"))
    p = plan(entry={"concept_set": "drug", "first_only": False},
             exit={"strategy": "date_offset", "offset_days": 30})
    assert episodes(p, ev) == [(1, d("2015-02-01"), d("2015-03-03"))]
    by_end = plan(entry={"concept_set": "drug", "first_only": False},
                  exit={"strategy": "date_offset", "date_field": "end"})
    assert len(episodes(by_end, ev)) == 2  # different exits: two episodes


def test_null_end_date_ends_the_day_after_start() -> None:
    ev = frame(*OBS, (1, "2015-01-01", ASTHMA))  # no END row: a null condition end date
    p = plan(exit={"strategy": "date_offset", "date_field": "end"})
    assert episodes(p, ev) == [(1, d("2015-01-01"), d("2015-01-02"))]


@pytest.mark.parametrize(("value", "unit", "entered"), [
    (7.0, "mg/dL", True), (5.0, "mg/dL", True), (10.0, "mg/dL", True),
    (4.9, "mg/dL", False), (10.1, "mg/dL", False), (7.0, "mmol/L", False), (None, None, False),
])
def test_measurement_entry_with_value_range_and_unit(value: Any, unit: Any,
                                                     entered: bool) -> None:
    ev = frame(*OBS, (1, "2015-01-01", "MEASUREMENT//5", value, unit))
    entry = {"criteria": [{"concept_set": "lab", "value": {"min": 5, "max": 10},
                           "units": ["mg/dL"]}]}
    assert run(plan(entry=entry), ev)[0].height == int(entered)


def test_entry_criteria_of_several_domains_and_death() -> None:
    ev = frame(*OBS, (1, "2015-01-01", "VISIT//9201"), (1, "2016-01-01", "PROCEDURE//7"),
               (1, "2017-01-01", "OBSERVATION//8"), (1, "2018-01-01", events.DEATH))
    entry = {"criteria": [{"concept_set": "visit"}, {"domain": "DEATH"}], "limit": "all"}
    cohort, _ = run(plan(entry=entry), ev)
    assert cohort["index_time"].to_list() == [datetime(2015, 1, 1), datetime(2018, 1, 1)]


# ---- inclusion rules ------------------------------------------------------------------


@pytest.mark.parametrize(("day", "start", "end", "inclusive", "ok"), [
    ("2015-01-01", -30, 0, (True, True), True),     # the index day, closed upper bound
    ("2015-01-01", -30, 0, (True, False), False),   # the index day, open upper bound
    ("2014-12-02", -30, 0, (True, True), True),     # day -30, closed lower bound
    ("2014-12-02", -30, 0, (False, True), False),   # day -30, open lower bound
    ("2014-12-01", -30, 0, (True, True), False),    # day -31
    ("1990-01-01", None, -1, (True, True), False),  # before the observation period
    ("2001-01-01", None, -1, (True, True), True),   # unbounded lookback
    ("2020-01-01", 1, None, (True, True), True),    # unbounded look-ahead
])
def test_occurrence_window_bounds(day: str, start: int | None, end: int | None,
                                  inclusive: tuple[bool, bool], ok: bool) -> None:
    window = {"start_inclusive": inclusive[0], "end_inclusive": inclusive[1]}
    assert kept([(1, day, "DRUG//1")], rule(occurrence(start, end, window=window))) is ok


def test_events_outside_the_observation_period_count_only_when_asked() -> None:
    before = [(1, "1990-01-01", "DRUG//1")]
    anywhere = occurrence(None, -1, window={"same_observation_period": False})
    assert kept(before, rule(anywhere)) is True


@pytest.mark.parametrize(("op", "n", "events_", "ok"), [
    ("at_least", 2, 1, False), ("at_least", 2, 2, True),
    ("at_most", 1, 1, True), ("at_most", 1, 2, False),
    ("exactly", 0, 0, True), ("exactly", 0, 1, False), ("exactly", 2, 2, True),
])
def test_occurrence_counts(op: str, n: int, events_: int, ok: bool) -> None:
    rows = [(1, f"2014-0{m + 1}-01", "DRUG//2") for m in range(events_)]  # a descendant
    assert kept(rows, rule(occurrence(-365, 0, op=op, n=n))) is ok


def test_window_from_the_index_end_and_on_event_end_dates() -> None:
    rows = [*span(1, "2014-12-01", "2015-01-10", "DRUG//1")]
    on_end = occurrence(0, 30, window={"event_date": "end"})
    assert kept(rows, rule(on_end)) is True
    assert kept(rows, rule(occurrence(0, 30))) is False
    from_index_end = occurrence(0, 0, window={"anchor": "index_end"})  # index end = 01-02
    assert kept([(1, "2015-01-02", "DRUG//1")], rule(from_index_end)) is True


@pytest.mark.parametrize(("birth", "gender", "ok"), [
    ("1997-06-01", 8532, True),    # 2015 - 1997 = 18: OHDSI counts years only
    ("1998-01-01", 8532, False),   # 17
    ("1990-01-01", 8507, False),   # male
    (None, 8532, False),           # no birth date: age unknown
])
def test_age_and_sex(birth: str | None, gender: int, ok: bool) -> None:
    rows = [(1, None, f"GENDER//{gender}")]
    if birth:
        rows.append((1, birth, events.BIRTH))
    assert kept(rows, rule({"age": {"min": 18, "max": 64}}, {"sex": ["female"]})) is ok


def test_event_before_birth_fails_an_age_rule() -> None:
    rows = [(1, "2016-03-01", events.BIRTH)]  # the entry event is dated before birth
    assert kept(rows, rule({"age": {"min": 0}})) is False
    assert kept(rows) is True


@pytest.mark.parametrize(("day", "ok"), [
    ("2014-01-02", False),  # day -364
    ("2014-01-01", True),   # day -365: outside the 364-day washout
    ("2015-01-01", True),   # the index day itself is not "earlier"
    ("1990-01-01", True),   # long ago
])
def test_washout(day: str, ok: bool) -> None:
    assert kept([(1, day, "DRUG//1")], rule({"washout": {"concept_set": "drug",
                                                         "days": 364}})) is ok


def test_washout_over_all_history_counts_events_outside_observation() -> None:
    washout = rule({"washout": {"concept_set": "drug", "days": None}})
    assert kept([(1, "1990-01-01", "DRUG//1")], washout) is False


@pytest.mark.parametrize(("group", "count", "ok"), [
    ("all", None, False), ("any", None, True), ("at_most", 1, True), ("at_least", 2, False),
])
def test_group_types(group: str, count: int | None, ok: bool) -> None:
    criteria = (occurrence(-365, 0), {"age": {"min": 100}})
    r = rule(*criteria, type=group, **({"count": count} if count is not None else {}))
    assert kept([(1, "2014-06-01", "DRUG//1")], r) is ok


def test_nested_group_and_attrition_after_each_named_rule() -> None:
    nested = {"group": {"type": "any", "criteria": [{"sex": ["male"]},
                                                     occurrence(-365, -1)]}}
    rows = [(1, "2014-06-01", "DRUG//1"), (1, None, "GENDER//8532"),
            *period(2, "2000-01-01", "2030-01-01"), (2, "2015-01-01", ASTHMA),
            (2, None, "GENDER//8507")]
    p = plan(inclusion_rules=[rule(nested, name="male or treated"),
                              rule({"sex": ["female"]}, name="female")])
    steps = cohorts.make_cohort(p)(frame(*OBS, INDEX, *rows))
    assert [(name, f.collect().height) for name, f in steps] == [
        ("Entry event (first occurrence)", 2), ("At least 365 days of prior observation", 2),
        ("male or treated", 2), ("female", 1)]


# ---- exit, censoring, collapse --------------------------------------------------------


def test_exit_defaults_to_the_end_of_observation() -> None:
    assert episodes(plan(), frame(*OBS, INDEX)) == [(1, d("2015-01-01"), d("2030-01-01"))]


def test_date_offset_is_capped_at_the_end_of_observation() -> None:
    ev = frame(*period(1, "2010-01-01", "2015-01-20"), INDEX)
    p = plan(exit={"strategy": "date_offset", "offset_days": 30})
    assert episodes(p, ev) == [(1, d("2015-01-01"), d("2015-01-20"))]


def test_continuous_exposure_bridges_gaps_up_to_the_persistence_window() -> None:
    rows = [*span(1, "2015-01-01", "2015-01-31", "DRUG//1"),
            *span(1, "2015-03-02", "2015-03-31", "DRUG//2"),   # 30-day gap: same era
            *span(1, "2015-05-02", "2015-05-31", "DRUG//1")]   # 32-day gap: a new era
    p = plan(entry={"concept_set": "drug"},
             exit={"strategy": "continuous_exposure", "concept_set": "drug", "gap_days": 30,
                   "offset_days": 7})
    assert episodes(p, frame(*OBS, *rows)) == [(1, d("2015-01-01"), d("2015-04-07"))]
    tight = plan(entry={"concept_set": "drug"},
                 exit={"strategy": "continuous_exposure", "concept_set": "drug",
                       "gap_days": 29})
    assert episodes(tight, frame(*OBS, *rows)) == [(1, d("2015-01-01"), d("2015-01-31"))]


def test_days_supply_override_replaces_the_exposure_end() -> None:
    rows = [*span(1, "2015-01-01", "2015-06-30", "DRUG//1")]
    p = plan(entry={"concept_set": "drug"},
             exit={"strategy": "continuous_exposure", "concept_set": "drug", "gap_days": 0,
                   "days_supply_override": 10})
    assert episodes(p, frame(*OBS, *rows)) == [(1, d("2015-01-01"), d("2015-01-11"))]


def test_censoring_event_on_or_after_index_ends_the_episode() -> None:
    censoring = [{"concept_set": "other"}]
    p = plan(exit={"censoring": censoring})
    ev = frame(*OBS, INDEX, (1, "2014-01-01", "CONDITION//4"), (1, "2016-05-01", "CONDITION//4"),
               (1, "2017-01-01", "CONDITION//4"))
    assert episodes(p, ev) == [(1, d("2015-01-01"), d("2016-05-01"))]
    same_day = frame(*OBS, INDEX, (1, "2015-01-01", "CONDITION//4"))
    assert episodes(p, same_day) == [(1, d("2015-01-01"), d("2015-01-01"))]


@pytest.mark.parametrize(("pad", "expected"), [
    (None, [("2015-01-01", "2015-01-11"), ("2015-01-15", "2015-01-25")]),
    (3, [("2015-01-01", "2015-01-11"), ("2015-01-15", "2015-01-25")]),
    (4, [("2015-01-01", "2015-01-25")]),
])
def test_era_pad_collapses_nearby_episodes(pad: int | None, expected: list) -> None:
    ev = frame(*OBS, (1, "2015-01-01", ASTHMA), (1, "2015-01-15", ASTHMA))
    p = plan(prior_observation_days=0, entry={"concept_set": "asthma", "first_only": False},
             exit={"strategy": "date_offset", "offset_days": 10, "era_pad_days": pad})
    assert episodes(p, ev) == [(1, d(s), d(e)) for s, e in expected]


def test_era_of_same_day_entries_takes_the_earliest_index_time_whatever_the_order() -> None:
    """Two entry events on one day with one exit: the era's index time is the earlier one,
    not whichever row the engine met first (the cohort table is a pure function of the
    events)."""
    p = plan(prior_observation_days=0, entry={"concept_set": "asthma", "first_only": False},
             exit={"strategy": "date_offset", "offset_days": 10, "era_pad_days": 0})
    rows = [(1, "2015-01-01T16:00", ASTHMA), (1, "2015-01-01T08:00", ASTHMA),
            (1, "2015-01-01T12:00", ASTHMA)]
    for shift in range(len(rows)):
        ev = frame(*OBS, *rows[shift:], *rows[:shift])
        last = cohorts.make_episodes(p)(ev)[-1][1].collect()
        assert last.select("index_time", "start", "end").rows() == [
            (datetime(2015, 1, 1, 8), d("2015-01-01"), d("2015-01-11"))]
