"""The mart's tables, one transform each, as pure functions over Polars frames (the
source read batch by batch, dropped columns left out as they come): the clinical tables,
then the person table (birth, top-coding, location, k-anonymity) with the location table,
then the vocabulary rows the others use."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from cohortflow.mart import _deid, _kanon, _record
from cohortflow.mart._geo import zip3
from cohortflow.omop import OmopSource
from cohortflow.study import Study

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
class Collected:
    """What the clinical tables' pass collects for the person table and the record."""

    rows: dict[str, int] = field(default_factory=dict)
    concepts: set[int] = field(default_factory=set)
    last_dates: list[pl.DataFrame] = field(default_factory=list)
    actions: list[dict[str, str]] = field(default_factory=list)
    visits: pl.DataFrame | None = None

    def act(self, table: str, column: str, action: str, detail: str | None = None) -> None:
        self.actions.append({"table": table, "column": column, "action": action,
                             "detail": detail or _deid.DETAILS[action]})


def read(source: OmopSource, table: str, keys: pl.DataFrame,
         keep: frozenset[str] | None = None
         ) -> tuple[pl.DataFrame, dict[str, pl.DataType]] | None:
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
        parts.append(batch.join(keys, on="person_id", how="inner", maintain_order="left"))
    if schema is None:
        return None
    return pl.concat(parts, how="diagonal_relaxed"), schema


def clinical(table: str, frame: pl.DataFrame, schema: dict[str, pl.DataType],
             keep: frozenset[str], done: Collected) -> pl.DataFrame:
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


def person_table(study: Study, source: OmopSource, frame: pl.DataFrame,
                 keep: frozenset[str], done: Collected
                 ) -> tuple[pl.DataFrame, pl.DataFrame | None, _kanon.Anonymised]:
    """The person table: births generalised (and top-coded), the location generalised,
    k-anonymity over the quasi-identifiers; and the mart's location table."""
    policy = study.mart
    source_columns = [c for c in frame.columns if c not in ("new_person_id", "shift_days")]
    frame = frame.unique("person_id", keep="first", maintain_order=True).sort("new_person_id")
    last = (pl.concat(done.last_dates).group_by("new_person_id").agg(pl.col("last").max())
            if done.last_dates else pl.DataFrame(schema={"new_person_id": pl.Int64,
                                                         "last": pl.Date}))
    frame = frame.join(last, on="new_person_id", how="left", maintain_order="left")
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
    frame = frame.join(location, on="person_id", how="left",
                                maintain_order="left") if location is not None else (
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
                 "state__released": "state"}), on="new_person_id", how="left",
        maintain_order="left")
    frame = frame.with_columns(year_out.cast(pl.Int32).alias("__year_out"))
    places = None
    if location is not None:
        places = (frame.select("zip3", "state").unique()
                  .filter(pl.col("zip3").is_not_null() | pl.col("state").is_not_null())
                  .sort("state", "zip3", nulls_last=False)
                  .with_row_index("location_id", offset=1)
                  .select(pl.col("location_id").cast(pl.Int64), "zip3", "state"))
        frame = frame.join(places.rename({"location_id": "__location"}),
                           on=["zip3", "state"], how="left", nulls_equal=True,
                           maintain_order="left")
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


def vocabulary(source: OmopSource, concepts: set[int]) -> dict[str, pl.DataFrame]:
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
