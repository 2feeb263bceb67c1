"""The cohort engine: entry events → observation window → inclusion rules → exit and
censoring → era collapse (a cohort's episodes), then outcome labels (an analysis's), each step
a named LazyFrame (the attrition).

The episodes are a pure function of one shard's events, so memory is bounded by the shard;
the labels are a pure function of the target's episodes and the outcome's rows.
Dates follow OHDSI Circe: whole days between calendar dates, windows inclusive unless asked.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from cohortflow.cohorts._concepts import CohortPlan
from cohortflow.cohorts._events import merge_intervals, observation_periods, occurrences
from cohortflow.cohorts._rules import genotyped_flag, group_flag, matching
from cohortflow.errors import StudySpecError
from cohortflow.study import RiskWindow
from cohortflow.study._cohort import genotyped_first

GENOTYPED_STEP = "Genotyped (a sample linked to the person)"
"""The attrition step before a rule of type ALL with a pgx criterion of its own: persons
without genotypes fail that rule, and the attrition shows how many there were."""

COHORT_SCHEMA = pl.Schema(
    [
        ("subject_id", pl.Int64()),
        ("index_time", pl.Datetime("us")),
        ("label", pl.Boolean()),
        ("event_time", pl.Datetime("us")),
        ("censor_time", pl.Datetime("us")),
    ]
)
LABEL_SCHEMA = pl.Schema([*COHORT_SCHEMA.items(), ("row", pl.Int64())])
"""An analysis's labels: the cohort table's columns and the target episode's tensor row."""
EPISODE_COLUMNS = ["subject_id", "index_time", "start", "end", "obs_start", "obs_end"]
"""Episode rows between steps: dates ``start`` (index), ``end`` (entry event's end, later the
exit) and the observation period around the index."""

Steps = list[tuple[str, pl.LazyFrame]]


def _days(n: int | pl.Expr) -> pl.Expr:
    return pl.duration(days=n)


