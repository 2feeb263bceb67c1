"""The cohort engine: concept sets, entry events, observation, outcome labels, attrition.

The logic is a pure function over one shard's events (:func:`make_cohort`), so it is
testable on a five-row frame; :func:`build_shard` adds the I/O.  Dates follow OHDSI
semantics: windows are counted in whole days between calendar dates, both ends inclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cohortflow import events
from cohortflow.errors import StudySpecError
from cohortflow.spec import ConceptSet, Study

COHORT_SCHEMA = pl.Schema(
    [
        ("subject_id", pl.Int64()),
        ("index_time", pl.Datetime("us")),
        ("label", pl.Boolean()),
        ("event_time", pl.Datetime("us")),
        ("censor_time", pl.Datetime("us")),
    ]
)


def concept_codes(name: str, concept_set: ConceptSet, codes: pl.DataFrame) -> list[str]:
    """Event-store codes of a concept set, descendants expanded from ``parent_codes``.

    >>> codes = pl.DataFrame({"code": ["CONDITION//1", "CONDITION//2"],
    ...                       "parent_codes": [[], ["CONDITION//1"]]})
    >>> concept_codes("x", ConceptSet(include=[{"concept_id": 1}]), codes)
    ['CONDITION//1', 'CONDITION//2']
    """
    found: set[str] = set()
    for ref in concept_set.include:
        root = f"{concept_set.domain}{events.CODE_SEPARATOR}{ref.concept_id}"
        found |= events.descendants(codes, [root]) if ref.descendants else {root}
    known = found & set(codes["code"].to_list())
    if not known:
        ids = ", ".join(str(r.concept_id) for r in concept_set.include)
        raise StudySpecError(
            f"concept_sets.{name}: none of the concepts {ids} (domain {concept_set.domain}) "
            "occurs in the event store; fix: check the concept ids and the domain"
        )
    return sorted(known)


@dataclass(frozen=True)
class CohortRules:
    """Everything the per-shard engine needs, resolved to event-store codes."""

    entry_codes: list[str]
    first_only: bool
    prior_observation_days: int
    outcome_codes: list[str]
    tar_start_days: int
    tar_end_days: int

    @classmethod
    def from_study(cls, study: Study, codes: pl.DataFrame) -> CohortRules:
        cohort = study.cohort
        return cls(
            entry_codes=concept_codes(cohort.entry.concept_set,
                                      study.concept_sets[cohort.entry.concept_set], codes),
            first_only=cohort.entry.first_only,
            prior_observation_days=cohort.prior_observation_days,
            outcome_codes=concept_codes(cohort.outcome.concept_set,
                                        study.concept_sets[cohort.outcome.concept_set], codes),
            tar_start_days=cohort.outcome.time_at_risk.start_days,
            tar_end_days=cohort.outcome.time_at_risk.end_days,
        )


def observation_periods(ev: pl.LazyFrame) -> pl.LazyFrame:
    """Pair each subject's n-th OBSERVATION_PERIOD//START with its n-th //END."""

    def ends(code: str, name: str) -> pl.LazyFrame:
        return (
            ev.filter(pl.col("code") == code)
            .select("subject_id", pl.col("time").dt.date().alias(name))
            .sort("subject_id", name)
            .with_columns(pl.int_range(pl.len()).over("subject_id").alias("period"))
        )

    return ends(events.OBSERVATION_START, "obs_start").join(
        ends(events.OBSERVATION_END, "obs_end"), on=["subject_id", "period"]
    )


def make_cohort(rules: CohortRules) -> Callable[[pl.LazyFrame], list[tuple[str, pl.LazyFrame]]]:
    """Build the cohort step by step; each step is a named LazyFrame of the rows kept.

    The last step is the cohort table (``COHORT_SCHEMA``); the row counts of the steps are
    the attrition.
    """

    def run(ev: pl.LazyFrame) -> list[tuple[str, pl.LazyFrame]]:
        entry = ev.filter(pl.col("code").is_in(rules.entry_codes)).select(
            "subject_id", pl.col("time").alias("index_time")
        )
        if rules.first_only:
            entry = entry.group_by("subject_id").agg(pl.col("index_time").min())
        entry = entry.unique().sort("subject_id", "index_time")

        index_date = pl.col("index_time").dt.date()
        observed = (
            entry.join(observation_periods(ev), on="subject_id")
            .filter(
                (index_date >= pl.col("obs_start"))
                & (index_date <= pl.col("obs_end"))
                & ((index_date - pl.col("obs_start")).dt.total_days()
                   >= rules.prior_observation_days)
            )
            .select("subject_id", "index_time", "obs_end")
        )

        outcomes = ev.filter(pl.col("code").is_in(rules.outcome_codes)).select(
            "subject_id", pl.col("time").alias("outcome_time")
        )
        days = (pl.col("outcome_time").dt.date() - index_date).dt.total_days()
        first_event = (
            observed.join(outcomes, on="subject_id")
            .filter(days.is_between(rules.tar_start_days, rules.tar_end_days))
            .group_by("subject_id", "index_time")
            .agg(pl.col("outcome_time").min().alias("event_time"))
        )
        tar_end = (index_date + pl.duration(days=rules.tar_end_days)).cast(pl.Datetime("us"))
        labelled = (
            observed.join(first_event, on=["subject_id", "index_time"], how="left")
            .with_columns(
                label=pl.col("event_time").is_not_null(),
                censor_time=pl.min_horizontal(tar_end, pl.col("obs_end").cast(pl.Datetime("us"))),
            )
            .select(list(COHORT_SCHEMA))
            .cast(COHORT_SCHEMA)
            .sort("subject_id", "index_time")
        )
        return [
            ("Entry event (first occurrence)" if rules.first_only else "Entry event", entry),
            (f"At least {rules.prior_observation_days} days of prior observation", labelled),
        ]

    return run


def build_shard(study: Study, store: Path, shard: str) -> tuple[pl.DataFrame, list[dict]]:
    """The cohort table and attrition of one event-store shard."""
    rules = CohortRules.from_study(study, events.read_codes(store))
    steps = make_cohort(rules)(events.scan_shard(store, shard))
    frames = pl.collect_all([frame for _, frame in steps])
    attrition = [
        {"step": name, "subjects": frame["subject_id"].n_unique(), "rows": frame.height}
        for (name, _), frame in zip(steps, frames, strict=True)
    ]
    return frames[-1], attrition


def merge_attrition(per_shard: list[list[dict]]) -> list[dict]:
    """Sum the per-shard attrition step by step (every subject lives in one shard).

    >>> merge_attrition([[{"step": "a", "subjects": 2, "rows": 2}],
    ...                  [{"step": "a", "subjects": 3, "rows": 4}]])
    [{'step': 'a', 'subjects': 5, 'rows': 6}]
    """
    merged = [dict(step) for step in per_shard[0]]
    for shard in per_shard[1:]:
        for total, step in zip(merged, shard, strict=True):
            total["subjects"] += step["subjects"]
            total["rows"] += step["rows"]
    return merged


def cohort_shard_path(cohort_dir: Path, shard: str) -> Path:
    return Path(cohort_dir) / "shards" / f"{shard}.parquet"


def read_cohort(cohort_dir: Path, shards: list[str]) -> pl.DataFrame:
    """The whole cohort table, shard after shard (the order of the feature tensor rows)."""
    return pl.concat(
        [pl.read_parquet(cohort_shard_path(cohort_dir, s)).with_columns(shard=pl.lit(s))
         for s in shards]
    )
