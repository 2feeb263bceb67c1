"""The order of a cohort row's times: an outcome counts on any day of the time at risk,
its last day included (OHDSI), and follow-up ends at the first outcome, so ``censor_time``
never precedes ``event_time``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from cohortflow.study import demo_study_path
from tests.helpers import build_labels
from tests.test_cohorts import ASTHMA, EXACERBATION, frame, period, plan, run


def test_outcome_later_on_the_last_day_at_risk_counts_and_ends_follow_up() -> None:
    # time at risk [day 1, day 365] from 2015-01-01: the last day at risk is 2016-01-01
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2015-01-01T09:00", ASTHMA),
               (1, "2016-01-01T15:30", EXACERBATION))
    cohort, _ = run(plan(), ev)
    assert cohort["label"].to_list() == [True]
    assert cohort["event_time"].to_list() == [datetime(2016, 1, 1, 15, 30)]
    assert cohort["censor_time"].to_list() == [datetime(2016, 1, 1, 15, 30)]


def test_outcome_later_on_the_last_observed_day_counts_and_ends_follow_up() -> None:
    ev = frame(*period(1, "2010-01-01", "2015-06-01"), (1, "2015-01-01", ASTHMA),
               (1, "2015-06-01T23:59", EXACERBATION))
    cohort, _ = run(plan(), ev)
    assert cohort["label"].to_list() == [True]
    assert cohort["censor_time"].to_list() == cohort["event_time"].to_list() == [
        datetime(2015, 6, 1, 23, 59)]


def test_follow_up_ends_at_the_first_outcome_or_at_the_last_day_at_risk() -> None:
    ev = frame(*period(1, "2010-01-01", "2020-01-01"), (1, "2015-01-01", ASTHMA),
               (1, "2015-03-01T08:00", EXACERBATION), (1, "2015-05-01", EXACERBATION),
               *period(2, "2010-01-01", "2020-01-01"), (2, "2015-01-01", ASTHMA))
    cohort, _ = run(plan(), ev)
    assert cohort.select("subject_id", "label", "event_time", "censor_time").rows() == [
        (1, True, datetime(2015, 3, 1, 8), datetime(2015, 3, 1, 8)),
        (2, False, None, datetime(2016, 1, 1)),  # the start of the last day at risk
    ]


def check_time_order(table: pl.DataFrame) -> None:
    """The invariants of a cohort table's times."""
    labelled = table.filter("label")
    assert labelled["event_time"].null_count() == 0
    assert table.filter(~pl.col("label"))["event_time"].null_count() == table.height \
        - labelled.height
    assert table.filter(pl.col("censor_time") < pl.col("event_time")).height == 0
    assert labelled.filter(pl.col("censor_time") != pl.col("event_time")).height == 0


def test_censor_time_never_precedes_event_time_in_a_real_label_table(
        event_store: Path, tmp_path: Path) -> None:
    _, table = build_labels(demo_study_path(), event_store, tmp_path)
    assert table.filter("label").height > 0
    check_time_order(table)
