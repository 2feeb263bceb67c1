"""Input checks of the OMOP ingest: each bad input gets one message naming the file, the
field and the fix, and no store a rerun would trust is left behind.

The checks are pure functions over Polars frames; :mod:`cohortflow.omop._ingest` calls
them while it streams the source.  Messages never hold a value from a row (an id or a date
of birth could identify a person), only column names, counts and row positions.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from cohortflow import events, quality
from cohortflow.errors import SourceError
from cohortflow.privacy import DEFAULT_MIN_CELL_COUNT
from cohortflow.quality import Finding

log = logging.getLogger(__name__)

REQUIRED_TABLES = ("person", "observation_period")
#: Events up to this long after death are kept (claims and results arrive late); the OHDSI
#: data-quality check ``plausibleBeforeDeath`` uses the same allowance.
DEATH_GRACE = timedelta(days=60)
#: Implausible dates in up to this share of a table's events are a warning, above it an
#: error: OHDSI's data-quality thresholds for plausibleAfterBirth / BeforeDeath are of this
#: order, and real exports (Eunomia included) hold a few such rows.
LIFESPAN_TOLERANCE = 0.01
_NOT_LIFE_EVENTS = (events.BIRTH, events.DEATH)


def require_tables(tables: list[str], location: str) -> None:
    """Refuse a source without the tables every study needs.

    >>> require_tables(["person", "concept"], "cdm/")
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: cdm/: required table observation_period missing ...
    """
    for table in REQUIRED_TABLES:
        if table not in tables:
            raise SourceError(
                f"{location}: required table {table} missing (found: "
                f"{', '.join(tables) or 'no tables'}); fix: export the OMOP CDM {table} table "
                f"as {table}.parquet, {table}.csv or a database table named {table}"
            )


def no_nulls(frame: pl.DataFrame, columns: list[str], where: str, offset: int = 0) -> None:
    """Refuse nulls in columns every row needs, naming the first bad row.

    >>> no_nulls(pl.DataFrame({"year_of_birth": [2010, None]}), ["year_of_birth"], "p.csv")
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: p.csv: column year_of_birth is empty in 1 row(s) ...
    """
    for column in columns:
        nulls = frame[column].is_null()
        if nulls.any():
            first = offset + int(nulls.arg_true()[0]) + 1
            raise SourceError(
                f"{where}: column {column} is empty in {int(nulls.sum())} row(s) (first at data "
                f"row {first}); fix: every row needs a {column}"
            )


def dated(frame: pl.DataFrame, column: str, where: str) -> pl.DataFrame:
    """Events whose time came from ``column``, refused when a date was null or unparseable.

    >>> from datetime import datetime
    >>> dated(pl.DataFrame({"time": [datetime(2020, 1, 1)]}), "death_date", "d").height
    1
    """
    bad = int(frame["time"].is_null().sum())
    if bad:
        raise SourceError(
            f"{where}: {bad} row(s) with a null or unparseable {column}; fix: every row "
            "needs a date (DATE, or ISO 'YYYY-MM-DD' text)"
        )
    return frame


def unique_persons(ids: list[np.ndarray], where: str) -> np.ndarray:
    """The sorted person ids, refused when one appears twice.

    >>> unique_persons([np.array([3, 1]), np.array([2])], "person.csv").tolist()
    [1, 2, 3]
    >>> unique_persons([np.array([3, 1]), np.array([3])], "person.csv")
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: person.csv: 1 person_id value(s) appear more than once; ...
    """
    every = np.concatenate(ids)
    unique = np.unique(every)
    if unique.size != every.size:
        raise SourceError(
            f"{where}: {every.size - unique.size} person_id value(s) appear more than once; "
            "fix: the person table holds one row per person (deduplicate the export)"
        )
    return unique


class Lifespan:
    """Counts events dated before the person's birth, or after death (beyond
    :data:`DEATH_GRACE`), one sorted shard at a time, per code domain."""

    def __init__(self) -> None:
        self.before_birth: dict[str, int] = {}
        self.after_death: dict[str, int] = {}

    def add(self, shard: pl.DataFrame) -> None:
        # The dates are compared as times at midnight (a day before the birth day is a
        # time before its midnight), and the code tests run only on the few rows that
        # fail a date test, so a shard is scanned once without string work.
        life = shard.filter(pl.col("code").is_in(_NOT_LIFE_EVENTS)).group_by("subject_id").agg(
            birth=pl.col("time").filter(pl.col("code") == events.BIRTH).min().dt.truncate("1d"),
            death=(pl.col("time").filter(pl.col("code") == events.DEATH).max().dt.truncate("1d")
                   + DEATH_GRACE + timedelta(days=1)),
        )
        time = pl.col("time")
        # Lazy, so that of the shard only subject_id, time and code are joined.
        wrong = shard.lazy().join(life.lazy(), on="subject_id", how="inner").filter(
            (time < pl.col("birth")) | (time >= pl.col("death"))).select(
            "time", "code", "birth", "death").collect()
        wrong = wrong.filter(
            ~pl.col("code").is_in(_NOT_LIFE_EVENTS), ~pl.col("code").str.starts_with("END//"),
            ~pl.col("code").str.starts_with("OBSERVATION_PERIOD//"))
        domain = pl.col("code").str.split("//").list.first().alias("domain")
        for counts, test in ((self.before_birth, time < pl.col("birth")),
                             (self.after_death, time >= pl.col("death"))):
            for name, n in wrong.filter(test).group_by(domain).len().iter_rows():
                counts[name] = counts.get(name, 0) + n

    def check(self, tables: dict[str, tuple[str, str, str]], code_counts: dict[str, int],
              findings: Findings) -> None:
        """Raise for the first domain where more than :data:`LIFESPAN_TOLERANCE` of the
        events have an implausible date; warn (counts suppressed) below it.

        ``tables`` maps a domain to (its table, the table's location, its date column);
        ``code_counts`` gives the events of each code, hence of each domain.
        """
        totals: dict[str, int] = {}
        for code, n in code_counts.items():
            domain = code.split("//", 1)[0]
            totals[domain] = totals.get(domain, 0) + n
        for counts, check, what, fix in (
            (self.before_birth, "before_birth", "before the person's birth",
             "correct the event dates, or year_of_birth/month_of_birth/day_of_birth in person"),
            (self.after_death, "after_death",
             f"more than {DEATH_GRACE.days} days after the person's death",
             "correct the event dates, or death_date in death"),
        ):
            for domain in sorted(counts):
                table, where, column = tables.get(domain, (domain, domain, "date"))
                if counts[domain] > LIFESPAN_TOLERANCE * totals.get(domain, 0):
                    raise SourceError(
                        f"{where}: {counts[domain]} event(s) with {column} {what} (more than "
                        f"{LIFESPAN_TOLERANCE:.0%} of the table); fix: {fix}")
                findings.warn(where, table, column, check, counts[domain],
                              f"{findings.n(counts[domain])} event(s) with {column} {what} "
                              f"(kept: under {LIFESPAN_TOLERANCE:.0%} of the table); fix: {fix}")


def warn_unknown_concepts(codes: pl.DataFrame, counts: dict[str, int], where: str,
                          min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
                          findings: Findings | None = None) -> int:
    """Warn, with counts per domain, about concept ids the vocabulary does not hold.

    ``codes`` is the store's codes table (unknown concepts keep their code as description),
    ``counts`` the events of each code seen; counts below ``min_cell_count`` are shown
    suppressed.  Returns the number of unknown ids used by events; ``findings`` keeps the
    warning (its count: the events) for ``metadata/quality.json``.

    >>> codes = pl.DataFrame({"code": ["CONDITION//1", "CONDITION//2", "GENDER//0"],
    ...                       "description": ["Asthma", "CONDITION//2", "GENDER//0"]})
    >>> warn_unknown_concepts(codes, {"CONDITION//2": 40}, "concept.csv")
    1
    """
    pattern = r"^[A-Z_]+//-?\d+$"
    used = pl.Series(list(counts), dtype=pl.String)
    unknown = codes.filter(pl.col("code").is_in(used.implode()),  # ancestors are not used
                           pl.col("code") == pl.col("description"),
                           pl.col("code").str.contains(pattern),
                           ~pl.col("code").str.ends_with("//0"))  # 0: "no matching concept"
    if unknown.height == 0:
        return 0
    per_domain = (
        unknown.select(pl.col("code").str.split("//").list.first().alias("domain"),
                       pl.col("code").replace_strict(counts, default=0, return_dtype=pl.Int64)
                       .alias("events"))
        .group_by("domain").agg(pl.len().alias("concepts"), pl.col("events").sum())
        .sort("domain")
    )
    findings = findings if findings is not None else Findings(min_cell_count)
    n = findings.n
    detail = ", ".join(f"{d}: {n(c)} concept(s) in {n(e)} event(s)"
                       for d, c, e in per_domain.iter_rows())
    used_by = int(per_domain["events"].sum())
    findings.warn(where, "concept", "concept_id", "unknown_concept", used_by,
                  f"{n(unknown.height)} concept id(s) used by "
                  f"{n(used_by)} event(s) are not in the vocabulary "
                  f"({detail}); they keep their code as description and have no ancestors, so "
                  "concept sets match them only by exact id; fix: load the complete OMOP "
                  "vocabulary (concept, concept_ancestor)")
    return unknown.height


#: Years of birth before this are implausible: OHDSI's data-quality check
#: plausibleValueLow for person.year_of_birth.
EARLIEST_BIRTH_YEAR = 1850


class Findings:
    """The ingest's data-quality warnings, each logged once with the source's location and
    kept as a :class:`cohortflow.quality.Finding` for ``metadata/quality.json``.  The kept
    message names the table, not the location, so the store does not depend on where the
    source lies, and keeps its counts exact and marked (:func:`cohortflow.quality.mark`),
    so it does not depend on ``min_cell_count`` either: the log line is suppressed at it.

    >>> found = Findings(11)
    >>> found.warn("cdm/death.csv (table death)", "death", "death_date", "after_extract", 3,
    ...            f"{found.n(3)} event(s) with death_date after the extract date")
    >>> found.sorted()[0].message
    'death: {#3} event(s) with death_date after the extract date'
    """

    def __init__(self, min_cell_count: int = DEFAULT_MIN_CELL_COUNT) -> None:
        self.min_cell_count = min_cell_count
        self.found: list[Finding] = []

    def n(self, count: int) -> str:
        """A count in a message: exact and marked, suppressed when shown."""
        return quality.mark(count)

    def warn(self, where: str, table: str, field: str, check: str, count: int, text: str,
             logged: bool = True) -> None:
        """Keep ``<table>: <text>`` and log ``<where>: <text>`` (unless the source already
        logged it)."""
        if logged:
            log.warning("%s: %s", where, quality.render(text, self.min_cell_count))
        self.found.append(Finding(table, field, check, count, f"{table}: {text}"))

    def sorted(self) -> list[Finding]:
        """The warnings in a fixed order (table, field, check, count, message)."""
        return sorted(self.found)


def with_person(frame: pl.DataFrame, persons: pl.Series) -> pl.DataFrame:
    """The rows of ``frame`` whose ``person_id`` is in ``persons`` (the person table's ids).

    An event of an id without a person row has no birth date, sex or split; it is dropped,
    and the caller counts what was dropped per table.

    >>> frame = pl.DataFrame({"person_id": [1, 7, 2]})
    >>> with_person(frame, pl.Series([1, 2]))["person_id"].to_list()
    [1, 2]
    """
    return frame.filter(pl.col("person_id").cast(pl.Int64).is_in(
        persons.cast(pl.Int64).implode()))


def ends_before_starts(event_frame: pl.DataFrame) -> int:
    """Events whose end (an ``END//`` event, valued with the days since its start) comes
    before their start.

    >>> ends_before_starts(pl.DataFrame({"code": ["END//DRUG//1", "END//DRUG//1", "DRUG//1"],
    ...                                  "numeric_value": [-3.0, 2.0, -1.0]}))
    1
    """
    return event_frame.filter(pl.col("numeric_value") < 0).filter(
        pl.col("code").str.starts_with("END//")).height


def after_extract(event_frame: pl.DataFrame, extract: date | None) -> int:
    """Events (not ends, births or observation periods) dated after the extract date.

    >>> from datetime import datetime
    >>> after_extract(pl.DataFrame({"time": [datetime(2020, 1, 2, 9), datetime(2020, 1, 1, 9)],
    ...                             "code": ["DRUG//1", "DRUG//1"]}), date(2020, 1, 1))
    1
    """
    if extract is None:
        return 0
    after = datetime.combine(extract + timedelta(days=1), datetime.min.time())
    return event_frame.filter(pl.col("time") >= after).filter(  # dated after the extract
        ~pl.col("code").str.starts_with("END//"),
        ~pl.col("code").str.starts_with("OBSERVATION_PERIOD//"),
        pl.col("code") != events.BIRTH,
    ).height


def implausible_birth_years(years: dict[int, int], extract: date | None) -> tuple[int, int]:
    """Persons born before :data:`EARLIEST_BIRTH_YEAR`, and after the extract's year, from
    the count of persons per ``year_of_birth``.

    >>> implausible_birth_years({1800: 2, 1990: 5, 2031: 1}, date(2020, 6, 1))
    (2, 1)
    """
    early = sum(n for year, n in years.items() if year < EARLIEST_BIRTH_YEAR)
    late = sum(n for year, n in years.items() if extract is not None and year > extract.year)
    return early, late
