"""OMOP → event store: the three file sources, their quirks, and the MEDS contract."""

from __future__ import annotations

import logging
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cohortflow import events, manifest, omop
from cohortflow.errors import SourceError

PERSON = pl.DataFrame({
    "person_id": [1, 2, 3],
    "gender_concept_id": [8532, 8507, 8532],
    "year_of_birth": [2010, 2012, 2008],
    "month_of_birth": [5, None, 1],
    "day_of_birth": [17, None, 2],
    "race_concept_id": [8527, 0, 8516],
    "ethnicity_concept_id": [38003564, 38003563, 38003564],
})
PERIOD = pl.DataFrame({
    "observation_period_id": [1, 2, 3],
    "person_id": [1, 2, 3],
    "observation_period_start_date": [date(2012, 1, 1), date(2013, 1, 1), date(2011, 1, 1)],
    "observation_period_end_date": [date(2020, 1, 1), date(2019, 1, 1), date(2021, 1, 1)],
})
CONDITION = pl.DataFrame({
    "condition_occurrence_id": [10, 11, 12, 13],
    "person_id": [1, 1, 2, 3],
    "condition_concept_id": [317009, 2000000001, 317009, 257007],
    "condition_start_date": [date(2015, 3, 1), date(2014, 3, 1), date(2016, 1, 1),
                             date(2015, 1, 1)],
    "condition_start_datetime": [datetime(2015, 3, 1, 10), None, None, None],
    "condition_end_date": [None, None, None, None],   # Eunomia-style null end dates
})
MEASUREMENT = pl.DataFrame({
    "measurement_id": [20, 21],
    "person_id": [3, 3],
    "measurement_concept_id": [3025315, 3025315],
    "measurement_date": [date(2015, 1, 1), date(2015, 1, 1)],
    "value_as_number": [30.5, None],
    "unit_concept_id": [9529, 9529],
})
CONCEPT = pl.DataFrame({
    "concept_id": [317009, 2000000001, 257007, 3025315, 9529, 8532, 8507],
    "concept_name": ["Asthma", "Childhood asthma", "Allergic rhinitis", "Body weight",
                     "kilogram", "FEMALE", "MALE"],
    "domain_id": ["Condition", "Condition", "Condition", "Measurement", "Unit", "Gender",
                  "Gender"],
})
ANCESTOR = pl.DataFrame({
    "ancestor_concept_id": [317009, 317009, 2000000001],
    "descendant_concept_id": [317009, 2000000001, 2000000001],
    "min_levels_of_separation": [0, 1, 0],
    "max_levels_of_separation": [0, 1, 0],
})
TABLES = {"person": PERSON, "observation_period": PERIOD, "condition_occurrence": CONDITION,
          "measurement": MEASUREMENT, "concept": CONCEPT, "concept_ancestor": ANCESTOR,
          "death": pl.DataFrame({"person_id": [], "death_date": []},
                                schema={"person_id": pl.Int64, "death_date": pl.Date})}


def as_parquet(root: Path) -> Path:
    root.mkdir()
    for name, table in TABLES.items():
        table.write_parquet(root / f"{name}.parquet")
    return root


def as_upper_csv(root: Path) -> Path:
    root.mkdir()
    for name, table in TABLES.items():
        table.rename(str.upper).write_csv(root / f"{name.upper()}.csv")
    return root


def as_duckdb(path: Path) -> Path:
    con = duckdb.connect(str(path))
    for name, table in TABLES.items():
        con.register("t", table.rename(str.upper).to_arrow())
        con.execute(f'CREATE TABLE "{name.upper()}" AS SELECT * FROM t')
        con.unregister("t")
    # An Eunomia-style placeholder table: columns named column0, column1, ...
    con.execute('CREATE TABLE "COHORT" AS SELECT 1 AS column0, 2 AS column1')
    con.close()
    return path


def ingest(source: Path, out: Path, shards: int = 2) -> Path:
    omop.ingest(omop.open_source(source), out, shards)
    return out


