"""The I/O around the engine: one shard in, its cohort table and attrition out."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cohortflow import events
from cohortflow.cohorts._concepts import CohortPlan
from cohortflow.cohorts._engine import make_cohort
from cohortflow.spec import Study


def plan_of(study: Study, store: Path) -> CohortPlan:
    """The study's cohort resolved against the store's ``codes.parquet`` (checked now)."""
    plan = CohortPlan(study.cohort, study.concept_sets, events.read_codes(store))
    plan.check()
    return plan


def build_shard(study: Study, store: Path, shard: str) -> tuple[pl.DataFrame, list[dict]]:
    """The cohort table and attrition of one event-store shard."""
    # One read of the shard: the steps scan its events several times (memory: one shard).
    shard_events = events.scan_shard(store, shard).collect().lazy()
    steps = make_cohort(plan_of(study, store))(shard_events)
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
