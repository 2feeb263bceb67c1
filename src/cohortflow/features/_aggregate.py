"""The logic of features: pure functions over one shard's events and cohort rows.

Everything here works on Polars frames and returns "tidy" frames with one row per non-empty
cell: ``row`` (the cohort row within the shard), ``feature_code``, ``window``,
``aggregation``, ``value``.  Cells not listed hold the fill value of their aggregation
(0 for ``count``, ``present`` and ``value_count``, NaN otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from cohortflow import events
from cohortflow.study import (
    AGGREGATION_ORDER,
    ALL_CODES,
    STATIC_WINDOW,
    VALUE_AGGREGATIONS,
    Features,
    FeatureWindow,
)

SET_PREFIX = "CONCEPT_SET//"
DEMOGRAPHIC_PREFIX = {"sex": "GENDER", "race": "RACE", "ethnicity": "ETHNICITY"}
ZERO_FILLED = frozenset({"count", "present", "value_count"})
TIDY_SCHEMA = pl.Schema(
    [("row", pl.UInt32()), ("feature_code", pl.String()), ("window", pl.String()),
     ("aggregation", pl.String()), ("value", pl.Float32())]
)
SEQUENCE_SCHEMA = pl.Schema(
    [("row", pl.UInt32()), ("feature_code", pl.String()), ("bin", pl.Int32()),
     ("aggregation", pl.String()), ("value", pl.Float32())]
)
_DAYS_BEFORE = pl.col("days_before")


def in_window(window: FeatureWindow) -> pl.Expr:
    """Whether an event's whole-day distance to the index date lies in ``window``.

    ``days_before`` is (index date - event date) in days, so the index day is 0.

    >>> frame = pl.DataFrame({"days_before": [0, 30, 31]})
    >>> frame.select(in_window(FeatureWindow(start_days=-30)))["days_before"].to_list()
    [True, True, False]
    """
    upper = -window.start_days >= _DAYS_BEFORE if window.start_days is not None else pl.lit(True)
    return (-window.end_days <= _DAYS_BEFORE) & upper


def _span(spec: Features) -> tuple[int, int | None]:
    """The smallest and largest days_before any window or bin can use (None: unbounded)."""
    windows = spec.all_windows()
    lo = min([-w.end_days for w in windows], default=0)
    starts = [w.start_days for w in windows]
    hi = None if None in starts else max([-s for s in starts if s is not None], default=0)
    if spec.sequence is not None:
        lo = 0
        reach = spec.sequence.bins * spec.sequence.bin_days - 1
        hi = None if hi is None else max(hi, reach)
    return lo, hi


def selected(spec: Features) -> pl.Expr:
    """Whether an event's ``code`` is a feature code: it equals an entry of ``domains``, or
    starts with one followed by ``/`` (``*``: every code), or it is in ``codes``.

    >>> frame = pl.DataFrame({"code": ["CONDITION//1", "SNOMED/74474003", "MEDS_DEATH",
    ...                                "CONDITIONAL//2", "LAB//K//mmol/L", "LAB//Na"]})
    >>> spec = Features(domains=["CONDITION", "SNOMED", "MEDS_DEATH", "LAB//K"], codes=["X"])
    >>> frame.filter(selected(spec))["code"].to_list()
    ['CONDITION//1', 'SNOMED/74474003', 'MEDS_DEATH', 'LAB//K//mmol/L']
    """
    if ALL_CODES in spec.domains:
        return pl.lit(True)
    code = pl.col("code")
    parts = [code.str.starts_with(f"{d}/") | (code == d) for d in spec.domains]
    if spec.codes:
        parts.append(code.is_in(pl.Series(sorted(set(spec.codes)), dtype=pl.String).implode()))
    return pl.any_horizontal(parts) if parts else pl.lit(False)


def code_map(spec: Features, codes: pl.DataFrame,
             concept_sets: dict[str, list[str]]) -> pl.DataFrame | None:
    """Extra feature codes of each event code: its ancestors (roll-up) and its concept sets.

    Ancestors are the store's closure (``ancestor_codes``, every level of the vocabulary's
    ``concept_ancestor``) where the codes table has it, else the transitive closure of
    ``parent_codes`` (a MEDS dataset made elsewhere).  Every code with an extra target also
    maps to itself; codes absent from the map keep only themselves.  ``None`` when there is
    nothing to add.

    >>> codes = pl.DataFrame({"code": ["C//1", "C//2"], "parent_codes": [[], ["C//1"]]})
    >>> code_map(Features(rollup="ancestors"), codes, {"s": ["C//1"]}).rows()
    [('C//1', 'C//1'), ('C//1', 'CONCEPT_SET//s'), ('C//2', 'C//1'), ('C//2', 'C//2')]
    """
    pairs: set[tuple[str, str]] = set()
    if spec.rollup == "ancestors":
        pairs.update(_ancestor_pairs(codes))
    for name, members in concept_sets.items():
        pairs.update((code, f"{SET_PREFIX}{name}") for code in members)
    if not pairs:
        return None
    pairs.update((code, code) for code, _ in list(pairs))
    return pl.DataFrame(sorted(pairs), schema=["code", "feature_code"], orient="row")


def _ancestor_pairs(codes: pl.DataFrame) -> set[tuple[str, str]]:
    """(code, ancestor) for every strict ancestor of every code."""
    if events.ANCESTOR_CODES in codes.columns:
        links = (codes.select("code", events.ANCESTOR_CODES).explode(events.ANCESTOR_CODES)
                 .drop_nulls().filter(pl.col("code") != pl.col(events.ANCESTOR_CODES)))
        return set(links.iter_rows())
    upward = _invert(codes)
    return {(code, ancestor) for code in codes["code"].to_list()
            for ancestor in events.descendants(upward, [code]) - {code}}


def _invert(codes: pl.DataFrame) -> pl.DataFrame:
    """The hierarchy upside down: parents of a code become its 'children', so that
    ``events.descendants`` walks to the ancestors."""
    return (codes.select("code", "parent_codes").explode("parent_codes")
            .drop_nulls("parent_codes")
            .group_by("parent_codes").agg(pl.col("code"))
            .select(pl.col("parent_codes").alias("code"), pl.col("code").alias("parent_codes")))


def cohort_rows(cohort: pl.LazyFrame, train_subjects: pl.LazyFrame | None = None
                ) -> pl.LazyFrame:
    """The shard's cohort rows, numbered, with whether each subject is in the train split."""
    rows = cohort.select("subject_id", "index_time").with_row_index("row")
    if train_subjects is None:
        return rows.with_columns(train=pl.lit(True))
    train = train_subjects.select("subject_id").unique().with_columns(train=pl.lit(True))
    return rows.join(train, on="subject_id", how="left", maintain_order="left").with_columns(
        pl.col("train").fill_null(False))