def test_event_store_follows_the_meds_layout(tmp_path: Path) -> None:
    store = ingest(as_parquet(tmp_path / "cdm"), tmp_path / "events")
    names = events.list_shards(store)
    assert names == ["0", "1"]
    shards = [pl.read_parquet(events.shard_path(store, s)) for s in names]
    for number, frame in enumerate(shards):
        assert frame.schema == events.POLARS_EVENT_SCHEMA
        assert frame.equals(frame.sort("subject_id", "time", "code", nulls_last=False))
        # each subject lives in exactly the shard that shard_of names
        assert set(events.shard_of(frame["subject_id"].to_numpy(), 2)) <= {number}
    every = pl.concat(shards)
    assert every["subject_id"].n_unique() == 3
    person1 = every.filter(pl.col("subject_id") == 1)
    assert person1.filter(pl.col("time").is_null())["code"].to_list() == [
        "ETHNICITY//38003564", "GENDER//8532", "RACE//8527"]
    assert person1.filter(pl.col("code") == events.BIRTH)["time"].to_list() == [
        datetime(2010, 5, 17)]
    assert person1.filter(pl.col("code") == "CONDITION//317009")["time"].to_list() == [
        datetime(2015, 3, 1, 10)]  # the datetime wins over the date when present
    weight = every.filter(pl.col("code") == "MEASUREMENT//3025315")
    assert weight["numeric_value"].to_list() == [None, 30.5]  # ties: nulls first
    assert weight["unit"].to_list() == ["kilogram", "kilogram"]
    person2 = every.filter(pl.col("subject_id") == 2, pl.col("code") == events.BIRTH)
    assert person2["time"].to_list() == [datetime(2012, 1, 1)]  # missing month/day: Jan 1


def test_codes_metadata_carries_the_hierarchy(tmp_path: Path) -> None:
    store = ingest(as_parquet(tmp_path / "cdm"), tmp_path / "events")
    codes = events.read_codes(store)
    row = codes.filter(pl.col("code") == "CONDITION//2000000001").row(0, named=True)
    assert row == {"code": "CONDITION//2000000001", "description": "Childhood asthma",
                   "parent_codes": ["CONDITION//317009"],
                   "ancestor_codes": ["CONDITION//317009"]}
    assert events.descendants(codes, ["CONDITION//317009"]) == {
        "CONDITION//317009", "CONDITION//2000000001"}
    splits = events.read_splits(store)
    assert sorted(splits["subject_id"].to_list()) == [1, 2, 3]
    assert set(splits["split"].to_list()) <= set(events.SPLITS)


def test_parquet_csv_and_duckdb_sources_give_the_same_store(tmp_path: Path) -> None:
    stores = [
        ingest(as_parquet(tmp_path / "pq"), tmp_path / "a"),
        ingest(as_upper_csv(tmp_path / "csv"), tmp_path / "b"),
        ingest(as_duckdb(tmp_path / "cdm.duckdb"), tmp_path / "c"),
    ]
    data = [{k: v for k, v in manifest.tree_digests(s).items() if k.startswith("data/")}
            for s in stores]
    assert data[0] == data[1] == data[2]
    assert events.read_codes(stores[0]).equals(events.read_codes(stores[2]))


def test_placeholder_and_empty_tables_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        ingest(as_duckdb(tmp_path / "cdm.duckdb"), tmp_path / "events")
    assert "empty table; skipped" in caplog.text          # death
    source = omop.open_source(tmp_path / "cdm.duckdb")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert list(source.batches("cohort", ["cohort_definition_id"])) == []
    assert "placeholder table" in caplog.text


def test_missing_required_column_names_table_and_column(tmp_path: Path) -> None:
    cdm = as_parquet(tmp_path / "cdm")
    CONDITION.drop("condition_start_date").write_parquet(cdm / "condition_occurrence.parquet")
    with pytest.raises(SourceError, match=r"condition_occurrence.*condition_start_date missing"):
        ingest(cdm, tmp_path / "events")
    assert not (tmp_path / "events").exists()  # nothing a rerun would trust


def test_unparseable_dates_are_refused(tmp_path: Path) -> None:
    cdm = as_upper_csv(tmp_path / "csv")
    text = (cdm / "CONDITION_OCCURRENCE.csv").read_text().replace("2016-01-01", "not-a-date")
    (cdm / "CONDITION_OCCURRENCE.csv").write_text(text)
    with pytest.raises(SourceError, match=r"1 row\(s\) with a null or unparseable"):
        ingest(cdm, tmp_path / "events")


def test_rerun_replaces_the_store_byte_for_byte(tmp_path: Path) -> None:
    cdm = as_parquet(tmp_path / "cdm")
    first = manifest.tree_digests(ingest(cdm, tmp_path / "events"))
    assert manifest.tree_digests(ingest(cdm, tmp_path / "events")) == first


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="OMOP source not found"):
        omop.open_source(tmp_path / "nope")
