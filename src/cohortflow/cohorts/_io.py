"""The I/O around the engine: one shard in, its cohort table and attrition out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from cohortflow import events
from cohortflow.cohorts._concepts import CohortPlan
from cohortflow.cohorts._engine import make_cohort
from cohortflow.cohorts._events import END_PREFIX
from cohortflow.layout import shard_table
from cohortflow.study import Study


def plan_of(study: Study, store: Path) -> CohortPlan:
    """The study's cohort resolved against the store's ``codes.parquet`` (checked now)."""
    plan = CohortPlan(study.cohort, study.concept_sets, events.read_codes(store))
    plan.check()
    return plan


NO_EVENTS = pl.Schema({"subject_id": pl.Int64(), "time": pl.Datetime("us"), "code": pl.String(),
                       "numeric_value": pl.Float32(), "unit": pl.String()})


def codes_read(plan: CohortPlan) -> list[str]:
    """Every code the engine reads for this plan: those of the concept sets it resolves while
    its steps are built (found by building them once over no events), their end-date codes,
    and the observation periods, births, deaths and genders."""
    make_cohort(plan)(pl.LazyFrame(schema=NO_EVENTS))
    resolved = {code for codes in plan.resolved() for code in codes}
    fixed = {events.OBSERVATION_START, events.OBSERVATION_END, events.BIRTH, events.DEATH}
    genders = plan.codes.filter(pl.col("code").str.starts_with("GENDER//"))["code"]
    return sorted(resolved | {END_PREFIX + c for c in resolved} | fixed | set(genders))


def build_shard(study: Study, store: Path, shard: str) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The cohort table and attrition of one event-store shard."""
    plan = plan_of(study, store)
    # One read of the shard, of the codes the cohort needs: the steps scan these events
    # several times (memory: one shard).
    wanted = pl.Series(codes_read(plan), dtype=pl.String).implode()
    shard_events = events.scan_shard(store, shard).filter(
        pl.col("code").is_in(wanted)).collect().lazy()
    steps = make_cohort(plan)(shard_events)
    frames = pl.collect_all([frame for _, frame in steps])
    attrition = [
        {"step": name, "subjects": frame["subject_id"].n_unique(), "rows": frame.height}
        for (name, _), frame in zip(steps, frames, strict=True)
    ]
    return frames[-1], attrition


def merge_attrition(per_shard: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
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


def write_shard(study: Study, store: Path, shard: str, table: Path, attrition: Path) -> None:
    """The cohort step of one shard: its cohort table into ``table`` (Parquet) and its
    attrition counts into ``attrition`` (JSON), each written atomically."""
    frame, steps = build_shard(study, Path(store), shard)
    events.write_parquet(frame.to_arrow(), Path(table))
    events.write_json(steps, Path(attrition))


def write_attrition(parts: list[Path], out: Path) -> None:
    """The attrition step: the per-shard attrition files ``parts`` summed
    (:func:`merge_attrition`) into ``out``, written atomically."""
    per_shard = [json.loads(Path(p).read_text()) for p in parts]
    events.write_json(merge_attrition(per_shard), Path(out))


def read_cohort(cohort_dir: Path, shards: list[str]) -> pl.DataFrame:
    """The whole cohort table, shard after shard (the order of the feature tensor rows)."""
    return pl.concat(
        [pl.read_parquet(shard_table(cohort_dir, s)).with_columns(shard=pl.lit(s))
         for s in shards]
    )
