"""The OMOP → event-store ingest: one pass over the source, memory bounded by one batch
while reading and by one shard while sorting."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cohortflow import events, quality, store_guard, store_writer
from cohortflow.errors import SourceError
from cohortflow.omop import _checks
from cohortflow.omop._codes import codes_table
from cohortflow.omop._source_base import OmopSource
from cohortflow.privacy import DEFAULT_MIN_CELL_COUNT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventTable:
    """How one OMOP clinical table becomes events: ``<DOMAIN>//<concept_id>`` at its start."""

    name: str
    domain: str
    concept: str
    date: str
    datetime: str | None = None
    value: str | None = None
    unit: str | None = None
    end: str | None = None
    supply: str | None = None

    def required(self) -> list[str]:
        return ["person_id", self.concept, self.date]

    def optional(self) -> list[str]:
        """The other columns the ingest reads, where the table has them."""
        return [c for c in (self.datetime, self.value, self.unit, self.end, self.supply) if c]


CLINICAL_TABLES = (
    EventTable("visit_occurrence", "VISIT", "visit_concept_id", "visit_start_date",
               "visit_start_datetime", end="visit_end_date"),
    EventTable("condition_occurrence", "CONDITION", "condition_concept_id",
               "condition_start_date", "condition_start_datetime", end="condition_end_date"),
    EventTable("drug_exposure", "DRUG", "drug_concept_id", "drug_exposure_start_date",
               "drug_exposure_start_datetime", end="drug_exposure_end_date",
               supply="days_supply"),
    EventTable("drug_era", "DRUG_ERA", "drug_concept_id", "drug_era_start_date",
               end="drug_era_end_date"),
    EventTable("procedure_occurrence", "PROCEDURE", "procedure_concept_id", "procedure_date",
               "procedure_datetime"),
    EventTable("measurement", "MEASUREMENT", "measurement_concept_id", "measurement_date",
               "measurement_datetime", "value_as_number", "unit_concept_id"),
    EventTable("observation", "OBSERVATION", "observation_concept_id", "observation_date",
               "observation_datetime", "value_as_number", "unit_concept_id"),
)
PERSON_REQUIRED = ["person_id", "gender_concept_id", "year_of_birth"]
PERIOD_REQUIRED = ["person_id", "observation_period_start_date", "observation_period_end_date"]
DEATH_REQUIRED = ["person_id", "death_date"]
PERSON_OPTIONAL = ["month_of_birth", "day_of_birth", "birth_datetime", "race_concept_id",
                   "ethnicity_concept_id"]


def _as_datetime(frame: pl.DataFrame, date: str, datetime: str | None, where: str) -> pl.Expr:
    """Event time: the datetime column where present, else the date at midnight."""
    dtype = frame.schema[date]
    if dtype == pl.String:
        day = pl.col(date).str.to_date(strict=False)
    elif dtype == pl.Date or isinstance(dtype, pl.Datetime):
        day = pl.col(date).cast(pl.Date)
    else:
        raise SourceError(f"{where}: column {date} has type {dtype}, expected a date; "
                          "fix: export dates as DATE or ISO 'YYYY-MM-DD' text")
    expr = day.cast(pl.Datetime("us"))
    if datetime is not None and datetime in frame.columns:
        dt_type = frame.schema[datetime]
        if isinstance(dt_type, pl.Datetime):
            expr = pl.coalesce(pl.col(datetime).dt.replace_time_zone(None).cast(
                pl.Datetime("us")), expr)
        elif dt_type == pl.String:
            expr = pl.coalesce(pl.col(datetime).str.to_datetime(strict=False, time_unit="us"),
                               expr)
    return expr


def _events(frame: pl.DataFrame, subject: pl.Expr, time: pl.Expr, code: pl.Expr,
            value: pl.Expr | None = None, unit: pl.Expr | None = None) -> pl.DataFrame:
    return frame.select(
        subject.cast(pl.Int64).alias("subject_id"),
        time.cast(pl.Datetime("us")).alias("time"),
        code.cast(pl.String).alias("code"),
        (value if value is not None else pl.lit(None)).cast(pl.Float32).alias("numeric_value"),
        (unit if unit is not None else pl.lit(None)).cast(pl.String).alias("unit"),
    )


