"""The I/O around the engine: a cohort's episodes from one shard of events (with their
attrition), an analysis's labels from its target's and outcome's episodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from cohortflow import events
from cohortflow.cohorts._concepts import CohortPlan
from cohortflow.cohorts._engine import (
    EPISODE_COLUMNS,
    Steps,
    label_steps,
    make_episodes,
    number_rows,
)
from cohortflow.cohorts._events import END_PREFIX
from cohortflow.errors import StudySpecError
from cohortflow.layout import shard_table
from cohortflow.study import Analysis, Cohort, Study


def plan_of(study: Study, cohort: Cohort, store: Path,
            phenotypes: Path | None = None) -> CohortPlan:
    """``cohort`` (one of ``study.library()``) resolved against the store's ``codes.parquet``
    with the study's concept sets (and the phenotype table ``phenotypes`` for its pgx
    criteria); its entry concept sets are checked now."""
    table = None if phenotypes is None else pl.read_parquet(
        phenotypes, columns=["subject_id", "gene", "phenotype"])
    plan = CohortPlan(cohort, study.concept_sets, events.read_codes(store), table)
    plan.check()
    return plan


NO_EVENTS = pl.Schema({"subject_id": pl.Int64(), "time": pl.Datetime("us"), "code": pl.String(),
                       "numeric_value": pl.Float32(), "unit": pl.String()})


def codes_read(plan: CohortPlan) -> list[str]:
    """Every code the episodes read for this plan: those of the concept sets it resolves
    while its steps are built (found by building them once over no events), their end-date
    codes, and the observation periods, births, deaths and genders."""
    make_episodes(plan)(pl.LazyFrame(schema=NO_EVENTS))
    resolved = {code for codes in plan.resolved() for code in codes}
    fixed = {events.OBSERVATION_START, events.OBSERVATION_END, events.BIRTH, events.DEATH}
    genders = plan.codes.filter(pl.col("code").str.starts_with("GENDER//"))["code"]
    return sorted(resolved | {END_PREFIX + c for c in resolved} | fixed | set(genders))


def _library_cohort(study: Study, cohort: str) -> Cohort:
    library = study.library()
    if cohort not in library:
        raise StudySpecError(f"unknown cohort '{cohort}'; this study's cohorts: "
                             f"{', '.join(sorted(library))}")
    return library[cohort]


def _collect_steps(steps: Steps) -> tuple[list[pl.DataFrame], list[dict[str, Any]]]:
    """Every step's rows (computed together) and the attrition: subjects and rows per step."""
    frames = pl.collect_all([frame for _, frame in steps])
    attrition = [
        {"step": name, "subjects": frame["subject_id"].n_unique(), "rows": frame.height}
        for (name, _), frame in zip(steps, frames, strict=True)
    ]
    return frames, attrition


#: Plans resolved in this process, by what they are a function of (see :func:`_shard_plan`).
_PLANS: dict[tuple[str, str, str], tuple[CohortPlan, list[str]]] = {}
_PLANS_KEPT = 8


