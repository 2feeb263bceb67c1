"""Matched case-control sampling of an analysis with a rare outcome.

Each case (a label-true row of the analysis's labels) gets up to ``k`` controls: label-false
rows of the same analysis that match it on sex (exactly), age at index, index date and prior
observation (each within its tolerance, both ends included), every control used at most
once.  The draw is a pure function of the rows, the matching settings and a seed
(:func:`match_seed`: the study seed and the analysis id), never of the hash seed or of a
set's order.

The scheme (:func:`match_controls`): controls sorted by (sex, index day, row), so a case's
candidates are one slice found by binary search, filtered on age and observation with
numpy; the cases are served hardest first (fewest eligible controls, ties in a seeded
order), and each takes ``k`` of its unused eligible controls at random (seeded).  A case
with fewer unused eligible controls keeps fewer; the record counts the cases that got ``k``,
fewer, none.  Cost: one slice per case, never cases × controls.

:func:`write_matching` is the workflow's match step; :func:`balance` the balance table of
the report (standardised mean differences before and after matching).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cohortflow import events
from cohortflow.cohorts._engine import LABEL_SCHEMA
from cohortflow.cohorts._io import read_episodes
from cohortflow.errors import CohortflowError, StoreError
from cohortflow.study import Analysis, Matching

DAYS_PER_YEAR = 365.25
"""Ages are days from the birth to the index over this (as the ``age_years`` feature)."""

MALE = 8507
"""The OMOP gender concept of the balance table's male share (``GENDER//8507``)."""

MATCH_ROWS = pl.Schema([("row", pl.Int64()), ("subject_id", pl.Int64()),
                        ("label", pl.Boolean()), ("sex", pl.Int64()),
                        ("age_years", pl.Float64()), ("index_day", pl.Int64()),
                        ("observation_days", pl.Int64())])
"""What the matching reads of each labelled row: its tensor ``row`` (the row's id), sex
(gender concept, null if unknown), age at index in years, index day (days since
1970-01-01) and days of observation before the index (null outside any period)."""

MATCHED_SCHEMA = pl.Schema([*LABEL_SCHEMA.items(), ("match_set", pl.Int64())])
"""``matched.parquet``: the labels' columns of every case and matched control, and
``match_set``, the tensor row of the set's case."""

_SHIFT = 1 << 32  # index days (offset below) fit in 32 bits
_DAY_OFFSET = 1 << 31


def match_seed(study_seed: int, analysis: str) -> int:
    """The matching draw's seed: the study seed and the analysis id, hashed (sha256, not
    Python's per-process hash).

    >>> match_seed(42, "a__x__1y") == match_seed(42, "a__x__1y") != match_seed(43, "a__x__1y")
    True
    """
    digest = hashlib.sha256(f"{study_seed}/matching/{analysis}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _eligible(spec: Matching, case: dict[str, Any], block_key: np.ndarray,
              ctrl: dict[str, np.ndarray], sex_rank: int) -> np.ndarray:
    """Positions (into the sorted controls) of the controls that match ``case`` on every
    constraint, used or not."""
    lo_day = -_DAY_OFFSET if spec.index_days is None else case["index_day"] - spec.index_days
    hi_day = _DAY_OFFSET - 1 if spec.index_days is None else case["index_day"] + spec.index_days
    base = sex_rank * _SHIFT + _DAY_OFFSET
    lo = int(np.searchsorted(block_key, base + lo_day, side="left"))
    hi = int(np.searchsorted(block_key, base + hi_day, side="right"))
    keep = np.ones(hi - lo, dtype=bool)
    if spec.age_years is not None:
        keep &= np.abs(ctrl["age_years"][lo:hi] - case["age_years"]) <= spec.age_years
    if spec.observation_days is not None:
        keep &= (np.abs(ctrl["observation_days"][lo:hi] - case["observation_days"])
                 <= spec.observation_days)
    return lo + np.flatnonzero(keep)


def _needed(spec: Matching) -> list[str]:
    """The columns a row must have (non-null) to be matched under ``spec``."""
    needed = ["index_day"]
    if spec.sex:
        needed.append("sex")
    if spec.age_years is not None:
        needed.append("age_years")
    if spec.observation_days is not None:
        needed.append("observation_days")
    return needed


