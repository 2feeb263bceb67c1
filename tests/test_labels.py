"""An analysis's labels from its target's episodes and its outcome's rows, on tiny frames:
the same rows as the single cohort table, the tensor ``row`` of each, the label exclusions
in the attrition, and an outcome that is another cohort of the library."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cohortflow import cohorts, events
from cohortflow.layout import shard_table
from cohortflow.study import Cohort, Criterion, parse_study
from tests.test_cohorts import (
    ASTHMA,
    CODES,
    CONCEPT_SETS,
    EXACERBATION,
    frame,
    period,
    plan,
    run,
)

# Two asthma episodes for subject 1 (its first is dropped by a prior outcome with a
# lookback), a short observation for subject 2, an outcome later on the last day at risk
# for subject 3, an outcome on the index day for subject 4, an outcome in a short
# observation for subject 5.
EVENTS = frame(
    *period(1, "2010-01-01", "2020-01-01"), (1, "2013-01-01", EXACERBATION),
    (1, "2015-01-01T09:00", ASTHMA), (1, "2016-06-01", ASTHMA),
    (1, "2016-09-01T12:00", EXACERBATION), (1, "2016-10-01", EXACERBATION),
    *period(2, "2010-01-01", "2015-01-20"), (2, "2015-01-01", ASTHMA),
    *period(3, "2010-01-01", "2020-01-01"), (3, "2015-01-01", ASTHMA),
    (3, "2016-01-01T15:30", EXACERBATION),
    *period(4, "2010-01-01", "2020-01-01"), (4, "2015-01-01", ASTHMA),
    (4, "2015-01-01T18:00", EXACERBATION),
    *period(5, "2010-01-01", "2015-01-15"), (5, "2015-01-01", ASTHMA),
    (5, "2015-01-10", EXACERBATION),
)
ENTRY_ALL = {"concept_set": "asthma", "first_only": False}
OUTCOMES = {
    "plain": {},
    "prior": {"exclude_prior_outcome": True},
    "prior_lookback": {"exclude_prior_outcome": True, "prior_outcome_lookback_days": 365},
    "min_strict": {"min_days_at_risk": 30, "keep_outcomes_under_min": False},
    "min_lenient": {"min_days_at_risk": 30},
    "everything": {"exclude_prior_outcome": True, "prior_outcome_lookback_days": 1000,
                   "min_days_at_risk": 100, "keep_outcomes_under_min": False},
    "exit_anchor": {"time_at_risk": {"start_days": 0, "end_days": 10, "end_anchor": "exit"}},
    "first_outcome": {"first_occurrence": True},
}


def labels_of(p: cohorts.CohortPlan, ev: pl.LazyFrame) -> list[tuple[str, pl.LazyFrame]]:
    """The labels as the workflow builds them: the target's episodes, the outcome's cohort
    of events (its episodes as outcome rows), then the label steps."""
    outcome = p.cohort.outcome
    assert outcome is not None
    target = cohorts.make_episodes(p)(ev)[-1][1]
    outcome_cohort = Cohort.of_events(Criterion(
        concept_set=outcome.concept_set, domain=outcome.domain,
        first_occurrence=outcome.first_occurrence))
    outcome_plan = cohorts.CohortPlan(outcome_cohort, CONCEPT_SETS, CODES)
    rows = cohorts.outcome_rows(cohorts.make_episodes(outcome_plan)(ev)[-1][1].collect())
    return cohorts.label_steps(outcome.risk_window(), cohorts.number_rows(target),
                               rows.lazy())


@pytest.mark.parametrize("name", list(OUTCOMES))
def test_labels_from_episodes_and_outcome_rows_equal_the_single_cohort_table(
        name: str) -> None:
    p = plan(entry=ENTRY_ALL, exit={"strategy": "date_offset", "offset_days": 200},
             outcome={"concept_set": "exacerbation", **OUTCOMES[name]})
    table, counts = run(p, EVENTS)
    steps = labels_of(p, EVENTS)
    labels = steps[-1][1].collect()
    assert labels.schema == cohorts.LABEL_SCHEMA
    assert labels["row"].is_sorted()
    assert labels.drop("row").sort(list(cohorts.COHORT_SCHEMA)).equals(table)
    # the label exclusions are the single table's last steps, with the same counts
    named = [n for n, _ in steps if n]
    single = [n for n, _ in cohorts.make_cohort(p)(EVENTS)]
    assert single[len(single) - len(named):] == named
    assert [f.collect().height for n, f in steps if n] == counts[len(counts) - len(named):]


def test_labels_keep_the_tensor_row_of_each_episode() -> None:
    p = plan(entry=ENTRY_ALL, outcome={"concept_set": "exacerbation",
                                       "exclude_prior_outcome": True,
                                       "prior_outcome_lookback_days": 1000})
    target = cohorts.make_episodes(p)(EVENTS)[-1][1].collect()
    labels = labels_of(p, EVENTS)[-1][1].collect()
    # row n of the labels is the n-th target episode: same subject, same index time
    kept = target.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64)).join(
        labels, on="row")
    assert target["subject_id"].to_list() == [1, 1, 2, 3, 4, 5]
    # out: subject 1's 2015 episode (outcome 730 days before), subject 4 (on the index day)
    assert labels["row"].to_list() == [1, 2, 3, 5]
    assert kept.height == labels.height
    assert (kept["subject_id"] == kept["subject_id_right"]).all()
    assert (kept["index_time"] == kept["index_time_right"]).all()


# ---- write_labels: a cohort outcome, over two shards --------------------------------------

def d(text: str) -> date:
    return date.fromisoformat(text)


def episode(subject: int, index: str, end: str, obs: tuple[str, str]) -> dict[str, Any]:
    time = datetime.fromisoformat(index)
    return {"subject_id": subject, "index_time": time, "start": time.date(), "end": d(end),
            "obs_start": d(obs[0]), "obs_end": d(obs[1])}


def write_cohort(folder: Path, shards: dict[str, list[dict[str, Any]]]) -> None:
    """Episode tables as a cohort step writes them, and the summed attrition."""
    schema = {"subject_id": pl.Int64, "index_time": pl.Datetime("us"), "start": pl.Date,
              "end": pl.Date, "obs_start": pl.Date, "obs_end": pl.Date}
    for shard, rows in shards.items():
        table = pl.DataFrame(rows, schema=schema, orient="row")
        shard_table(folder, shard).parent.mkdir(parents=True, exist_ok=True)
        events.write_parquet(table.to_arrow(), shard_table(folder, shard))
    every = [r for rows in shards.values() for r in rows]
    events.write_json([{"step": "Entry event", "subjects": len({r["subject_id"] for r in every}),
                        "rows": len(every)}], folder / "attrition.json")


LONG = ("2010-01-01", "2020-01-01")
STUDY = {
    "name": "labels", "source": {"synth": {"persons": 10}},
    "concept_sets": {"asthma": {"include": [{"concept_id": 317009}]},
                     "er": {"include": [{"concept_id": 9203}], "domain": "VISIT"}},
    "cohorts": {"asthma": {"entry": {"concept_set": "asthma"}},
                "er_visit": {"entry": {"concept_set": "er", "first_only": False},
                             "prior_observation_days": 0}},
    "outcomes": {"er": {"cohort": "er_visit"}},
    "times_at_risk": {"1y": {"start_days": 1, "end_days": 365, "exclude_prior_outcome": True,
                             "prior_outcome_lookback_days": 365, "min_days_at_risk": 60,
                             "keep_outcomes_under_min": False}},
    "analyses": [{"target": "asthma", "outcome": "er", "time_at_risk": "1y"}],
}


def test_write_labels_numbers_rows_over_shards_and_appends_the_exclusions(
        tmp_path: Path) -> None:
    study = parse_study(STUDY)
    analysis = study.analysis_list()[0]
    assert (analysis.target, analysis.outcome_cohort) == ("asthma", "er_visit")
    target, outcome = tmp_path / "cohorts" / "asthma", tmp_path / "cohorts" / "er_visit"
    write_cohort(target, {
        "0": [episode(1, "2015-01-01T09:00", "2020-01-01", LONG),    # row 0: outcome
              episode(2, "2015-01-01", "2015-02-01", ("2010-01-01", "2015-02-01"))],  # prior
        "1": [episode(3, "2015-06-01", "2020-01-01", LONG),          # row 2: no outcome
              episode(3, "2017-01-01", "2020-01-01", LONG),          # row 3: outcome
              episode(4, "2015-06-01", "2015-07-01", ("2010-01-01", "2015-07-01"))],  # short
    })
    write_cohort(outcome, {
        "0": [episode(1, "2015-03-01T10:00", "2015-03-01", LONG),
              episode(2, "2014-12-01", "2014-12-01", LONG)],
        "1": [episode(3, "2017-02-01T08:30", "2017-02-01", LONG)],
    })
    labels_out, attrition_out = tmp_path / "labels.parquet", tmp_path / "attrition.json"
    cohorts.write_labels(study, analysis, target, outcome, ["0", "1"], labels_out,
                         attrition_out)
    labels = pl.read_parquet(labels_out)
    assert labels.schema == cohorts.LABEL_SCHEMA
    assert labels.rows() == [
        (1, datetime(2015, 1, 1, 9), True, datetime(2015, 3, 1, 10),
         datetime(2015, 3, 1, 10), 0),
        (3, datetime(2015, 6, 1), False, None, datetime(2016, 5, 31), 2),
        (3, datetime(2017, 1, 1), True, datetime(2017, 2, 1, 8, 30),
         datetime(2017, 2, 1, 8, 30), 3),
    ]
    assert json.loads(attrition_out.read_text()) == [
        {"step": "Entry event", "subjects": 4, "rows": 5},  # the target cohort's own steps
        {"step": "No outcome before the time at risk", "subjects": 3, "rows": 4},
        {"step": "At least 60 days at risk", "subjects": 2, "rows": 3},
    ]


def test_write_labels_without_exclusions_keeps_the_target_attrition(tmp_path: Path) -> None:
    raw = {**STUDY, "times_at_risk": {"1y": {"start_days": 1, "end_days": 365}}}
    study = parse_study(raw)
    analysis = study.analysis_list()[0]
    target, outcome = tmp_path / "target", tmp_path / "outcome"
    write_cohort(target, {"0": [episode(1, "2015-01-01", "2020-01-01", LONG)],
                          "1": [episode(2, "2015-01-01", "2020-01-01", LONG)]})
    write_cohort(outcome, {"0": [episode(1, "2014-12-01", "2014-12-01", LONG)], "1": []})
    cohorts.write_labels(study, analysis, target, outcome, ["0", "1"],
                         tmp_path / "labels.parquet", tmp_path / "attrition.json")
    labels = pl.read_parquet(tmp_path / "labels.parquet")
    assert labels.select("subject_id", "label", "row").rows() == [(1, False, 0), (2, False, 1)]
    assert json.loads((tmp_path / "attrition.json").read_text()) == json.loads(
        (target / "attrition.json").read_text())