def _checkpoint(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Compute a step's rows once: later steps read them from several branches, which a lazy
    plan would recompute in each (one shard's episodes: small next to its events)."""
    return frame.collect().lazy()


def _limit(frame: pl.LazyFrame, limit: str) -> pl.LazyFrame:
    if limit == "all":
        return frame
    ordered = frame.sort("subject_id", "start", "index_time", "end")
    group = ordered.group_by("subject_id", maintain_order=True)
    return group.first() if limit == "first" else group.last()


def entry_steps(plan: CohortPlan, ev: pl.LazyFrame) -> Steps:
    """Entry events, the observation window and the entry limit (``EPISODE_COLUMNS``)."""
    cohort = plan.cohort
    criteria = cohort.entry.all_criteria()
    entry = pl.concat(
        [matching(plan, c, ev).select("subject_id", index_time="time", start="start", end="end")
         for c in criteria]
    ).unique().sort("subject_id", "index_time", "end")
    first = len(criteria) == 1 and criteria[0].first_occurrence
    steps: Steps = [("Entry event (first occurrence)" if first else "Entry event", entry)]

    periods = observation_periods(ev)
    if cohort.require_observation:
        observed = entry.join(periods, on="subject_id").filter(
            pl.col("start").is_between("obs_start", "obs_end")
            & ((pl.col("start") - pl.col("obs_start")).dt.total_days()
               >= cohort.prior_observation_days)
            & ((pl.col("obs_end") - pl.col("start")).dt.total_days()
               >= cohort.post_observation_days)
        )
        name = f"At least {cohort.prior_observation_days} days of prior observation"
        if cohort.post_observation_days:
            name += f" and {cohort.post_observation_days} days after"
    else:
        keys = ["subject_id", "index_time", "start", "end"]
        inside = entry.join(periods, on="subject_id").filter(
            pl.col("start").is_between("obs_start", "obs_end"))
        outside = entry.join(inside.select(keys), on=keys, how="anti").with_columns(
            obs_start=pl.lit(None, pl.Date), obs_end=pl.lit(None, pl.Date))
        observed = pl.concat([inside.select(EPISODE_COLUMNS), outside.select(EPISODE_COLUMNS)])
        name = ""
    observed = _checkpoint(observed.select(EPISODE_COLUMNS).unique().sort(
        "subject_id", "index_time", "end"))
    if name:
        steps.append((name, observed))
    else:  # the same rows as the entry events, now with their observation periods
        steps[-1] = (steps[-1][0], observed)
    if cohort.entry.limit != "all":
        observed = _limit(observed, cohort.entry.limit)
        steps.append((f"{cohort.entry.limit.capitalize()} qualifying entry event", observed))
    return steps


def rule_steps(plan: CohortPlan, episodes: pl.LazyFrame, ev: pl.LazyFrame) -> Steps:
    """One step per named inclusion rule, each keeping the episodes that pass it."""
    steps: Steps = []
    for rule in plan.cohort.inclusion_rules:
        if genotyped_first(rule):
            numbered = _checkpoint(episodes.with_row_index("episode"))
            typed = genotyped_flag(plan, numbered)
            episodes = _checkpoint(numbered.join(typed, on="episode").filter("ok")
                                   .select(EPISODE_COLUMNS))
            steps.append((GENOTYPED_STEP, episodes))
        numbered = _checkpoint(episodes.with_row_index("episode"))
        ok = group_flag(plan, rule, numbered, ev)
        episodes = _checkpoint(numbered.join(ok, on="episode").filter("ok")
                               .select(EPISODE_COLUMNS))
        steps.append((rule.name, episodes))
    if plan.cohort.limit != "all":
        episodes = _limit(episodes, plan.cohort.limit)
        steps.append((f"{plan.cohort.limit.capitalize()} episode per person", episodes))
    return steps


def exit_dates(plan: CohortPlan, episodes: pl.LazyFrame, ev: pl.LazyFrame) -> pl.LazyFrame:
    """Episodes with ``end`` replaced by the exit: the strategy's date, the first censoring
    event on or after index, or the end of observation, whichever is first."""
    spec = plan.cohort.exit
    numbered = _checkpoint(episodes.with_row_index("episode"))
    if spec.strategy == "observation_end":
        strategy = numbered.select("episode", exit=pl.col("obs_end"))
    elif spec.strategy == "date_offset":
        field = pl.col("start") if spec.date_field == "start" else pl.col("end")
        strategy = numbered.select("episode", exit=field + _days(spec.offset_days))
    else:
        exposures = occurrences(ev, plan.codes_of(spec.concept_set, spec.domain))
        if spec.days_supply_override is not None:
            exposures = exposures.with_columns(end=pl.col("start")
                                               + _days(spec.days_supply_override))
        eras = merge_intervals(exposures.select("subject_id", "start", "end"), spec.gap_days)
        strategy = (
            numbered.select("episode", "subject_id", index="start")
            .join(eras.select("subject_id", era_start="start",
                              exit=pl.col("end") + _days(spec.offset_days)), on="subject_id")
            .filter(pl.col("index").is_between("era_start", "exit"))
            .group_by("episode").agg(pl.col("exit").min())
        )
    ends = [strategy.select("episode", "exit")]
    for criterion in spec.censoring:
        hits = numbered.join(
            matching(plan, criterion, ev).select("subject_id", censor="start"), on="subject_id"
        ).filter((pl.col("censor") >= pl.col("start"))
                 & (pl.col("obs_end").is_null() | (pl.col("censor") <= pl.col("obs_end"))))
        ends.append(hits.select("episode", exit="censor"))
    exits = pl.concat(ends).group_by("episode").agg(pl.col("exit").min())
    # Entry events on the same day with different ends (two codes of one concept set) can
    # reach the same exit: a cohort is a set of (subject, start, end), so keep one of each.
    return (
        numbered.join(exits, on="episode", how="left")
        .with_columns(end=pl.min_horizontal("exit", "obs_end"))
        .select(EPISODE_COLUMNS)
        .unique()
    )


def make_episodes(plan: CohortPlan) -> Callable[[pl.LazyFrame], Steps]:
    """Steps up to the cohort episodes (``EPISODE_COLUMNS`` with ``end`` = cohort exit),
    OHDSI's cohort table: one row per (subject, cohort start, cohort end)."""

    def run(ev: pl.LazyFrame) -> Steps:
        steps = entry_steps(plan, ev)
        steps += rule_steps(plan, steps[-1][1], ev)
        episodes = exit_dates(plan, steps[-1][1], ev)
        pad = plan.cohort.exit.era_pad_days
        name = steps[-1][0]
        if pad is not None:
            episodes = merge_intervals(
                episodes, pad, keep=["index_time", "obs_start", "obs_end"]
            ).select(EPISODE_COLUMNS)
            name = f"Episodes collapsed (era pad {pad} days)"
            steps.append((name, episodes))
        # the last step is the cohort episodes, named after the last step that changed them
        steps[-1] = (name, episodes.sort("subject_id", "start", "end", "index_time"))
        return steps

    return run


def number_rows(episodes: pl.LazyFrame, offset: int = 0) -> pl.LazyFrame:
    """Episodes with ``row`` (Int64): their position, from ``offset`` (the tensor row when
    the episodes are a target's shard tables in shard order)."""
    return episodes.with_row_index("row", offset=offset).with_columns(
        pl.col("row").cast(pl.Int64))


def label_steps(risk: RiskWindow, episodes: pl.LazyFrame, outcome_rows: pl.LazyFrame) -> Steps:
    """The prediction labels: first outcome in the time at risk, censoring, exclusions.

    ``episodes`` are the target's (``EPISODE_COLUMNS`` plus ``row``, their tensor row, see
    :func:`number_rows`); ``outcome_rows`` are the outcome's ``(subject_id, time, day)``: the
    outcome cohort's index times and start dates.  The steps are the label exclusions
    ``risk`` asks for; the last one is the table (``COHORT_SCHEMA`` plus ``row``, sorted by
    ``row``), named after the last exclusion, or ``""`` when there is none (no row dropped).

    The time at risk is whole days, both ends included (OHDSI): an outcome on any day from
    its first to its last (the earlier of the time at risk's end and the end of observation)
    counts, whatever its time of day.  ``event_time`` is the time of the first such outcome
    (null without one).  ``censor_time`` is when follow-up ends: ``event_time`` for a
    labelled row, else the start (midnight) of the last day at risk.  So ``censor_time`` never
    precedes ``event_time``, and ``censor_time - index_time`` with ``label`` is the
    time-to-event pair.
    """
    anchor = {"index": pl.col("start"), "exit": pl.col("end")}
    rows = episodes.with_columns(
        tar_start=anchor[risk.start_anchor] + _days(risk.start_days),
        tar_end=anchor[risk.end_anchor] + _days(risk.end_days),
    ).with_columns(censor=pl.min_horizontal("tar_end", "obs_end"))
    rows = _checkpoint(rows)
    joined = rows.select("row", "subject_id", "start", "tar_start", "censor").join(
        outcome_rows.select("subject_id", "time", "day"), on="subject_id")
    first = (
        joined.filter(pl.col("day").is_between("tar_start", "censor"))
        .group_by("row").agg(event_time=pl.col("time").min())
    )
    # Follow-up ends at the first outcome: an outcome later on the last day at risk than
    # that day's midnight must not be followed by its own censoring.
    labelled = rows.join(first, on="row", how="left").with_columns(
        label=pl.col("event_time").is_not_null(),
        censor_time=pl.coalesce("event_time", pl.col("censor").cast(pl.Datetime("us"))),
    )
    steps: Steps = []
    if risk.exclude_prior_outcome:
        before = pl.col("day") < pl.col("tar_start")
        if risk.prior_outcome_lookback_days is not None:
            before = before & (pl.col("day") >= pl.col("start")
                               - _days(risk.prior_outcome_lookback_days))
        prior = joined.filter(before).select("row").unique()
        labelled = labelled.join(prior, on="row", how="anti")
        steps.append(("No outcome before the time at risk", labelled))
    if risk.min_days_at_risk:
        at_risk = (pl.col("censor") - pl.col("tar_start")).dt.total_days() + 1
        keep = at_risk >= risk.min_days_at_risk
        if risk.keep_outcomes_under_min:
            keep = keep | pl.col("label")
        labelled = labelled.filter(keep)
        steps.append((f"At least {risk.min_days_at_risk} days at risk", labelled))
    table = labelled.select(*COHORT_SCHEMA, "row").cast(LABEL_SCHEMA).sort("row")
    return [*steps[:-1], (steps[-1][0] if steps else "", table)]


def make_cohort(plan: CohortPlan) -> Callable[[pl.LazyFrame], Steps]:
    """A single-form cohort (with its outcome) on one shard's events, step by step: the
    episodes (:func:`make_episodes`), then the labels (:func:`label_steps`) with the
    outcome's matching events as outcome rows.

    The last step is the cohort table (``COHORT_SCHEMA``, sorted by its columns); the row
    counts of the steps are the attrition.  The workflow builds the same rows in two steps
    (a cohort's episodes, an analysis's labels); this is their composition, for tests.
    """
    outcome = plan.cohort.outcome
    if outcome is None:
        raise StudySpecError("make_cohort needs a cohort with its outcome (the single form "
                             "cohort: {..., outcome: {concept_set: NAME}}); fix: build the "
                             "episodes with make_episodes and the labels with label_steps")
    episodes = make_episodes(plan)
    risk = outcome.risk_window()

    def run(ev: pl.LazyFrame) -> Steps:
        steps = episodes(ev)
        outcome_rows = matching(plan, outcome, ev).select("subject_id", "time", day="start")
        labels = label_steps(risk, number_rows(steps[-1][1]), outcome_rows)
        table = labels[-1][1].drop("row").sort(list(COHORT_SCHEMA))
        if not labels[-1][0]:  # no label exclusion: the table takes the last step's name
            return [*steps[:-1], (steps[-1][0], table)]
        return [*steps, *labels[:-1], (labels[-1][0], table)]

    return run
