"""Writing a cohort's de-identified OMOP CDM subset: the tables, one pass each over the
source, then the DuckDB file, the record and the marker, all in a temporary sibling folder
renamed into place at the end (a failure leaves nothing behind).

Memory is bounded by one table's rows of the cohort's persons (plus one row per person and
one id pair per visit): the clinical tables are read first, each once, tracking every
person's last date and the concepts used; then the person table (birth, top-coding,
location, k-anonymity), the location table and the vocabulary.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from cohortflow import events, privacy
from cohortflow.errors import CohortflowError
from cohortflow.layout import Layout
from cohortflow.mart import _deid, _kanon, _record
from cohortflow.mart._geo import zip3
from cohortflow.omop import OmopSource, open_source
from cohortflow.study import Study
from cohortflow.study._mart import MART_TABLES

log = logging.getLogger(__name__)

MARKER = "mart.json"
"""Written last into a finished mart: names the generator, so a rerun may replace it."""
DUCKDB_FILE = "mart.duckdb"
REPORT_JSON = "deid_report.json"
REPORT_HTML = "deid_report.html"
CLINICAL = ("observation_period", "visit_occurrence", "condition_occurrence", "drug_exposure",
            "procedure_occurrence", "measurement", "observation", "death")
"""The clinical tables a mart holds, in the order they are read (visits before the tables
that point to them)."""
OWN_ID = {"observation_period": "observation_period_id",
          "visit_occurrence": "visit_occurrence_id",
          "condition_occurrence": "condition_occurrence_id",
          "drug_exposure": "drug_exposure_id",
          "procedure_occurrence": "procedure_occurrence_id",
          "measurement": "measurement_id", "observation": "observation_id", "death": None}
VOCABULARY = ("concept", "concept_ancestor")


@dataclass
class _Pass:
    """What the clinical tables' pass collects for the person table and the record."""

    rows: dict[str, int] = field(default_factory=dict)
    concepts: set[int] = field(default_factory=set)
    last_dates: list[pl.DataFrame] = field(default_factory=list)
    actions: list[dict[str, str]] = field(default_factory=list)
    visits: pl.DataFrame | None = None

    def act(self, table: str, column: str, action: str, detail: str | None = None) -> None:
        self.actions.append({"table": table, "column": column, "action": action,
                             "detail": detail or _deid.DETAILS[action]})


