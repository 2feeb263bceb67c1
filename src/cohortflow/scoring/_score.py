"""Scoring: the packaged features of given persons at given index times, the model's
scores, and the steps of an as-of scoring run (eligible persons, features, scores)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cohortflow import cohorts, events, package, privacy
from cohortflow.cohorts._io import codes_read
from cohortflow.features import aggregate_shard, code_map, dense_block
from cohortflow.package import ModelPackage
from cohortflow.scoring._asof import ELIGIBLE_SCHEMA, eligible_steps
from cohortflow.scoring._definitions import Definitions, check_store

FEATURES_FILE = "values.parquet"
"""The run's feature matrix inside ``features/``: ``subject_id`` then one float32 column per
packaged column (named by its key), in packaged order, one row per scored person."""
HISTOGRAM_EDGES = tuple(round(0.1 * i, 1) for i in range(11))
"""Score histogram bins of the shared summary before pooling: tenths of [0, 1]."""


def feature_matrix(pkg: ModelPackage, store: Path, index: pl.DataFrame
                   ) -> tuple[np.ndarray, dict[str, int]]:
    """The packaged feature columns (float32, packaged order, rows in ``index`` order) of
    each ``(subject_id, index_time)`` row of ``index``, built from the event store with the
    packaged definitions only, as the study's features step builds its tensor; and the
    number of persons with each feature code the events give in the windows' span.

    A packaged column whose code the store lacks holds its fill (0 for counts, NaN for
    values), as the tensor would; a code the model never saw is left out (and counted).
    """
    defs = Definitions.of(pkg)
    store = Path(store)
    codes = events.read_codes(store)
    spec = defs.features.model_copy(update={"sequence": None})  # the model reads values
    sets = {name: cohorts.concept_codes(name, defs.concept_sets[name], codes, required=False)
            for name in spec.concept_sets}
    mapping = code_map(spec, codes, sets)
    rows = index.select("subject_id", "index_time").with_row_index("position")
    x = np.broadcast_to(defs.columns.fill(), (rows.height, len(defs.columns))).copy()
    persons: dict[str, int] = {}
    for shard in events.list_shards(store):
        ev = events.scan_shard(store, shard)
        present = ev.select("subject_id").unique().collect()
        here = rows.join(present, on="subject_id", how="semi", maintain_order="left")
        if here.height == 0:
            continue
        window, _, static, vocabulary = aggregate_shard(
            spec, mapping, ev, here.select("subject_id", "index_time").lazy(), None)
        x[here["position"].to_numpy()] = dense_block(defs.columns, pl.concat([window, static]),
                                                     here.height)
        static_persons = static.group_by("feature_code").agg(n_train=pl.len())
        for code, n in pl.concat([vocabulary.select("feature_code", "n_train"),
                                  static_persons.select("feature_code", pl.col("n_train")
                                                        .cast(vocabulary["n_train"].dtype))]
                                 ).iter_rows():
            persons[code] = persons.get(code, 0) + int(n)
    return x, dict(sorted(persons.items()))


def score_index(pkg: ModelPackage, store: Path, index: pl.DataFrame) -> pl.DataFrame:
    """Scores of the persons of ``index`` (``subject_id, index_time``; one row each, any
    number per person) at their index times: ``subject_id, index_time, score`` (float64)
    in ``index`` order.  For a study's own persons at the study's own index times on its
    event store, the study's predictions (to 1e-9)."""
    x, _ = feature_matrix(pkg, store, index)
    scores = pkg.predict_proba(x.astype(np.float64)) if len(x) else np.zeros(0)
    return index.select("subject_id", "index_time").with_columns(
        score=pl.Series(scores, dtype=pl.Float64))


# ---- the steps of an as-of scoring run ---------------------------------------------------

def write_eligible(package_path: Path, store: Path, as_of: date, out: Path,
                   attrition_out: Path, entered_within: int | None = None) -> None:
    """The eligible step: the persons eligible as of ``as_of`` under the packaged target
    cohort (:mod:`cohortflow.scoring._asof`; with ``entered_within``, only those who entered
    it in the last that many days), ``subject_id, index_time`` sorted by id, into
    ``out``; the count after each step into ``attrition_out`` (private: exact counts)."""
    pkg = package.load(Path(package_path))
    defs = Definitions.of(pkg)
    store = Path(store)
    codes = events.read_codes(store)
    check_store(defs, codes, str(store))
    plan = cohorts.CohortPlan(defs.cohort, defs.concept_sets, codes)
    plan.check()
    # one read of each shard, of the codes the cohort needs (memory: one shard's share)
    wanted = pl.Series(codes_read(plan), dtype=pl.String).implode()
    frames, attrition = [], []
    for shard in events.list_shards(store):
        shard_events = events.scan_shard(store, shard).filter(pl.col("code").is_in(wanted))
        steps = eligible_steps(plan, shard_events, as_of, entered_within)
        collected = pl.collect_all([frame for _, frame in steps])
        frames.append(collected[-1])
        attrition.append([{"step": name, "subjects": f["subject_id"].n_unique(),
                           "rows": f.height} for (name, _), f in zip(steps, collected,
                                                                     strict=True)])
    table = pl.concat(frames).sort("subject_id").cast(ELIGIBLE_SCHEMA)
    events.write_parquet(table.to_arrow(), Path(out))
    events.write_json(cohorts.merge_attrition(attrition), Path(attrition_out))


