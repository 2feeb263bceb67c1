"""Event-store readers of the cohort engine: occurrences with end dates, observation periods,
persons, and interval merging.  Every function is a pure transform of a LazyFrame.

End dates travel in the event store as ``END//<code>`` events at the end time whose
``numeric_value`` is the duration in whole days (so every end pairs with its start even when
episodes of one code overlap).  A start without an end ends the next day, as in OHDSI Circe.
"""

from __future__ import annotations

import polars as pl

from cohortflow import events

END_PREFIX = "END//"
"""Code prefix of end-date events written by the OMOP ingest (``END//DRUG_ERA//1118084``)."""

OCCURRENCE_SCHEMA = pl.Schema(
    [("subject_id", pl.Int64()), ("time", pl.Datetime("us")), ("start", pl.Date()),
     ("end", pl.Date()), ("code", pl.String()), ("numeric_value", pl.Float32()),
     ("unit", pl.String())]
)


def _with_unit(ev: pl.LazyFrame) -> pl.LazyFrame:
    """MEDS datasets made by other tools may have no ``unit`` column."""
    if "unit" in ev.collect_schema().names():
        return ev
    return ev.with_columns(unit=pl.lit(None, pl.String))


_DAY_OFFSET = 1 << 20  # days: dates from ~900 BC on are positive after the offset
_DAY_SPAN = 1 << 22  # more days than any offset date spans


def _group_starts(keys: list[str]) -> pl.Expr:
    """True at the first row of each run of equal ``keys`` (rows sorted by them)."""
    changed = pl.any_horizontal([pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys])
    return (pl.int_range(pl.len()) == 0) | changed


