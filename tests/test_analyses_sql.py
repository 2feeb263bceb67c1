"""Every label table of the multi-analysis seed study (seeds/studies/many.yaml) against plain
SQL on its OMOP data.

The study is run whole (`cohortflow run`, laptop profile; the session's ``many_run``, see
tests/conftest.py) on 3,000 synthetic persons; then each analysis's ``labels.parquet`` must
equal, row for row, what DuckDB computes from the synthetic CDM (``results/many/omop``)
with the OHDSI meaning of the study's definitions, written here again by hand: a target is
each person's first event of a concept (or a descendant) if it lies in an observation
period that began at least 365 days before; the time at risk is whole days from the index
date, both ends included, cut at the end of that observation period; the label is the first
outcome in it.  No cohortflow code computes the expected rows; only the tensor row numbers
use the event store's documented shard function (``events.shard_of``), since they number
the target's episodes shard by shard.  The same comparison also runs on the cohort and
label steps alone (no Snakemake), in the fast lane.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import yaml

from cohortflow import cohorts, events
from cohortflow.layout import Layout
from cohortflow.study import load_study
from tests.helpers import MANY_SHARDS, REPO

SEED_STUDY = REPO / "seeds" / "studies" / "many.yaml"
SHARDS = MANY_SHARDS

# ---- the study's definitions, by hand ------------------------------------------------------


@dataclass(frozen=True)
class Events:
    """Rows of one OMOP event table whose concept is ``concept`` (or a descendant)."""

    table: str
    kind: str  # the columns' prefix: <kind>_concept_id, <when>_start_date(time)
    when: str
    concept: int
    observed_only: bool = False  # a cohort outcome: only events inside an observation period

    def sql(self) -> str:
        """``person_id, time, day`` of every matching row (the time falls back to midnight)."""
        w = self.when
        rows = f"""
            SELECT person_id,
                   COALESCE({w}_start_datetime, CAST({w}_start_date AS TIMESTAMP)) AS time,
                   {w}_start_date AS day
            FROM {self.table}
            WHERE {self.kind}_concept_id IN (SELECT descendant_concept_id FROM concept_ancestor
                                     WHERE ancestor_concept_id = {self.concept})"""
        if not self.observed_only:
            return rows
        return f"""
            SELECT e.* FROM ({rows}) e
            WHERE EXISTS (SELECT 1 FROM observation_period o WHERE o.person_id = e.person_id
                AND e.day BETWEEN o.observation_period_start_date
                              AND o.observation_period_end_date)"""


@dataclass(frozen=True)
class Risk:
    """A time at risk: days ``start..end`` after the index date, both included."""

    start: int
    end: int
    prior_lookback: int | None = None  # drop rows with an outcome in [index - n, day start)
    min_days: int = 0  # drop rows observed fewer days at risk, unless they have the outcome


TARGETS = {
    "asthma": Events("condition_occurrence", "condition", "condition", 317009),
    "albuterol_new_users": Events("drug_exposure", "drug", "drug_exposure", 1154343),
    "otitis_media": Events("condition_occurrence", "condition", "condition", 372328),
}
OUTCOMES = {
    # a concept set: every event, observed or not
    "exacerbation": Events("condition_occurrence", "condition", "condition", 2000000003),
    "bronchitis": Events("condition_occurrence", "condition", "condition", 260139),
    # a cohort of visits: every visit of the kind inside an observation period
    "er_visit": Events("visit_occurrence", "visit", "visit", 9203, observed_only=True),
    "hospitalization": Events("visit_occurrence", "visit", "visit", 9201, observed_only=True),
}
RISKS = {
    "1y": Risk(1, 365),
    "2y_first": Risk(1, 730, prior_lookback=365, min_days=365),
    "30d": Risk(1, 30),
}
ANALYSES = sorted(
    [f"{t}__{o}__{r}" for t in TARGETS for o in OUTCOMES for r in ("1y", "2y_first")]
    + ["asthma__exacerbation__30d"])

PRIOR_OBSERVATION_DAYS = 365


def target_sql(target: Events) -> str:
    """The target's episodes: the first event ever, kept if 365 days of observation precede
    it in its observation period; the episode ends with that period."""
    return f"""
        WITH ev AS ({target.sql()}),
        first AS (SELECT person_id, MIN(time) AS index_time FROM ev GROUP BY person_id)
        SELECT f.person_id AS subject_id, f.index_time, CAST(f.index_time AS DATE) AS start,
               o.observation_period_end_date AS obs_end
        FROM first f JOIN observation_period o ON o.person_id = f.person_id
            AND CAST(f.index_time AS DATE) BETWEEN o.observation_period_start_date
                                               AND o.observation_period_end_date
            AND CAST(f.index_time AS DATE) - o.observation_period_start_date
                >= {PRIOR_OBSERVATION_DAYS}"""


def labels_sql(target: Events, outcome: Events, risk: Risk) -> str:
    """One row per target episode kept: the first outcome between the first and the last
    day at risk (the time at risk's end or the end of observation, whichever is first)."""
    keep = ["TRUE"]
    if risk.prior_lookback is not None:
        keep.append(f"""NOT EXISTS (SELECT 1 FROM outcome o WHERE o.person_id = t.subject_id
                        AND o.day < t.tar_start AND o.day >= t.start - {risk.prior_lookback})""")
    if risk.min_days:
        keep.append(f"(t.censor - t.tar_start + 1 >= {risk.min_days} "
                    "OR e.event_time IS NOT NULL)")
    return f"""
        WITH target AS ({target_sql(target)}),
        outcome AS ({outcome.sql()}),
        t AS (SELECT *, start + {risk.start} AS tar_start,
                     LEAST(start + {risk.end}, obs_end) AS censor FROM target),
        e AS (SELECT t.subject_id, MIN(o.time) AS event_time
              FROM t JOIN outcome o ON o.person_id = t.subject_id
                  AND o.day BETWEEN t.tar_start AND t.censor
              GROUP BY t.subject_id)
        SELECT t.subject_id, t.index_time, e.event_time IS NOT NULL AS label, e.event_time,
               COALESCE(e.event_time, CAST(t.censor AS TIMESTAMP)) AS censor_time
        FROM t LEFT JOIN e ON e.subject_id = t.subject_id
        WHERE {" AND ".join(keep)}"""


def connect(omop: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB over the synthetic CDM's Parquet tables."""
    con = duckdb.connect()
    for table in ("observation_period", "condition_occurrence", "drug_exposure",
                  "visit_occurrence"):
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM "
                    f"read_parquet('{omop / table}/*.parquet')")
    con.execute(f"CREATE VIEW concept_ancestor AS SELECT * FROM "
                f"read_parquet('{omop / 'concept_ancestor.parquet'}')")
    return con


def expected_labels(con: duckdb.DuckDBPyConnection, analysis: str, shards: int
                    ) -> pl.DataFrame:
    """The analysis's label table from SQL, with each episode's tensor row: the target's
    episodes numbered shard after shard, each shard in (subject, start, end, index) order
    (one episode per person here, so by subject)."""
    target, outcome, risk = analysis.split("__")
    episodes = con.sql(target_sql(TARGETS[target])).pl()
    shard = events.shard_of(episodes["subject_id"].to_numpy(), shards)
    numbered = (episodes.with_columns(shard=pl.Series(shard, dtype=pl.Int64))
                .sort("shard", "subject_id", "start", "obs_end", "index_time")
                .with_row_index("row").select("subject_id", pl.col("row").cast(pl.Int64)))
    labels = con.sql(labels_sql(TARGETS[target], OUTCOMES[outcome], RISKS[risk])).pl()
    return (labels.join(numbered, on="subject_id", how="left")
            .with_columns(pl.col("index_time", "event_time", "censor_time")
                          .cast(pl.Datetime("us")))
            .sort("row"))


# ---- the run -------------------------------------------------------------------------------


def test_the_sql_covers_every_analysis_of_the_seed_study() -> None:
    study = load_study(SEED_STUDY)
    assert sorted(a.id for a in study.analysis_list()) == ANALYSES
    windows = study.risk_windows()
    for name, risk in RISKS.items():
        w = windows[name]
        assert (w.start_days, w.end_days, w.min_days_at_risk) == (risk.start, risk.end,
                                                                   risk.min_days)
        assert w.exclude_prior_outcome == (risk.prior_lookback is not None)
        assert w.prior_outcome_lookback_days == risk.prior_lookback


def assert_labels_equal(got: pl.DataFrame, want: pl.DataFrame, analysis: str) -> None:
    """One analysis's label table equals the SQL's, row for row; it has outcomes, and its
    rows are tensor rows in order."""
    assert got.columns == ["subject_id", "index_time", "label", "event_time", "censor_time",
                           "row"], analysis
    want = want.select(got.columns)
    assert want.height > 50, analysis
    assert want["label"].sum() > 0, analysis
    assert got.equals(want), (analysis, got.height, want.height,
                              got.join(want, on=got.columns, how="anti").head(5),
                              want.join(got, on=got.columns, how="anti").head(5))
    assert np.all(np.diff(got["row"].to_numpy()) > 0), analysis


@pytest.mark.e2e
def test_every_label_table_equals_independent_sql(many_run: Path) -> None:
    con = connect(many_run / "omop")
    found = sorted(p.name for p in (many_run / "analyses").iterdir() if p.is_dir())
    assert found == ANALYSES
    for analysis in ANALYSES:
        assert_labels_equal(
            pl.read_parquet(many_run / "analyses" / analysis / "labels.parquet"),
            expected_labels(con, analysis, SHARDS), analysis)


def test_label_steps_equal_independent_sql(synth_omop: Path, event_store: Path,
                                           tmp_path: Path) -> None:
    """The cohort and label steps alone (as the rules call them, no Snakemake) on the
    session's small synthetic CDM: every analysis's labels equal the SQL's."""
    raw = yaml.safe_load(SEED_STUDY.read_text())
    (tmp_path / "many.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    study = load_study(tmp_path / "many.yaml")
    layout = Layout.of(tmp_path / "results", study.name)
    shards = events.list_shards(event_store)
    for name in study.cohorts_used():
        for shard in shards:
            cohorts.write_shard(study, name, event_store, shard,
                                layout.cohort_table(name, shard),
                                layout.cohort_shard_attrition(name, shard))
        cohorts.write_attrition([layout.cohort_shard_attrition(name, s) for s in shards],
                                layout.cohort_attrition(name))
    con = connect(synth_omop)
    for analysis in study.analysis_list():
        cohorts.write_labels(study, analysis, layout.cohort(analysis.target),
                             layout.cohort(analysis.outcome_cohort), shards,
                             layout.labels(analysis.id), layout.attrition(analysis.id))
        assert_labels_equal(pl.read_parquet(layout.labels(analysis.id)),
                            expected_labels(con, analysis.id, len(shards)), analysis.id)