def _person_events(frame: pl.DataFrame) -> pl.DataFrame:
    month = pl.col("month_of_birth") if "month_of_birth" in frame.columns else pl.lit(1)
    day = pl.col("day_of_birth") if "day_of_birth" in frame.columns else pl.lit(1)
    birth = pl.date(pl.col("year_of_birth"), month.fill_null(1), day.fill_null(1)).cast(
        pl.Datetime("us"))
    if "birth_datetime" in frame.columns and isinstance(frame.schema["birth_datetime"],
                                                        pl.Datetime):
        birth = pl.coalesce(pl.col("birth_datetime").dt.replace_time_zone(None).cast(
            pl.Datetime("us")), birth)
    parts = [_events(frame, pl.col("person_id"), birth, pl.lit(events.BIRTH))]
    for column, prefix in (("gender_concept_id", "GENDER"), ("race_concept_id", "RACE"),
                           ("ethnicity_concept_id", "ETHNICITY")):
        if column in frame.columns:
            parts.append(_events(frame, pl.col("person_id"), pl.lit(None),
                                 pl.format(f"{prefix}//{{}}", pl.col(column))))
    return pl.concat(parts)


def _clinical_events(frame: pl.DataFrame, table: EventTable, units: dict[int, str],
                     where: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """The start and end events of one batch of ``table``, and the events of each code."""
    time = _as_datetime(frame, table.date, table.datetime, where)
    value = pl.col(table.value) if table.value and table.value in frame.columns else None
    unit = None
    if table.unit and table.unit in frame.columns:
        unit = pl.col(table.unit).replace_strict(units, default=None, return_dtype=pl.String)
    code = pl.format(f"{table.domain}//{{}}", pl.col(table.concept))
    out = _events(frame, pl.col("person_id"), time, code, value, unit)
    bad = out.filter(pl.col("time").is_null())
    if bad.height:
        raise SourceError(
            f"{where}: {bad.height} row(s) with a null or unparseable {table.date}; "
            "fix: every event needs a start date (ISO 'YYYY-MM-DD')"
        )
    counts = _code_counts(frame, table.concept, f"{table.domain}//")
    ends, ended = _end_events(frame, table, where)
    for name, n in _code_counts(ended, table.concept, f"END//{table.domain}//").items():
        counts[name] = counts.get(name, 0) + n
    return pl.concat([out, ends]), counts


def _code_counts(frame: pl.DataFrame, concept: str, prefix: str) -> dict[str, int]:
    """Rows per code ``<prefix><concept id>``: counted on the integer ids, then formatted as
    the events' codes are (thousands of strings, not one per event)."""
    counted = frame.group_by(concept).len()
    codes = counted.select(pl.format(f"{prefix}{{}}", pl.col(concept))).to_series()
    return dict(zip(codes.to_list(), counted["len"].to_list(), strict=True))


def _end_events(frame: pl.DataFrame, table: EventTable,
                where: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``END//<code>`` at the end date, valued with the duration in days, so the cohort
    engine pairs each end with its start (the end falls back to start + days_supply); and
    the rows of ``frame`` that have an end."""
    if table.end is None and table.supply is None:
        none = frame.clear()
        return _events(none, pl.col("person_id"), pl.lit(None), pl.lit(None)), none
    start = _as_datetime(frame, table.date, None, where)
    end = (_as_datetime(frame, table.end, None, where)
           if table.end is not None and table.end in frame.columns
           and frame.schema[table.end] != pl.Null  # an all-null batch of end dates
           else pl.lit(None, pl.Datetime("us")))
    if table.supply and table.supply in frame.columns:
        end = pl.coalesce(end, start + pl.duration(days=pl.col(table.supply)))
    ended = frame.filter(end.is_not_null())
    code = pl.format(f"END//{table.domain}//{{}}", pl.col(table.concept))
    days = (end - start).dt.total_days()
    return _events(ended, pl.col("person_id"), end, code, days), ended


def ingest(source: OmopSource, out: Path, shards: int, dataset_name: str = "omop",
           min_cell_count: int = DEFAULT_MIN_CELL_COUNT) -> dict[str, Any]:
    """Write the event store for ``source`` into ``out`` (replaced atomically at the end).

    ``out`` must be new, an empty directory or an event store an earlier ingest wrote, and
    must not overlap the source: anything else is refused before any work.

    Counts in its warnings below ``min_cell_count`` are shown suppressed.

    Bad input raises :class:`SourceError` naming the file, the field and the fix.  On any
    failure, a full disk included, the partial store is removed and ``out`` is untouched.
    """
    out = Path(out)
    store_guard.check_output(out, source.inputs())
    with store_guard.nothing_half_written(out.with_name(f".{out.name}.partial"), out):
        return _write_store(source, out, shards, dataset_name, min_cell_count)


def _write_store(source: OmopSource, out: Path, shards: int, dataset_name: str,
                 min_cell_count: int) -> dict[str, Any]:
    _checks.require_tables(source.tables(), source.location)
    work = out.with_name(f".{out.name}.partial")
    writer = store_writer.ShardWriter(work, shards, background=True)
    try:
        return _write_events(source, work, out, writer, dataset_name, min_cell_count)
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            writer.close()
        raise


def _write_events(source: OmopSource, work: Path, out: Path, writer: store_writer.ShardWriter,
                  dataset_name: str, min_cell_count: int) -> dict[str, Any]:
    shards = writer.shards
    lifespan = _checks.Lifespan()
    counts: dict[str, int] = {}
    findings = _checks.Findings(min_cell_count)
    # Per table: rows dropped for a person_id not in person, ends before starts, events
    # after the extract date; persons per year of birth.
    dropped: Counter[str] = Counter()
    ends_early: Counter[str] = Counter()
    future: Counter[str] = Counter()
    born: Counter[int] = Counter()

    units: dict[int, str] = {}
    for frame in source.batches("concept", ["concept_id", "concept_name", "domain_id"]):
        hit = frame.filter(pl.col("domain_id") == "Unit")
        units.update(zip(hit["concept_id"].to_list(), hit["concept_name"].to_list(), strict=True))

    subjects: list[np.ndarray] = []
    for frame in source.batches("person", PERSON_REQUIRED, PERSON_OPTIONAL):
        _checks.no_nulls(frame, PERSON_REQUIRED, source.where("person"), counts.get("person", 0))
        subjects.append(frame["person_id"].cast(pl.Int64).to_numpy())
        born.update(dict(frame["year_of_birth"].cast(pl.Int64).value_counts().iter_rows()))
        writer.add(_person_events(frame))
        counts["person"] = counts.get("person", 0) + frame.height
    if not subjects:
        raise SourceError(f"{source.where('person')}: no persons; fix: an OMOP CDM needs a "
                          "non-empty person table")
    persons = pl.Series(_checks.unique_persons(subjects, source.where("person")))

    def with_person(frame: pl.DataFrame, table: str) -> pl.DataFrame:
        counts[table] = counts.get(table, 0) + frame.height
        kept = _checks.with_person(frame, persons)
        dropped[table] += frame.height - kept.height
        return kept

    extract: date | None = None  # the latest observation_period_end_date: never the clock
    for frame in source.batches("observation_period", PERIOD_REQUIRED):
        where = source.where("observation_period")
        frame = with_person(frame, "observation_period")
        start, end = (_as_datetime(frame, column, None, where) for column in PERIOD_REQUIRED[1:])
        for column, code in (("observation_period_start_date", events.OBSERVATION_START),
                             ("observation_period_end_date", events.OBSERVATION_END)):
            writer.add(_checks.dated(_events(frame, pl.col("person_id"), _as_datetime(
                frame, column, None, where), pl.lit(code)), column, where))
        early, latest = frame.select((end < start).sum().alias("early"),
                                     end.max().alias("latest")).row(0)
        ends_early["observation_period"] += early
        if latest is not None:
            extract = max(extract or latest.date(), latest.date())
    for frame in source.batches("death", DEATH_REQUIRED, ["death_datetime"]):
        where = source.where("death")
        frame = with_person(frame, "death")
        deaths = _checks.dated(_events(frame, pl.col("person_id"),
                                       _as_datetime(frame, "death_date", "death_datetime",
                                                    where), pl.lit(events.DEATH)),
                               "death_date", where)
        future["death"] += _checks.after_extract(deaths, extract)
        writer.add(deaths)
    for table in CLINICAL_TABLES:
        for frame in source.batches(table.name, table.required(), table.optional()):
            found, code_counts = _clinical_events(with_person(frame, table.name), table,
                                                  units, source.where(table.name))
            ends_early[table.name] += _checks.ends_before_starts(found)
            future[table.name] += _checks.after_extract(found, extract)
            writer.add(found, code_counts)

    total = writer.finish(work, inspect=lifespan.add)
    lifespan.check({t.domain: (t.name, source.where(t.name), t.date)
                           for t in CLINICAL_TABLES}, writer.code_counts, findings)
    codes = codes_table(source, writer.codes)
    _checks.warn_unknown_concepts(codes, writer.code_counts, source.where("concept"),
                                  min_cell_count, findings)
    _warn_quality(findings, source, counts, dropped, ends_early, future, born, extract)
    events.write_parquet(codes.to_arrow(), events.codes_path(work))
    ids = np.unique(np.concatenate(subjects))
    splits = pl.DataFrame({"subject_id": ids, "split": events.split_of(ids).astype(str)})
    events.write_parquet(splits.to_arrow(), events.splits_path(work))
    summary = store_writer.write_summary(work, dataset_name, shards, int(ids.size), total,
                                         source_rows=counts)
    quality.write(work, findings.sorted(), extract)
    events.write_json({table: source.fingerprint(table) for table in source.tables()},
                      events.source_fingerprint_path(work))
    store_guard.replace_store(work, out)
    return summary


def _warn_quality(findings: _checks.Findings, source: OmopSource, counts: dict[str, int],
                  dropped: Counter[str], ends_early: Counter[str], future: Counter[str],
                  born: Counter[int], extract: date | None) -> None:
    """The per-table data-quality warnings of one ingest (see :mod:`cohortflow.quality`)."""
    n = findings.n
    tables = {t.name: t for t in CLINICAL_TABLES}
    for name in ("observation_period", "death", *tables):
        where = source.where(name)
        if not source.has(name):  # the source logged it: keep it only
            findings.warn(source.location, name, "", "missing_table", 0,
                          "table not found in the source, so the store has none of its "
                          f"events; fix: export the OMOP CDM {name} table if the data has one",
                          logged=False)
        elif counts.get(name, 0) == 0:
            findings.warn(where, name, "", "empty_table", 0,
                          "empty table (or a placeholder without OMOP columns), so the store "
                          "has none of its events; fix: export its rows if the data has any",
                          logged=False)
        if dropped[name]:
            findings.warn(where, name, "person_id", "unknown_person", dropped[name],
                          f"{n(dropped[name])} row(s) whose person_id is not in the person "
                          "table were dropped (without a person row a subject has no birth "
                          "date, sex or split); fix: export the person rows of these ids, or "
                          "leave their rows out of the extract")
        table = tables.get(name)
        start, end = ((table.date, table.end or "end date") if table is not None
                      else PERIOD_REQUIRED[1:] if name == "observation_period" else ("", ""))
        if ends_early[name]:
            findings.warn(where, name, end, "end_before_start", ends_early[name],
                          f"{n(ends_early[name])} row(s) with {end} before {start} (kept); "
                          "fix: correct the dates in the source")
        if future[name]:
            column = start or "death_date"
            findings.warn(where, name, column, "after_extract", future[name],
                          f"{n(future[name])} event(s) with {column} after the extract date "
                          f"{extract} (the latest observation_period_end_date; kept); fix: "
                          "correct the dates, or extend the observation periods to cover them")
    early, late = _checks.implausible_birth_years(born, extract)
    for count, when in ((early, f"before {_checks.EARLIEST_BIRTH_YEAR}"),
                        (late, f"after {extract.year if extract else ''}, the extract's year")):
        if count:
            findings.warn(source.where("person"), "person", "year_of_birth",
                          "implausible_birth_year", count,
                          f"{n(count)} person(s) with year_of_birth {when} (kept); fix: "
                          "correct year_of_birth in person")