def match_controls(rows: pl.DataFrame, spec: Matching, seed: int) -> pl.DataFrame:
    """The matched sets of ``rows`` (:data:`MATCH_ROWS`): ``row, match_set`` of every case
    with at least one control and of its controls (``match_set``: the case's row), sorted
    by row.  Deterministic given ``seed`` (see the module)."""
    rows = rows.cast(MATCH_ROWS)
    needed = _needed(spec)
    complete = pl.all_horizontal([pl.col(c).is_not_null() for c in needed])
    cases = rows.filter(pl.col("label") & complete).sort("row")
    controls = rows.filter(~pl.col("label") & complete)
    sexes = np.unique(np.concatenate([cases["sex"].fill_null(0).to_numpy(),
                                      controls["sex"].fill_null(0).to_numpy()]))

    def sex_rank(frame: pl.DataFrame) -> np.ndarray:
        if not spec.sex:
            return np.zeros(frame.height, dtype=np.int64)
        return np.searchsorted(sexes, frame["sex"].fill_null(0).to_numpy()).astype(np.int64)

    controls = controls.with_columns(_sex=pl.Series(sex_rank(controls))).sort(
        "_sex", "index_day", "row")
    ctrl = {c: controls[c].fill_null(0).to_numpy() for c in
            ("row", "age_years", "index_day", "observation_days")}
    block_key = controls["_sex"].to_numpy() * _SHIFT + ctrl["index_day"] + _DAY_OFFSET
    case_sex = sex_rank(cases)
    case_rows = cases.select("row", "age_years", "index_day", "observation_days").rows(
        named=True)
    eligible = [_eligible(spec, case, block_key, ctrl, int(rank))
                for case, rank in zip(case_rows, case_sex, strict=True)]

    rng = np.random.Generator(np.random.PCG64(seed))
    tie = rng.permutation(len(case_rows))
    order = np.lexsort((tie, np.array([len(e) for e in eligible], dtype=np.int64)))
    used = np.zeros(controls.height, dtype=bool)
    out_row: list[np.ndarray] = []
    out_set: list[np.ndarray] = []
    for i in order:
        free = eligible[i][~used[eligible[i]]]
        if free.size == 0:
            continue
        picked = rng.choice(free, size=min(spec.controls, free.size), replace=False)
        used[picked] = True
        case_row = case_rows[i]["row"]
        out_row.append(np.r_[case_row, ctrl["row"][picked]])
        out_set.append(np.full(picked.size + 1, case_row, dtype=np.int64))
    if not out_row:
        return pl.DataFrame(schema={"row": pl.Int64, "match_set": pl.Int64})
    return pl.DataFrame({"row": np.concatenate(out_row).astype(np.int64),
                         "match_set": np.concatenate(out_set)}).sort("row")


def match_counts(rows: pl.DataFrame, matched: pl.DataFrame, k: int) -> dict[str, int]:
    """Cases, the cases that got ``k`` controls, fewer, none, and the matched controls.

    >>> rows = pl.DataFrame({"row": [0, 1, 2, 3], "label": [True, True, False, False]})
    >>> match_counts(rows, pl.DataFrame({"row": [0, 2, 3], "match_set": [0, 0, 0]}), 2)
    {'cases': 2, 'cases_with_k': 1, 'cases_with_fewer': 0, 'cases_with_none': 1, 'controls': 2}
    """
    size = matched.group_by("match_set").len()["len"].to_numpy() - 1
    cases = int(rows["label"].sum())
    return {"cases": cases, "cases_with_k": int((size >= k).sum()),
            "cases_with_fewer": int(((size > 0) & (size < k)).sum()),
            "cases_with_none": cases - int((size > 0).sum()),
            "controls": int(size.sum())}


BALANCE = {"age_years": "Age at index (years)", "male": "Male share",
           "index_year": "Index date (year)", "observation_days": "Prior observation (days)"}
"""The balance table's variables, by column, with their labels."""


