"""Inclusion rules: each criterion gives every episode a pass/fail flag; groups combine
flags with ALL, ANY, AT_MOST n or AT_LEAST n.

Episodes are rows ``episode, subject_id, start, end, obs_start, obs_end`` (dates; ``end`` is
the entry event's end date).  Windows count whole days from the anchor to the event date.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from cohortflow.cohorts._concepts import CohortPlan
from cohortflow.cohorts._events import occurrences, persons
from cohortflow.errors import StudySpecError
from cohortflow.study import (
    AgeRange,
    Count,
    Criterion,
    Group,
    Occurrence,
    PgxCriterion,
    RuleItem,
    Washout,
    Window,
)

SEX_CONCEPTS = {"female": 8532, "male": 8507}


def matching(plan: CohortPlan, criterion: Criterion, ev: pl.LazyFrame) -> pl.LazyFrame:
    """Occurrences of a criterion: its codes, value range, units and first-ever flag."""
    occ = occurrences(ev, plan.codes_of(criterion.concept_set, criterion.domain))
    if criterion.value is not None:
        if criterion.value.min is not None:
            occ = occ.filter(pl.col("numeric_value") >= criterion.value.min)
        if criterion.value.max is not None:
            occ = occ.filter(pl.col("numeric_value") <= criterion.value.max)
    if criterion.units is not None:
        occ = occ.filter(pl.col("unit").is_in(criterion.units))
    if criterion.first_occurrence:
        occ = occ.sort("subject_id", "time", "end").group_by("subject_id", maintain_order=True
                                                            ).first()
    return occ


def in_window(window: Window, day: pl.Expr) -> pl.Expr:
    """Whether a day offset lies in the window, honouring open and closed bounds.

    >>> w = Window(start_days=-30, end_days=0, end_inclusive=False)
    >>> pl.DataFrame({"d": [-31, -30, -1, 0]}).select(in_window(w, pl.col("d"))).to_series(
    ...     ).to_list()
    [False, True, True, False]
    """
    cond = pl.lit(True)
    if window.start_days is not None:
        cond = cond & (day >= window.start_days if window.start_inclusive
                       else day > window.start_days)
    if window.end_days is not None:
        cond = cond & (day <= window.end_days if window.end_inclusive
                       else day < window.end_days)
    return cond


def _count_ok(count: Count, n: pl.Expr) -> pl.Expr:
    if count.op == "at_least":
        return n >= count.n
    if count.op == "at_most":
        return n <= count.n
    return n == count.n


def occurrence_flag(plan: CohortPlan, rule: Occurrence, episodes: pl.LazyFrame,
                    ev: pl.LazyFrame) -> pl.LazyFrame:
    """``episode, ok``: whether the number of events in the window satisfies the count."""
    window = rule.window
    anchor = pl.col("start") if window.anchor == "index_start" else pl.col("end")
    event_date = pl.col("ev_start") if window.event_date == "start" else pl.col("ev_end")
    hits = episodes.join(
        matching(plan, rule, ev).select("subject_id", ev_start="start", ev_end="end"),
        on="subject_id",
    ).filter(in_window(window, (event_date - anchor).dt.total_days()))
    if window.same_observation_period:
        hits = hits.filter(pl.col("obs_start").is_null()
                           | pl.col("ev_start").is_between("obs_start", "obs_end"))
    counts = hits.group_by("episode").agg(n=pl.len())
    return (
        episodes.select("episode").join(counts, on="episode", how="left")
        .select("episode", ok=_count_ok(rule.count, pl.col("n").fill_null(0)))
    )


def age_flag(age: AgeRange, episodes: pl.LazyFrame, people: pl.LazyFrame) -> pl.LazyFrame:
    """Age at index as OHDSI counts it: the index year minus the year of birth."""
    years = pl.col("start").dt.year() - pl.col("birth_year")
    ok = years.is_not_null()
    if age.min is not None:
        ok = ok & (years >= age.min)
    if age.max is not None:
        ok = ok & (years <= age.max)
    return episodes.join(people, on="subject_id", how="left").select(
        "episode", ok=ok.fill_null(False))


def sex_flag(sexes: Sequence[str | int], episodes: pl.LazyFrame,
             people: pl.LazyFrame) -> pl.LazyFrame:
    ids = [SEX_CONCEPTS[s] if isinstance(s, str) else int(s) for s in sexes]
    return episodes.join(people, on="subject_id", how="left").select(
        "episode", ok=pl.col("gender").is_in(ids).fill_null(False))


def _phenotypes(plan: CohortPlan) -> pl.LazyFrame:
    if plan.phenotypes is None:
        raise StudySpecError("a pgx criterion needs the study's phenotype table "
                             "(genomics/phenotypes.parquet); fix: declare genomics: in the "
                             "study and run its genomics steps first")
    return plan.phenotypes.lazy()


def pgx_flag(plan: CohortPlan, pgx: PgxCriterion, episodes: pl.LazyFrame) -> pl.LazyFrame:
    """Whether the person's phenotype at ``pgx.gene`` is one of ``pgx.phenotype``; a person
    without genotypes (no row in the phenotype table) never matches."""
    wanted = pl.Series(pgx.phenotype, dtype=pl.String).implode()
    matched = (_phenotypes(plan).filter((pl.col("gene") == pgx.gene)
                                        & pl.col("phenotype").is_in(wanted))
               .select("subject_id").unique().with_columns(hit=pl.lit(True)))
    return episodes.join(matched, on="subject_id", how="left").select(
        "episode", ok=pl.col("hit").fill_null(False))


def genotyped_flag(plan: CohortPlan, episodes: pl.LazyFrame) -> pl.LazyFrame:
    """Whether the person has genotypes: a linked sample (a row in the phenotype table)."""
    typed = _phenotypes(plan).select("subject_id").unique().with_columns(hit=pl.lit(True))
    return episodes.join(typed, on="subject_id", how="left").select(
        "episode", ok=pl.col("hit").fill_null(False))


def washout_rule(washout: Washout) -> Occurrence:
    """A washout is 'exactly 0 events in the days before the index day', counting every
    recorded event, in or out of an observation period."""
    return Occurrence(
        concept_set=washout.concept_set, domain=washout.domain,
        count=Count(op="exactly", n=0),
        window=Window(start_days=None if washout.days is None else -washout.days, end_days=-1,
                      same_observation_period=False),
    )


def group_flag(plan: CohortPlan, group: Group, episodes: pl.LazyFrame,
               ev: pl.LazyFrame) -> pl.LazyFrame:
    """``episode, ok`` for a group of criteria (nested groups included)."""
    people = persons(ev)
    flags = [_item_flag(plan, item, episodes, ev, people) for item in group.criteria]
    joined = episodes.select("episode")
    for i, flag in enumerate(flags):
        joined = joined.join(flag.rename({"ok": f"ok{i}"}), on="episode", how="left")
    passed = pl.sum_horizontal([pl.col(f"ok{i}").fill_null(False).cast(pl.Int32)
                                for i in range(len(flags))])
    if group.type == "all":
        ok = passed == len(flags)
    elif group.type == "any":
        ok = passed >= 1
    elif group.type == "at_most":
        ok = passed <= (group.count or 0)
    else:
        ok = passed >= (group.count or 0)
    return joined.select("episode", ok=ok)


def _item_flag(plan: CohortPlan, item: RuleItem, episodes: pl.LazyFrame, ev: pl.LazyFrame,
               people: pl.LazyFrame) -> pl.LazyFrame:
    if item.occurrence is not None:
        return occurrence_flag(plan, item.occurrence, episodes, ev)
    if item.age is not None:
        return age_flag(item.age, episodes, people)
    if item.sex is not None:
        return sex_flag(item.sex, episodes, people)
    if item.washout is not None:
        return occurrence_flag(plan, washout_rule(item.washout), episodes, ev)
    if item.pgx is not None:
        return pgx_flag(plan, item.pgx, episodes)
    assert item.group is not None
    return group_flag(plan, item.group, episodes, ev)