def _file_identity(path: Path) -> tuple[str, int, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns


def _shard_plan(study: Study, cohort: str, store: Path, phenotypes: Path | None = None
                ) -> tuple[CohortPlan, list[str]]:
    """The plan of ``cohort`` against the store's codes and the codes its steps read,
    resolved once per process for every shard of the store (a warehouse vocabulary's
    descendants take longer to resolve than a shard's cohort steps to run).

    The key is the cohort's and the concept sets' content and the identity (path, inode, size
    and modification time) of the codes file and of the phenotype table ``phenotypes``, so a
    changed study, a rewritten store or new phenotypes resolve again."""
    spec = _library_cohort(study, cohort)
    try:
        files = [_file_identity(events.codes_path(store))]
        if phenotypes is not None:
            files.append(_file_identity(Path(phenotypes)))
    except OSError:
        return _resolve(study, spec, store, phenotypes)
    sets = {name: study.concept_sets[name].model_dump(mode="json")
            for name in sorted(study.concept_sets)}
    key = (spec.model_dump_json(), json.dumps(sets, sort_keys=True), json.dumps(files))
    if key not in _PLANS:
        if len(_PLANS) >= _PLANS_KEPT:
            del _PLANS[next(iter(_PLANS))]
        _PLANS[key] = _resolve(study, spec, store, phenotypes)
    return _PLANS[key]


def _resolve(study: Study, cohort: Cohort, store: Path, phenotypes: Path | None
             ) -> tuple[CohortPlan, list[str]]:
    plan = plan_of(study, cohort, store, phenotypes)
    return plan, codes_read(plan)


def build_shard(study: Study, cohort: str, store: Path, shard: str,
                phenotypes: Path | None = None) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The episodes (``EPISODE_COLUMNS``) of the library cohort ``cohort`` on one event-store
    shard, and the attrition of the steps that made them (``phenotypes``: the study's
    phenotype table, for a cohort with pgx criteria)."""
    plan, codes = _shard_plan(study, cohort, Path(store), phenotypes)
    # One read of the shard, of the codes the cohort needs: the steps scan these events
    # several times (memory: one shard).
    wanted = pl.Series(codes, dtype=pl.String).implode()
    shard_events = events.scan_shard(store, shard).filter(
        pl.col("code").is_in(wanted)).collect().lazy()
    frames, attrition = _collect_steps(make_episodes(plan)(shard_events))
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


def write_shard(study: Study, cohort: str, store: Path, shard: str, table: Path,
                attrition: Path, phenotypes: Path | None = None) -> None:
    """The cohort step of one (cohort, shard): the episodes into ``table`` (Parquet) and
    the attrition counts into ``attrition`` (JSON), each written atomically."""
    frame, steps = build_shard(study, cohort, Path(store), shard,
                               None if phenotypes is None else Path(phenotypes))
    events.write_parquet(frame.to_arrow(), Path(table))
    events.write_json(steps, Path(attrition))


def write_attrition(parts: list[Path], out: Path) -> None:
    """The attrition step: the per-shard attrition files ``parts`` summed
    (:func:`merge_attrition`) into ``out``, written atomically."""
    per_shard = [json.loads(Path(p).read_text()) for p in parts]
    events.write_json(merge_attrition(per_shard), Path(out))


def read_cohort(cohort_dir: Path, shards: list[str]) -> pl.DataFrame:
    """A cohort's episodes, shard after shard (the order of the feature tensor rows), with
    the ``shard`` of each."""
    return pl.concat(
        [pl.read_parquet(shard_table(cohort_dir, s)).with_columns(shard=pl.lit(s))
         for s in shards]
    )


def read_episodes(cohort_dir: Path, shards: list[str]) -> pl.DataFrame:
    """A cohort's episodes (``EPISODE_COLUMNS``), shard after shard, numbered ``row``
    0..n-1 in that order: a target's tensor rows."""
    tables = [pl.read_parquet(shard_table(cohort_dir, s)).select(EPISODE_COLUMNS)
              for s in shards]
    return number_rows(pl.concat(tables).lazy()).collect()


def outcome_rows(episodes: pl.DataFrame) -> pl.DataFrame:
    """An outcome cohort's episodes as the labels read them: ``(subject_id, time, day)``,
    the index time and the start date of each (for a concept-set outcome: its events)."""
    return episodes.select("subject_id", time="index_time", day="start")


def write_labels(study: Study, analysis: Analysis, target_dir: Path, outcome_dir: Path,
                 shards: list[str], labels_out: Path, attrition_out: Path) -> None:
    """The labels step of one analysis: the target's episodes labelled with the outcome
    cohort's rows in the analysis's time at risk (:func:`label_steps`), over all shards at
    once (episodes and outcome rows are cohort-sized; no event is read).

    ``labels_out``: ``LABEL_SCHEMA`` (the cohort table and the episode's tensor ``row``),
    sorted by ``row``.  ``attrition_out``: the target cohort's summed attrition
    (``<target_dir>/attrition.json``) followed by the label exclusion steps.
    """
    risk = study.risk_windows()[analysis.time_at_risk]
    target = read_episodes(Path(target_dir), shards)
    outcome = pl.concat([pl.read_parquet(shard_table(outcome_dir, s)).select(EPISODE_COLUMNS)
                         for s in shards])
    steps = label_steps(risk, target.lazy(), outcome_rows(outcome).lazy())
    frames, counts = _collect_steps(steps)
    cohort_steps = json.loads((Path(target_dir) / "attrition.json").read_text())
    exclusions = counts if steps[-1][0] else []  # "": no exclusion, no row dropped
    events.write_parquet(frames[-1].to_arrow(), Path(labels_out))
    events.write_json([*cohort_steps, *exclusions], Path(attrition_out))