def _rank_in_group(keys: list[str]) -> pl.Expr:
    """0, 1, 2... within each run of equal ``keys`` (rows sorted by them): the same as
    ``int_range(len()).over(keys)``, without a window over every group."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    return row - pl.when(_group_starts(keys)).then(row).forward_fill()


def occurrences(ev: pl.LazyFrame, codes: list[str]) -> pl.LazyFrame:
    """Events of ``codes`` with their start and end dates (``OCCURRENCE_SCHEMA``).

    >>> from datetime import datetime as dt
    >>> ev = pl.LazyFrame({"subject_id": [1, 1, 1], "code": ["C//1", "C//1", "END//C//1"],
    ...     "time": [dt(2020, 1, 1), dt(2020, 1, 5), dt(2020, 1, 10)],
    ...     "numeric_value": [None, None, 9.0]}, schema_overrides={"numeric_value": pl.Float32})
    >>> [(s.day, e.day) for s, e in occurrences(ev, ["C//1"]).select("start", "end").sort("start")
    ...  .collect().rows()]
    [(1, 10), (5, 6)]
    """
    ev = _with_unit(ev)
    rank = ["subject_id", "code", "start"]
    starts = (
        ev.filter(pl.col("code").is_in(codes) & pl.col("time").is_not_null())
        .select("subject_id", "time", "code", "numeric_value", "unit",
                start=pl.col("time").dt.date())
        .sort("subject_id", "code", "time", "numeric_value", "unit", nulls_last=False)
        .with_columns(_rank=_rank_in_group(rank))
    )
    ends = (
        ev.filter(pl.col("code").is_in([END_PREFIX + c for c in codes]))
        .select("subject_id", code=pl.col("code").str.strip_prefix(END_PREFIX),
                end=pl.col("time").dt.date(), days=pl.col("numeric_value").cast(pl.Int32))
        .with_columns(start=pl.col("end") - pl.duration(days=pl.col("days")))
        .sort("subject_id", "code", "start", "end")
        .with_columns(_rank=_rank_in_group(rank))
        .drop("days")
    )
    return (
        starts.join(ends, on=[*rank, "_rank"], how="left")
        .with_columns(end=pl.coalesce("end", pl.col("start") + pl.duration(days=1)))
        .select(list(OCCURRENCE_SCHEMA))
    )


def observation_periods(ev: pl.LazyFrame) -> pl.LazyFrame:
    """Each subject's observation periods as ``obs_start, obs_end`` dates; overlapping
    periods are merged into their union (the n-th start pairs with the n-th end, which
    keeps the union right even when periods overlap).

    >>> from datetime import datetime as dt
    >>> ev = pl.LazyFrame({"subject_id": [1] * 4, "code": [events.OBSERVATION_START,
    ...     events.OBSERVATION_START, events.OBSERVATION_END, events.OBSERVATION_END],
    ...     "time": [dt(2010, 1, 1), dt(2012, 1, 1), dt(2015, 1, 1), dt(2013, 1, 1)]})
    >>> observation_periods(ev).collect().rows()
    [(1, datetime.date(2010, 1, 1), datetime.date(2015, 1, 1))]
    """

    def ends(code: str, name: str) -> pl.LazyFrame:
        return (
            ev.filter(pl.col("code") == code)
            .select("subject_id", pl.col("time").dt.date().alias(name))
            .sort("subject_id", name)
            .with_columns(_rank_in_group(["subject_id"]).alias("_period"))
        )

    paired = ends(events.OBSERVATION_START, "start").join(
        ends(events.OBSERVATION_END, "end"), on=["subject_id", "_period"]
    ).drop("_period")
    merged = merge_intervals(paired, gap_days=0)
    return merged.select("subject_id", obs_start="start", obs_end="end")


def merge_intervals(frame: pl.LazyFrame, gap_days: int, keep: list[str] | None = None
                    ) -> pl.LazyFrame:
    """Merge each subject's ``[start, end]`` date intervals that overlap or lie at most
    ``gap_days`` apart (OHDSI era logic: the era ends at its latest end date).  Columns in
    ``keep`` are taken from the era's first interval: the earliest by start, end, then the
    ``keep`` columns themselves, so that intervals tied on their dates (two entry events on
    one day) give the same era whatever order they come in.

    >>> from datetime import date
    >>> f = pl.LazyFrame({"subject_id": [1, 1, 1], "start": [date(2020, 1, 1),
    ...     date(2020, 1, 20), date(2020, 3, 1)], "end": [date(2020, 1, 10),
    ...     date(2020, 1, 25), date(2020, 3, 2)]})
    >>> [(s.day, e.day) for _, s, e in merge_intervals(f, gap_days=10).collect().rows()]
    [(1, 25), (1, 2)]
    """
    keep = keep or []
    ordered = frame.sort("subject_id", "start", "end", *keep)
    first = _group_starts(["subject_id"])
    # The latest end so far within the subject, without a window over ~10^5 subjects: rows
    # are sorted by subject, so a running max of (subject number, end day) restarts at each
    # subject.
    number = first.cum_sum().cast(pl.Int64) * _DAY_SPAN
    running = (number + pl.col("end").cast(pl.Int64) + _DAY_OFFSET).cum_max()
    previous_end = pl.when(first).then(None).otherwise(running.shift(1) - number
                                                       - _DAY_OFFSET)
    new_era = previous_end.is_null() | (pl.col("start").cast(pl.Int64)
                                        > previous_end + gap_days)
    return (
        ordered.with_columns(_era=new_era.cum_sum())
        .group_by("_era", maintain_order=True)
        .agg(pl.col("subject_id").first(), pl.col("start").min(), pl.col("end").max(),
             *[pl.col(c).first() for c in keep])
        .drop("_era")
    )


def persons(ev: pl.LazyFrame) -> pl.LazyFrame:
    """``subject_id, birth_year, gender`` (gender concept id) of every subject with a birth
    or gender row."""
    birth = ev.filter(pl.col("code") == events.BIRTH).group_by("subject_id").agg(
        birth_year=pl.col("time").min().dt.year())
    gender = (
        ev.filter(pl.col("code").str.starts_with("GENDER//"))
        .group_by("subject_id")
        .agg(gender=pl.col("code").first().str.strip_prefix("GENDER//").cast(pl.Int64,
                                                                               strict=False))
    )
    return birth.join(gender, on="subject_id", how="full", coalesce=True)