def feature_events(spec: Features, mapping: pl.DataFrame | None, ev: pl.LazyFrame,
                   rows: pl.LazyFrame) -> pl.LazyFrame:
    """Each (cohort row, feature code) event inside the span of the windows, in store order.

    Columns: row, subject_id, train, feature_code, days_before, numeric_value.  With
    ``window_end: before_index_time`` an event at or after the index time is left out here,
    so no window and no sequence bin sees it.
    """
    ev = ev.filter(pl.col("time").is_not_null())
    if mapping is None:
        ev = ev.filter(selected(spec)).with_columns(feature_code=pl.col("code"))
    else:
        ev = (ev.join(mapping.lazy(), on="code", how="left", maintain_order="left")
              .with_columns(feature_code=pl.coalesce("feature_code", "code"))
              .filter(selected(spec) | pl.col("feature_code").str.starts_with(SET_PREFIX)))
    lo, hi = _span(spec)
    days = (pl.col("index_time").dt.date() - pl.col("time").dt.date()).dt.total_days()
    joined = ev.join(rows, on="subject_id", maintain_order="left").with_columns(
        days_before=days.cast(pl.Int32))
    keep = lo <= _DAYS_BEFORE if hi is None else _DAYS_BEFORE.is_between(lo, hi)
    if spec.window_end == "before_index_time":
        keep = keep & (pl.col("time") < pl.col("index_time"))
    return joined.filter(keep).select(
        "row", "subject_id", "train", "feature_code", "days_before", "numeric_value")


def _aggregate(name: str, cond: pl.Expr) -> pl.Expr:
    value = pl.col("numeric_value")
    valued = value.filter(cond & value.is_not_null())
    exprs = {
        "count": cond.sum(),
        "present": pl.when(cond.any()).then(1),
        "days_since_last": _DAYS_BEFORE.filter(cond).min(),
        "first": valued.first(),
        "last": valued.last(),
        "min": valued.min(),
        "max": valued.max(),
        "mean": valued.mean(),
        "sum": pl.when(valued.count() > 0).then(valued.sum()),
        "value_count": valued.count(),
    }
    return exprs[name]


def _tidy(wide: pl.LazyFrame, index: list[str], keys: list[str]) -> pl.LazyFrame:
    """Wide aggregate columns named ``<key>\\t<aggregation>`` → one row per non-empty cell."""
    return (
        wide.unpivot(on=keys, index=index, variable_name="key", value_name="value")
        .with_columns(pl.col("value").cast(pl.Float32))
        .filter(pl.col("value").is_not_null())
        .with_columns(pl.col("key").str.split_exact("\t", 1).struct.rename_fields(["k", "a"]))
        .unnest("key")
        .filter((pl.col("value") != 0) | ~pl.col("a").is_in(list(ZERO_FILLED)))
    )