def export_mart(study: Study, cohort: str, out: Path, *, results: Path = Path("results"),
                origin: str | None = None, key: str | None = None) -> dict[str, Any]:
    """Write the de-identified OMOP CDM subset of cohort ``cohort``'s persons to ``out``:
    one Parquet file per table, ``mart.duckdb``, ``deid_report.json`` and ``.html``;
    returns the record.  ``results`` is the results root the study ran into (its cohort
    tables, and a synthetic source's CDM); ``origin`` names the study file in messages;
    ``key`` overrides ``$COHORTFLOW_PSEUDONYM_KEY``."""
    origin = origin or f"study '{study.name}'"
    if study.min_cell_count < 2:
        raise CohortflowError(
            f"{origin}: min_cell_count is {study.min_cell_count}, but the mart is k-anonymous "
            "with k = min_cell_count, and k = 1 protects nobody; fix: min_cell_count: 11")
    try:
        secret = privacy.pseudonym_key(key)
    except CohortflowError:
        raise CohortflowError(
            f"{origin}: no pseudonym key: the mart's person ids and date shifts are keyed "
            f"hashes of the ids; fix: export {privacy.PSEUDONYM_KEY_ENV}=<the long random "
            "secret of the study's exports, kept off the mart>") from None
    layout = Layout.of(results, study.name)
    members = cohort_members(study, layout, cohort, origin)
    out = Path(out)
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with _open(study, layout, origin) as source:
            record = _write(study, cohort, source, members, secret, work)
        _swap(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return record


def cohort_members(study: Study, layout: Layout, cohort: str, origin: str) -> list[int]:
    """The distinct persons (``subject_id``) of a built cohort, sorted."""
    known = sorted(study.library())
    if cohort not in known:
        guess = (difflib.get_close_matches(cohort, known, n=1) or study.targets())[0]
        raise CohortflowError(f"{origin}: no cohort '{cohort}' (cohorts: {', '.join(known)}); "
                              f"fix: --cohort {guess}")
    tables = [layout.cohort_table(cohort, s) for s in events.shard_names(study.shards)]
    missing = [t for t in tables if not t.is_file()]
    if missing:
        raise CohortflowError(
            f"{missing[0]}: cohort '{cohort}' of study '{study.name}' is not built "
            f"({len(missing)} of {len(tables)} shard tables missing); fix: `cohortflow run "
            f"{origin if origin.endswith(('.yaml', '.yml')) else 'STUDY'}` first (with "
            "--results pointing where it ran: the same --results here)")
    ids = pl.concat([pl.scan_parquet(t).select("subject_id") for t in tables]).unique()
    return sorted(ids.collect()["subject_id"].to_list())


@contextlib.contextmanager
def _open(study: Study, layout: Layout, origin: str) -> Iterator[OmopSource]:
    """The study's OMOP CDM source, opened."""
    if study.source.meds is not None:
        raise CohortflowError(
            f"{origin}: source is a MEDS dataset, which has no OMOP CDM tables to subset; "
            "fix: export a mart from a study whose source is synth or omop")
    if study.source.synth is not None:
        if not layout.omop.is_dir():
            raise CohortflowError(f"{layout.omop}: the study's synthetic CDM is missing; fix: "
                                  "`cohortflow run STUDY` first")
        source = open_source(layout.omop)
    else:
        omop = study.source.omop
        assert omop is not None  # validated: exactly one source
        location = omop.url if omop.url is not None else study.source_path()
        assert location is not None
        source = open_source(location, omop.format, omop.schema_name)
    with source:
        yield source


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that exists and is neither empty nor a previous mart."""
    if out.exists() and not out.is_dir():
        raise CohortflowError(f"{out}: exists and is not a directory; fix: choose a new --out")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / MARKER).read_text()).get("generator") == "cohortflow.mart"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise CohortflowError(
                f"{out}: directory is not empty and is not a previous `cohortflow export-mart` "
                f"output (no {MARKER}); fix: choose an empty or new --out directory")


def _swap(work: Path, out: Path) -> None:
    """Put the finished ``work`` folder at ``out``, replacing an empty folder or a previous
    mart (moved aside first, removed after)."""
    old = None
    if out.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        out.rename(old / "mart")
    work.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_table(frame: pl.DataFrame, path: Path) -> None:
    """A person-level Parquet file: reproducible bytes, owner-only."""
    events.write_parquet(frame.to_arrow(), path)
    path.chmod(0o600)


def _read(source: OmopSource, table: str, keys: pl.DataFrame, keep: frozenset[str] | None
          = None) -> tuple[pl.DataFrame, dict[str, pl.DataType]] | None:
    """The cohort's rows of ``table`` with each person's keys, and the table's columns
    (None when the source has no such table, or an empty one).  With ``keep`` (a clinical
    table), the columns the mart drops are left out batch by batch, so that memory holds
    only what is written."""
    if not source.has(table):
        return None
    parts, schema = [], None
    for batch in source.batches(table, ["person_id"]):
        batch = _deid.as_dates(batch)
        if schema is None:
            schema = dict(batch.schema)
        if keep is not None:
            own = OWN_ID[table]
            batch = batch.select(c for c, t in batch.schema.items()
                                 if _deid.column_action(table, c, t, own, keep) != "dropped")
        parts.append(batch.join(keys, on="person_id", how="inner"))
    if schema is None:
        return None
    return pl.concat(parts, how="diagonal_relaxed"), schema


def _write(study: Study, cohort: str, source: OmopSource, members: list[int], secret: str,
           work: Path) -> dict[str, Any]:
    policy = study.mart
    keys = _deid.person_keys(members, secret, policy.date_shift_days)
    keep = frozenset(policy.keep_columns)
    done = _Pass()
    for table in CLINICAL:
        found = _read(source, table, keys, keep)
        if found is not None:
            _write_table(_clinical(table, *found, keep, done), work / f"{table}.parquet")
    person = _read(source, "person", keys)
    if person is None:
        raise CohortflowError(f"{source.location}: the source has no person rows for the "
                              "cohort; fix: export from the source the cohort was built on")
    persons, location, anonymised = _person(study, source, person[0], keep, done)
    _write_table(persons, work / "person.parquet")
    done.rows["person"] = persons.height
    if location is not None:
        _write_table(location, work / "location.parquet")
        done.rows["location"] = location.height
    for table, frame in _vocabulary(source, done.concepts).items():
        _write_table(frame, work / f"{table}.parquet")
        done.rows[table] = frame.height
        done.act(table, "*", "subset", "rows of the concepts the mart's tables use (and their "
                 "ancestors, so concept sets with descendants keep working); not person data")
    written = [t for t in MART_TABLES if (work / f"{t}.parquet").is_file()]
    _write_duckdb(work, written)
    record = _record.build(study, cohort, anonymised, done.rows, done.actions, written,
                           has_location=location is not None)
    events.write_json(record, work / REPORT_JSON)
    (work / REPORT_JSON).chmod(0o600)
    from cohortflow.mart._report import write_html

    write_html(record, work / REPORT_HTML)
    events.write_json({"generator": "cohortflow.mart", "format": 1, "study": study.name,
                       "cohort": cohort, "tables": written}, work / MARKER)
    (work / MARKER).chmod(0o600)
    return record


def _clinical(table: str, frame: pl.DataFrame, schema: dict[str, pl.DataType],
              keep: frozenset[str], done: _Pass) -> pl.DataFrame:
    """One clinical table de-identified: ids pseudonymised, renumbered or remapped, dates
    shifted, free text dropped (``frame`` holds the others of the table's columns,
    ``schema``); rows renumbered in (person, date, concept, id) order."""
    own = OWN_ID[table]
    actions = {c: _deid.column_action(table, c, t, own, keep) for c, t in schema.items()}
    for column in schema:
        done.act(table, column, actions[column])
    source_columns = [c for c in schema if actions[c] != "dropped"]
    dates = [c for c in source_columns if actions[c] == "shifted"]
    concepts = [c for c in source_columns if c.endswith("concept_id")]
    frame = frame.with_columns(_deid.shifted(c, frame.schema[c]) for c in dates)
    order = ["new_person_id", *dates[:2], *concepts[:1], *([own] if own else [])]
    frame = frame.sort(order, nulls_last=False, maintain_order=True)
    if own is not None:
        frame = frame.with_columns(pl.int_range(1, frame.height + 1, dtype=pl.Int64)
                                   .alias("__new_id"))
    if table == "visit_occurrence" and own is not None:
        done.visits = frame.select(pl.col(own).cast(pl.Int64, strict=False).alias("old"),
                                   pl.col("__new_id").alias("new"))
    remap = done.visits
    columns: list[pl.Expr] = []
    for column in source_columns:
        action = actions[column]
        if action == "pseudonymised":
            columns.append(pl.col("new_person_id").alias(column))
        elif action == "renumbered":
            columns.append(pl.col("__new_id").alias(column))
        elif action == "remapped":
            columns.append(pl.col(column).cast(pl.Int64, strict=False).replace_strict(
                remap["old"], remap["new"], default=None, return_dtype=pl.Int64)
                if remap is not None else pl.lit(None, pl.Int64).alias(column))
        elif action == "nulled":
            columns.append(pl.lit(None, frame.schema[column]).alias(column))
        elif action != "dropped":
            columns.append(pl.col(column))
    result = frame.select(columns)
    done.rows[table] = result.height
    for column in concepts:
        done.concepts.update(v for v in frame[column].cast(pl.Int64, strict=False).unique()
                             .to_list() if v is not None)
    if dates:
        last = pl.max_horizontal([pl.col(c).cast(pl.Date) for c in dates])
        done.last_dates.append(frame.group_by("new_person_id").agg(last.max().alias("last")))
    return result


def _person(study: Study, source: OmopSource, frame: pl.DataFrame, keep: frozenset[str],
            done: _Pass) -> tuple[pl.DataFrame, pl.DataFrame | None, _kanon.Anonymised]:
    """The person table: births generalised (and top-coded), the location generalised,
    k-anonymity over the quasi-identifiers; and the mart's location table."""
    policy = study.mart
    source_columns = [c for c in frame.columns if c not in ("new_person_id", "shift_days")]
    frame = frame.unique("person_id", keep="first", maintain_order=True).sort("new_person_id")
    last = (pl.concat(done.last_dates).group_by("new_person_id").agg(pl.col("last").max())
            if done.last_dates else pl.DataFrame(schema={"new_person_id": pl.Int64,
                                                         "last": pl.Date}))
    frame = frame.join(last, on="new_person_id", how="left")
    birth = _birth_date(frame)
    oldest = policy.top_code_age + 1
    frame = frame.with_columns(
        (birth + pl.duration(days=pl.col("shift_days"))).alias("__birth"),
        pl.col("last").dt.year().cast(pl.Int32).alias("__last_year"))
    year = pl.col("__birth").dt.year().cast(pl.Int32)
    top = (pl.col("__last_year") - year) > oldest
    frame = frame.with_columns(pl.when(top).then(pl.lit(_kanon.TOP_CODED, pl.Int32))
                               .otherwise(year).alias("__year"))
    location = _locations(source, frame)
    frame = frame.join(location, on="person_id", how="left") if location is not None else (
        frame.with_columns(pl.lit(None, pl.String).alias("zip3"),
                           pl.lit(None, pl.String).alias("state")))
    month = (pl.col("__birth").dt.month().cast(pl.Int32) if policy.birth == "year_month"
             else pl.lit(None, pl.Int32))
    quasi = frame.select(
        pl.col("new_person_id").alias("person_id"),
        pl.col("__year").alias("year_of_birth"),
        *(pl.col(c).cast(pl.Int64).fill_null(0).alias(c) if c in frame.columns
          else pl.lit(0, pl.Int64).alias(c)
          for c in ("gender_concept_id", "race_concept_id", "ethnicity_concept_id")),
        pl.col("zip3"), pl.col("state"), month.alias("month_of_birth"))
    earliest = frame.select(year.min()).item()
    anonymised = _kanon.k_anonymise(quasi, list(policy.quasi_identifiers),
                                    study.min_cell_count, policy.max_suppression,
                                    None if earliest is None else int(earliest))
    released = anonymised.frame
    floor = pl.col("__last_year") - oldest
    year_out = pl.col("year_of_birth__released")
    year_out = (pl.when(year_out == _kanon.TOP_CODED).then(floor)
                .when(floor.is_not_null() & (floor > year_out)).then(floor)
                .otherwise(year_out))
    frame = frame.drop("zip3", "state").join(
        released.rename({c: f"{c}__released" for c in released.columns if c != "person_id"})
        .rename({"person_id": "new_person_id", "zip3__released": "zip3",
                 "state__released": "state"}), on="new_person_id", how="left")
    frame = frame.with_columns(year_out.cast(pl.Int32).alias("__year_out"))
    places = None
    if location is not None:
        places = (frame.select("zip3", "state").unique()
                  .filter(pl.col("zip3").is_not_null() | pl.col("state").is_not_null())
                  .sort("state", "zip3", nulls_last=False)
                  .with_row_index("location_id", offset=1)
                  .select(pl.col("location_id").cast(pl.Int64), "zip3", "state"))
        frame = frame.join(places.rename({"location_id": "__location"}),
                           on=["zip3", "state"], how="left", nulls_equal=True)
        places = places.rename({"zip3": "zip"})  # OMOP's column, holding three digits
        done.act("location", "location_id", "renumbered",
                 "1..n over the distinct generalised (zip, state), in that order")
        done.act("location", "zip", "generalised", "first three digits; 000 for the "
                 "restricted three-digit areas (20,000 people or fewer)"
                 + ("; k-anonymity: " + _kanon.describe("zip3", anonymised.levels["zip3"])
                    if "zip3" in anonymised.levels else ""))
        done.act("location", "state", "kept" if "state" not in anonymised.levels else
                 "generalised", "kept" if "state" not in anonymised.levels else
                 "k-anonymity: " + _kanon.describe("state", anonymised.levels["state"]))
        done.act("location", "*", "dropped", "every other column (address, city, county, "
                 "latitude, longitude, location_source_value)")
    quasi_ids = set(policy.quasi_identifiers)
    columns: list[pl.Expr] = []
    for column in source_columns:
        dtype = frame.schema[column]
        if column == "person_id":
            columns.append(pl.col("new_person_id").alias(column))
            done.act("person", column, "pseudonymised")
        elif column == "year_of_birth":
            columns.append(pl.col("__year_out").cast(dtype).alias(column))
            done.act("person", column, "generalised", _record.year_detail(
                anonymised, policy.top_code_age, "year_of_birth" in quasi_ids))
        elif column == "month_of_birth":
            columns.append(pl.col("month_of_birth__released").cast(dtype).alias(column))
            done.act("person", column, "generalised" if policy.birth == "year_month"
                     else "nulled", "month of the shifted birth date"
                     if policy.birth == "year_month" else "birth: year keeps the year only")
        elif column in ("day_of_birth", "birth_datetime"):
            columns.append(pl.lit(None, dtype).alias(column))
            done.act("person", column, "nulled", "birth dates keep the year only"
                     + (" and month" if policy.birth == "year_month" else ""))
        elif column in ("gender_concept_id", "race_concept_id", "ethnicity_concept_id"):
            if column in quasi_ids:
                columns.append(pl.col(f"{column}__released").cast(dtype).alias(column))
                done.act("person", column, "generalised",
                         "k-anonymity: " + _kanon.describe(column, anonymised.levels[column])
                         + "; 0 for suppressed persons")
            else:
                columns.append(pl.col(column))
                done.act("person", column, "kept")
        elif column in ("gender_source_concept_id", "race_source_concept_id",
                        "ethnicity_source_concept_id"):
            # the source concept repeats the generalised one: keeping it would undo that
            columns.append(pl.lit(0, dtype).alias(column))
            done.act("person", column, "generalised", "set to 0: it would repeat the "
                     f"{column.replace('_source', '')} that k-anonymity generalises")
        elif column == "location_id":
            if places is not None:
                columns.append(pl.col("__location").alias(column))
                done.act("person", column, "remapped", "the mart location of the person's "
                         "generalised (zip3, state)")
            else:
                columns.append(pl.lit(None, pl.Int64).alias(column))
                done.act("person", column, "nulled", "the source has no location table")
        else:
            action = _deid.column_action("person", column, dtype, None, keep)
            if action == "shifted":  # a site's own date column: moved like every date
                columns.append(_deid.shifted(column, dtype))
            elif action in ("kept", "kept by policy"):
                columns.append(pl.col(column))
            elif action == "nulled":
                columns.append(pl.lit(None, dtype).alias(column))
            done.act("person", column, action)
    persons = frame.select(columns)
    done.concepts.update(v for c in persons.columns if c.endswith("concept_id")
                         for v in persons[c].cast(pl.Int64, strict=False).unique().to_list()
                         if v is not None)
    return persons, places, anonymised


def _birth_date(frame: pl.DataFrame) -> pl.Expr:
    """The source's birth date: ``birth_datetime`` where given, else the year, month and day
    (1 where missing)."""
    month = pl.col("month_of_birth") if "month_of_birth" in frame.columns else pl.lit(1)
    day = pl.col("day_of_birth") if "day_of_birth" in frame.columns else pl.lit(1)
    birth = pl.date(pl.col("year_of_birth").cast(pl.Int32), month.fill_null(1),
                    day.fill_null(1))
    if "birth_datetime" in frame.columns and isinstance(frame.schema["birth_datetime"],
                                                        pl.Datetime):
        birth = pl.coalesce(pl.col("birth_datetime").cast(pl.Date), birth)
    return birth


def _locations(source: OmopSource, person: pl.DataFrame) -> pl.DataFrame | None:
    """``person_id`` → (``zip3``, ``state``) of the cohort's persons, from the source's
    location table (None when it has none)."""
    if not source.has("location"):
        return None
    wanted = (person["location_id"].drop_nulls().cast(pl.Int64).unique()
              if "location_id" in person.columns else pl.Series([], dtype=pl.Int64))
    parts = []
    for frame in source.batches("location", ["location_id"]):
        parts.append(frame.filter(pl.col("location_id").is_in(wanted.implode())).select(
            "location_id",
            (zip3(pl.col("zip")) if "zip" in frame.columns else pl.lit(None, pl.String))
            .alias("zip3"),
            (pl.col("state").cast(pl.String).str.strip_chars() if "state" in frame.columns
             else pl.lit(None, pl.String)).alias("state")))
    places = (pl.concat(parts).unique("location_id", keep="first", maintain_order=True)
              if parts else pl.DataFrame(schema={"location_id": pl.Int64, "zip3": pl.String,
                                                 "state": pl.String}))
    if "location_id" not in person.columns:
        return person.select("person_id", pl.lit(None, pl.String).alias("zip3"),
                             pl.lit(None, pl.String).alias("state"))
    return person.select("person_id", pl.col("location_id").cast(pl.Int64)).join(
        places, on="location_id", how="left").drop("location_id")


def _vocabulary(source: OmopSource, concepts: set[int]) -> dict[str, pl.DataFrame]:
    """The concept rows of the concepts used and of their ancestors, and the
    concept_ancestor rows whose descendant is used."""
    used = pl.Series(sorted(concepts), dtype=pl.Int64)
    found: dict[str, pl.DataFrame] = {}
    wanted = used
    if source.has("concept_ancestor"):
        parts = [frame.filter(pl.col("descendant_concept_id").is_in(used.implode()))
                 for frame in source.batches("concept_ancestor",
                                             ["ancestor_concept_id", "descendant_concept_id"])]
        if parts:
            ancestor = pl.concat(parts, how="diagonal_relaxed").sort(
                "ancestor_concept_id", "descendant_concept_id")
            found["concept_ancestor"] = ancestor
            wanted = pl.concat([used, ancestor["ancestor_concept_id"].cast(pl.Int64)]).unique()
    if source.has("concept"):
        parts = [frame.filter(pl.col("concept_id").is_in(wanted.implode()))
                 for frame in source.batches("concept", ["concept_id"])]
        if parts:
            found["concept"] = pl.concat(parts, how="diagonal_relaxed").sort("concept_id")
    return {t: found[t] for t in VOCABULARY if t in found}


def _write_duckdb(work: Path, tables: list[str]) -> None:
    """The mart's tables, once more, as one DuckDB file (a valid OMOP CDM source)."""
    path = work / DUCKDB_FILE
    con = duckdb.connect(str(path))
    try:
        for table in tables:
            parquet = (work / f"{table}.parquet").as_posix().replace("'", "''")
            con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM read_parquet(\'{parquet}\')')
        con.execute("CHECKPOINT")
    finally:
        con.close()
    path.chmod(0o600)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        wal.chmod(0o600)
