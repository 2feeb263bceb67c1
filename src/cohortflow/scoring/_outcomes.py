"""Outcomes of scored persons, from a later extract: the study's labels, after the fact."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cohortflow import cohorts, events
from cohortflow.cohorts import (
    EPISODE_COLUMNS,
    CohortPlan,
    label_steps,
    make_episodes,
    observation_periods,
    outcome_rows,
)
from cohortflow.errors import ScoringError
from cohortflow.package import ModelPackage
from cohortflow.scoring._definitions import Definitions
from cohortflow.study import Cohort, RiskWindow

LABEL_COLUMNS = ["row", "subject_id", "index_time", "label", "event_time", "censor_time"]


def outcomes(pkg: ModelPackage, store: Path, index: pl.DataFrame) -> pl.DataFrame:
    """Whether the packaged outcome happened in the packaged time at risk after each
    ``(subject_id, index_time)`` of ``index`` (an earlier scoring's
    ``private/index.parquet``), read from the event store of a later extract.

    The labels are the study's (:func:`cohortflow.cohorts.label_steps`, same time at risk,
    same population settings): each row's time at risk runs from its index date, and is
    cut at the end of the observation period holding the index date (``censor_time``);
    rows the time at risk's settings exclude (``min_days_at_risk``,
    ``exclude_prior_outcome``) are left out, and so is a row whose index date lies in no
    observation period of the later extract (the person is not observed there).  Columns
    :data:`LABEL_COLUMNS`; ``row`` is the row's position in ``index`` (to pair labels with
    scores), sorted by it.
    """
    defs = Definitions.of(pkg)
    risk = defs.time_at_risk
    if defs.outcome.cohort is not None:
        raise ScoringError(
            f"{pkg.path}: the packaged outcome is the cohort '{defs.outcome.cohort}', whose "
            "definition the package does not hold; fix: label an outcome given by a concept "
            "set, or compute these labels in the study")
    if "exit" in (risk.start_anchor, risk.end_anchor):
        raise ScoringError(
            f"{pkg.path}: the packaged time at risk is anchored at the cohort exit, which is "
            "not known at an as-of date; fix: package an analysis whose time at risk is "
            "anchored at the index")
    store = Path(store)
    plan = CohortPlan(Cohort.of_events(defs.outcome.criterion()), defs.concept_sets,
                      events.read_codes(store))
    plan.check()
    rows = index.select("subject_id", "index_time").with_row_index("row").with_columns(
        pl.col("row").cast(pl.Int64))
    tables = []
    for shard in events.list_shards(store):
        ev = events.scan_shard(store, shard)
        here = rows.join(ev.select("subject_id").unique().collect(), on="subject_id",
                         how="semi", maintain_order="left")
        if here.height == 0:
            continue
        tables.append(_shard_labels(plan, risk, ev, here))
    if not tables:
        return pl.DataFrame(schema={c: cohorts.LABEL_SCHEMA[c] for c in LABEL_COLUMNS})
    return pl.concat(tables).sort("row").select(LABEL_COLUMNS)


def _shard_labels(plan: CohortPlan, risk: RiskWindow, ev: pl.LazyFrame, rows: pl.DataFrame
                  ) -> pl.DataFrame:
    """The labels of one shard's rows: episodes from index date to the end of the
    observation period around it, the outcome cohort's rows of the shard."""
    periods = observation_periods(ev.filter(pl.col("code").is_in(
        [events.OBSERVATION_START, events.OBSERVATION_END])))
    episodes = (
        rows.lazy().with_columns(start=pl.col("index_time").dt.date())
        .join(periods, on="subject_id")
        .filter(pl.col("start").is_between("obs_start", "obs_end"))
        .with_columns(end=pl.col("obs_end"))
        .select(*EPISODE_COLUMNS, "row")
    )
    outcome = make_episodes(plan)(ev)[-1][1].collect()
    steps = label_steps(risk, episodes, outcome_rows(outcome).lazy())
    return steps[-1][1].collect()