def window_cells(spec: Features, joined: pl.LazyFrame) -> pl.LazyFrame:
    """Tidy (row, feature_code, window, aggregation, value) of every window aggregation.

    A count of 0 is not listed (it is the fill value); value aggregations skip null values.
    """
    aggs = [a for a in AGGREGATION_ORDER if a in spec.aggregations]
    exprs = [
        _aggregate(a, in_window(w)).alias(f"{w.label}\t{a}")
        for w in spec.all_windows() for a in aggs
    ]
    if not exprs:
        return pl.LazyFrame(schema=TIDY_SCHEMA)
    wide = joined.group_by("row", "feature_code").agg(exprs)
    return _tidy(wide, ["row", "feature_code"], [e.meta.output_name() for e in exprs]).select(
        pl.col("row").cast(pl.UInt32), "feature_code", pl.col("k").alias("window"),
        pl.col("a").alias("aggregation"), "value")


def sequence_cells(spec: Features, joined: pl.LazyFrame) -> pl.LazyFrame:
    """Tidy (row, feature_code, bin, aggregation, value) of the time-binned tensor.

    Bin ``b`` of ``n`` (oldest first) holds days_before in
    ``[(n - 1 - b) * bin_days, (n - b) * bin_days - 1]``: the last bin ends on the index day.
    """
    seq = spec.sequence
    if seq is None:
        return pl.LazyFrame(schema=SEQUENCE_SCHEMA)
    binned = joined.filter(seq.bins * seq.bin_days > _DAYS_BEFORE).with_columns(
        bin=(seq.bins - 1 - _DAYS_BEFORE // seq.bin_days).cast(pl.Int32))
    aggs = [a for a in AGGREGATION_ORDER if a in seq.aggregations]
    every = _DAYS_BEFORE.is_not_null()  # a column, so that sums count rows
    exprs = [_aggregate(a, every).alias(f"seq\t{a}") for a in aggs]
    wide = binned.group_by("row", "feature_code", "bin").agg(exprs)
    return _tidy(wide, ["row", "feature_code", "bin"],
                 [e.meta.output_name() for e in exprs]).select(
        pl.col("row").cast(pl.UInt32), "feature_code", "bin", pl.col("a").alias("aggregation"),
        "value")


def static_cells(spec: Features, ev: pl.LazyFrame, rows: pl.LazyFrame) -> pl.LazyFrame:
    """Tidy demographics: ``age_years`` at index (code MEDS_BIRTH) and a ``present`` cell
    for each sex, race and ethnicity code of the subject."""
    parts = [pl.LazyFrame(schema=TIDY_SCHEMA)]
    static = ev.join(rows.select("row", "subject_id", "index_time"), on="subject_id")
    if "age" in spec.demographics:
        parts.append(
            static.filter(pl.col("code") == events.BIRTH)
            .group_by("row").agg(
                value=(pl.col("index_time").first() - pl.col("time").min()).dt.total_days()
                / 365.25)
            .select(pl.col("row").cast(pl.UInt32), feature_code=pl.lit(events.BIRTH),
                    window=pl.lit(STATIC_WINDOW), aggregation=pl.lit("age_years"),
                    value=pl.col("value").cast(pl.Float32)))
    prefixes = [f"{DEMOGRAPHIC_PREFIX[d]}{events.CODE_SEPARATOR}" for d in spec.demographics
                if d in DEMOGRAPHIC_PREFIX]
    if prefixes:
        parts.append(
            static.filter(pl.col("time").is_null()
                          & pl.any_horizontal([pl.col("code").str.starts_with(p)
                                               for p in prefixes]))
            .select(pl.col("row").cast(pl.UInt32), feature_code=pl.col("code"),
                    window=pl.lit(STATIC_WINDOW), aggregation=pl.lit("present"),
                    value=pl.lit(1.0, pl.Float32)).unique())
    return pl.concat(parts)


def code_vocabulary(joined: pl.LazyFrame) -> pl.LazyFrame:
    """Per feature code seen in a shard: whether it carries values, and its number of
    train-split subjects (summed over shards, exact: every subject lives in one shard)."""
    return joined.group_by("feature_code").agg(
        has_value=pl.col("numeric_value").is_not_null().any(),
        n_train=pl.col("subject_id").filter(pl.col("train")).n_unique(),
    )


def value_aggregations(aggregations: Iterable[str], has_value: bool) -> list[str]:
    """The aggregations a code gets, in feature-axis order.

    >>> value_aggregations(["mean", "count"], has_value=False)
    ['count']
    """
    wanted = set(aggregations)
    return [a for a in AGGREGATION_ORDER if a in wanted
            and (has_value or a not in VALUE_AGGREGATIONS)]