def smd(cases: np.ndarray, controls: np.ndarray) -> float | None:
    """The standardised mean difference: (mean of cases - mean of controls) over the root
    of the two variances' mean (population variances; a share's is p(1-p)); None without
    both groups, 0.0 when both are constant and equal.

    >>> round(smd(np.array([1.0, 3.0]), np.array([0.0, 2.0])), 3)
    1.0
    """
    if cases.size == 0 or controls.size == 0:
        return None
    diff = float(cases.mean() - controls.mean())
    pooled = float(np.sqrt((cases.var() + controls.var()) / 2))
    if pooled == 0.0:
        return 0.0 if diff == 0.0 else None
    return diff / pooled


def balance(rows: pl.DataFrame, matched: pl.DataFrame) -> list[dict[str, Any]]:
    """The balance table: per variable (:data:`BALANCE`), the mean of the cases, of every
    label-false row (before) and of the matched controls (after), and the standardised mean
    difference of the cases with each (values missing from a row are left out)."""
    frame = rows.with_columns(
        male=(pl.col("sex") == MALE).cast(pl.Float64).fill_null(0.0),
        index_year=pl.col("index_day") / DAYS_PER_YEAR + 1970,
        observation_days=pl.col("observation_days").cast(pl.Float64))
    in_set = frame.join(matched, on="row", how="inner")
    groups = {"cases": frame.filter(pl.col("label")),
              "controls_before": frame.filter(~pl.col("label")),
              "cases_after": in_set.filter(pl.col("label")),
              "controls_after": in_set.filter(~pl.col("label"))}
    table = []
    for column, name in BALANCE.items():
        values = {g: f[column].drop_nulls().to_numpy().astype(np.float64)
                  for g, f in groups.items()}

        def mean(g: str, values: dict[str, np.ndarray] = values) -> float | None:
            return float(values[g].mean()) if values[g].size else None

        table.append({"variable": name, "cases_mean": mean("cases"),
                      "controls_mean_before": mean("controls_before"),
                      "controls_mean_after": mean("controls_after"),
                      "smd_before": smd(values["cases"], values["controls_before"]),
                      "smd_after": smd(values["cases_after"], values["controls_after"])})
    return table


def person_facts(store: Path, shards: list[str], subjects: pl.Series) -> pl.DataFrame:
    """``subject_id, birth, sex`` of ``subjects`` from the event store: the earliest
    ``MEDS_BIRTH`` time and the first ``GENDER//<concept>`` code's concept (null if
    absent).

    One lazy scan of every shard: three columns, the code filter pushed into the Parquet
    reader, then a semi join on the subjects (about 2x faster on 1,000,000 persons than a
    per-shard ``is_in`` filter; the whole match step is ~1% of that run, see
    benchmarks/bench_rare.py)."""
    paths = [events.shard_path(store, s) for s in shards]
    if missing := [p for p in paths if not p.is_file()]:
        raise StoreError(f"{missing[0]}: shard missing from the event store; fix: rerun the "
                         "ingest step")
    ev = (
        pl.scan_parquet(paths)
        .select("subject_id", "time", "code")
        .filter((pl.col("code") == events.BIRTH) | pl.col("code").str.starts_with("GENDER//"))
        .join(subjects.unique().to_frame("subject_id").lazy(), on="subject_id", how="semi")
        .collect())
    birth = ev.filter(pl.col("code") == events.BIRTH).group_by("subject_id").agg(
        birth=pl.col("time").min())
    sex = ev.filter(pl.col("code").str.starts_with("GENDER//")).group_by("subject_id").agg(
        sex=pl.col("code").min().str.strip_prefix("GENDER//").cast(pl.Int64, strict=False))
    return birth.join(sex, on="subject_id", how="full", coalesce=True)


def match_rows(labels: pl.DataFrame, episodes: pl.DataFrame, persons: pl.DataFrame
               ) -> pl.DataFrame:
    """Each labelled row as the matching reads it (:data:`MATCH_ROWS`): ``labels`` joined
    to the target's ``episodes`` (``row, start, obs_start``: the index day and its
    observation period's start) and to ``persons`` (``subject_id, birth, sex``)."""
    return (
        labels.select("row", "subject_id", "index_time", "label")
        .join(episodes.select("row", "start", "obs_start"), on="row", how="left")
        .join(persons, on="subject_id", how="left")
        .select("row", "subject_id", "label", "sex",
                age_years=(pl.col("index_time") - pl.col("birth")).dt.total_days()
                / DAYS_PER_YEAR,
                index_day=pl.col("start").cast(pl.Int64),
                observation_days=(pl.col("start") - pl.col("obs_start")).dt.total_days())
        .cast(MATCH_ROWS)
    )