def write_features(package_path: Path, store: Path, eligible: Path, out_dir: Path,
                   codes_out: Path) -> None:
    """The features step: the packaged columns of the eligible persons at their index time
    into ``out_dir/values.parquet`` (:data:`FEATURES_FILE`), and the per-code person counts
    of the extract's feature codes, seen in training or not, into ``codes_out``."""
    pkg = package.load(Path(package_path))
    index = pl.read_parquet(eligible)
    x, persons = feature_matrix(pkg, Path(store), index)
    frame = pl.DataFrame({"subject_id": index["subject_id"]}).hstack(
        pl.DataFrame(x, schema=dict.fromkeys(pkg.columns, pl.Float32), orient="row")
        if len(x) else pl.DataFrame(schema=dict.fromkeys(pkg.columns, pl.Float32)))
    events.write_parquet(frame.to_arrow(), Path(out_dir) / FEATURES_FILE)
    events.write_json(code_counts(pkg.columns, persons), Path(codes_out))


def code_counts(columns: list[str], persons: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per-code person counts split by whether training saw the code (a packaged column).

    >>> code_counts(["A|30d|count"], {"A": 20, "B": 3})
    {'seen': {'A': 20}, 'unseen': {'B': 3}}
    """
    known = {c.rsplit("|", 2)[0] for c in columns}
    return {"seen": {c: n for c, n in persons.items() if c in known},
            "unseen": {c: n for c, n in persons.items() if c not in known}}


def pooled_histogram(scores: np.ndarray, min_cell_count: int) -> list[dict[str, Any]]:
    """Scores counted in tenths of [0, 1], adjacent bins pooled until no bin holds a
    small count (:func:`cohortflow.privacy.pool_bins`: a small bin joins its smaller
    neighbour, an empty one included).

    >>> pooled_histogram(np.array([0.05] * 20 + [0.55] * 3 + [0.95] * 12), 11)
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'from': 0.0, 'to': 0.1, 'persons': 20}, {'from': 0.1, 'to': 1.0, 'persons': 15}]
    """
    counts = np.histogram(scores, bins=np.array(HISTOGRAM_EDGES))[0].astype(int).tolist()
    groups = privacy.pool_bins([0] * len(counts), counts, min_cell_count)
    return [{"from": HISTOGRAM_EDGES[g[0]], "to": HISTOGRAM_EDGES[g[-1] + 1],
             "persons": sum(counts[i] for i in g)} for g in groups]


def summary(scores: np.ndarray, codes: dict[str, dict[str, int]], attrition: list[dict[str, Any]],
            *, min_cell_count: int, package_digest: str, source_digest: str, as_of: str
            ) -> dict[str, Any]:
    """The shared summary of a run: no count below ``min_cell_count``, no person's value.

    >>> s = summary(np.array([0.2] * 5), {"seen": {}, "unseen": {"X": 4}}, [],
    ...             min_cell_count=11, package_digest="p", source_digest="s", as_of="d")
    >>> s["persons_scored"], s["score"], s["unseen_codes"]
    ('<11', None, {'codes': 1, 'shown': {}})
    """
    n = len(scores)
    shown = not privacy.small(n, min_cell_count)
    unseen = codes["unseen"]
    return {
        "as_of": as_of,
        "package_digest": package_digest,
        "source_digest": source_digest,
        "min_cell_count": min_cell_count,
        "persons_scored": privacy.suppress_value(n, min_cell_count),
        "score": None if not shown or n == 0 else {
            "mean": round(float(np.mean(scores)), 12),
            "histogram": pooled_histogram(scores, min_cell_count)},
        "eligibility": [
            {"step": s["step"], "persons": shown_count}
            for s, shown_count in zip(attrition, privacy.suppress_steps(
                [s["subjects"] for s in attrition], min_cell_count), strict=True)],
        "unseen_codes": {
            "codes": len(unseen),
            "shown": {c: p for c, p in unseen.items() if p >= min_cell_count}},
    }


def write_scores(package_path: Path, features_dir: Path, eligible: Path, attrition: Path,
                 codes: Path, *, as_of: date, source_digest: str, scores_out: Path,
                 index_out: Path, summary_out: Path) -> None:
    """The score step: the model's scores of the run's feature matrix, as pseudonymous
    ``scores.parquet`` (person, score; sorted by person), private ``index.parquet``
    (subject_id, index_time, score) and the shared ``summary.json``."""
    pkg = package.load(Path(package_path))
    frame = pl.read_parquet(Path(features_dir) / FEATURES_FILE)
    index = pl.read_parquet(eligible)
    if not frame["subject_id"].equals(index["subject_id"]):
        raise package.PackageError(f"{features_dir}: its rows are not the persons of "
                                   f"{eligible}; fix: rerun the scoring")
    x = np.ascontiguousarray(frame.select(pkg.columns).to_numpy(), dtype=np.float64)
    scores = pkg.predict_proba(x) if len(x) else np.zeros(0)
    private_table = index.with_columns(score=pl.Series(scores, dtype=pl.Float64))
    shared = pl.DataFrame({
        "person": pl.Series(privacy.pseudonyms(index["subject_id"].to_list()), dtype=pl.String),
        "score": pl.Series(scores, dtype=pl.Float64)}).sort("person")
    defs = Definitions.of(pkg)
    record = summary(scores, json.loads(Path(codes).read_text()),
                     json.loads(Path(attrition).read_text()),
                     min_cell_count=defs.min_cell_count, package_digest=pkg.digest,
                     source_digest=source_digest, as_of=as_of.isoformat())
    events.write_parquet(private_table.to_arrow(), Path(index_out))
    events.write_parquet(shared.to_arrow(), Path(scores_out))
    events.write_json(record, Path(summary_out))