def settings_text(spec: Matching) -> str:
    """A matching block in words, as the study writes it.

    >>> settings_text(Matching(controls=4, age_years=None))
    'controls: 4, sex: true, age_years: null, index_days: 90, observation_days: 365'
    """
    def text(value: object) -> str:
        return "null" if value is None else str(value).lower() if isinstance(value, bool) \
            else f"{value:g}" if isinstance(value, float) else str(value)

    return ", ".join(f"{key}: {text(value)}" for key, value in spec.model_dump().items())


def require_matches(analysis: str, spec: Matching, counts: dict[str, int],
                    candidates: int) -> None:
    """Refuse a matching that leaves no matched set: its sweep would see one label value
    only.  One message naming the analysis, its settings and the fix.

    >>> require_matches("a__o__1y", Matching(), {"cases": 3, "cases_with_none": 3}, 10)
    Traceback (most recent call last):
    ...
    cohortflow.errors.CohortflowError: analysis 'a__o__1y': none of its 3 cases has a \
control among its 10 label-false rows that meets every matching constraint (matching: \
controls: 4, sex: true, age_years: 1, index_days: 90, observation_days: 365), so no model \
can be fit; fix: widen the tolerances of its analyses: entry's matching: block (age_years, \
index_days, observation_days; null drops a constraint) or sex: false, or give it more \
controls (a larger target cohort or source)
    """
    cases = counts["cases"]
    if cases == 0:
        raise CohortflowError(
            f"analysis '{analysis}': its labels hold no case (label-true row) to match "
            f"(matching: {settings_text(spec)}), so no model can be fit; fix: check its "
            "outcome and time at risk, or remove matching: from its analyses: entry")
    if counts["cases_with_none"] == cases:
        raise CohortflowError(
            f"analysis '{analysis}': none of its {cases} cases has a control among its "
            f"{candidates} label-false rows that meets every matching constraint (matching: "
            f"{settings_text(spec)}), so no model can be fit; fix: widen the tolerances of "
            "its analyses: entry's matching: block (age_years, index_days, observation_days; "
            "null drops a constraint) or sex: false, or give it more controls (a larger "
            "target cohort or source)")


def write_matching(analysis: Analysis, seed: int, labels: Path, target_dir: Path,
                   store: Path, shards: list[str], matched_out: Path, record_out: Path
                   ) -> None:
    """The match step of one matched analysis: its cases and their controls (the labels'
    rows with ``match_set``, :data:`MATCHED_SCHEMA`, sorted by row) into ``matched_out``;
    the settings, counts (:func:`match_counts`) and balance table (:func:`balance`) into
    ``record_out`` (exact counts, person-level: the report suppresses them).  Fails
    (:func:`require_matches`) when no case has a control."""
    spec = analysis.matching
    if spec is None:
        raise StoreError(f"analysis '{analysis.id}' has no matching block; fix: add "
                         "matching: to its analyses: entry")
    table = pl.read_parquet(labels)
    episodes = read_episodes(Path(target_dir), shards)
    rows = match_rows(table, episodes, person_facts(Path(store), shards,
                                                    table["subject_id"]))
    matched = match_controls(rows, spec, match_seed(seed, analysis.id))
    counts = match_counts(rows, matched, spec.controls)
    require_matches(analysis.id, spec, counts, int((~rows["label"]).sum()))
    out = table.join(matched, on="row", how="inner").sort("row").cast(
        MATCHED_SCHEMA)
    record = {"analysis": analysis.id, "matching": spec.model_dump(mode="json"),
              "counts": counts,
              "balance": balance(rows, matched)}
    events.write_parquet(out.select(list(MATCHED_SCHEMA)).to_arrow(), Path(matched_out))
    events.write_json(record, Path(record_out))

