"""The synthetic CDM's ``location`` table and ``person.location_id``: OMOP columns, ZIP
codes of realistic shape (heavy-tailed, restricted ZIP3 prefixes with few persons), drawn
from a stream of their own, so that every other table is what it was without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from cohortflow import synth
from cohortflow.synth import _generate, _location

PERSONS, SEED = 3_000, 5
OMOP_LOCATION = ["location_id", "address_1", "address_2", "city", "state", "zip", "county",
                 "location_source_value", "country_concept_id", "country_source_value",
                 "latitude", "longitude"]


@pytest.fixture(scope="module")
def cdm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("location") / "cdm"
    synth.generate(PERSONS, SEED, out, progress=False, chunk_persons=1_200)
    return out


def test_location_table_has_the_omop_columns_and_zip_codes(cdm: Path) -> None:
    assert [p.name for p in (cdm / "location").iterdir()] == ["part-00000.parquet"]
    assert pq.read_schema(cdm / "location" / "part-00000.parquet").names == OMOP_LOCATION
    location = pl.read_parquet(cdm / "location")
    assert location["location_id"].to_list() == list(range(1, location.height + 1))
    assert 200 <= location.height <= 500 and location["zip"].n_unique() == location.height
    assert location["zip"].str.contains(r"^\d{5}$").all()
    assert location["zip"].to_list() == location["location_source_value"].to_list()
    assert sorted(location["state"].unique()) == ["NM", "NY", "TX"]
    assert 30 <= location["zip"].str.slice(0, 3).n_unique() <= 40
    assert location["address_1"].null_count() == location.height  # ZIP-level rows only
    assert (location["country_concept_id"] == _location.UNITED_STATES).all()
    assert location["latitude"].is_between(29, 44).all()
    assert location["longitude"].is_between(-110, -73).all()
    marker = pl.read_json(cdm / "synth.json")
    assert marker["rows"].struct.field("location").item() == location.height


def test_every_person_lives_at_a_zip_code_of_realistic_spread(cdm: Path) -> None:
    person = pl.read_parquet(cdm / "person")
    location = pl.read_parquet(cdm / "location")
    assert person["location_id"].null_count() == 0
    lived = person.join(location, on="location_id", how="left")
    assert lived["zip"].null_count() == 0
    per_zip3 = lived.group_by(pl.col("zip").str.slice(0, 3).alias("zip3")).len()
    sizes = np.sort(per_zip3["len"].to_numpy())[::-1]
    assert sizes[0] > 5 * np.median(sizes)  # heavy-tailed: a few prefixes hold most persons
    restricted = per_zip3.filter(pl.col("zip3").is_in(list(_location.RESTRICTED_ZIP3)))
    assert restricted.height >= 2  # the export has restricted prefixes to generalise
    assert (restricted["len"] < PERSONS * 0.005).all()  # with few persons each
    assert lived["zip"].n_unique() > 150


def test_locations_depend_on_the_seed_and_person_id_only(cdm: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    synth.generate(PERSONS, SEED, whole, progress=False, chunk_persons=PERSONS)
    # the demo's other tables depend on the chunking; the locations do not
    assert (pl.read_parquet(whole / "person")["location_id"].to_list()
            == pl.read_parquet(cdm / "person")["location_id"].to_list())
    assert ((whole / "location" / "part-00000.parquet").read_bytes()
            == (cdm / "location" / "part-00000.parquet").read_bytes())
    other = _location.location_ids(SEED + 1, 1, PERSONS)
    assert other.tolist() != pl.read_parquet(cdm / "person")["location_id"].to_list()


@pytest.mark.parametrize("preset", ["demo", "warehouse"])
def test_every_other_table_is_as_it_was_without_locations(
        preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synth.generate(1_100, SEED, tmp_path / "with", progress=False, preset=preset)
    monkeypatch.setattr(_generate, "with_locations", lambda person, seed: person)
    synth.generate(1_100, SEED, tmp_path / "without", progress=False, preset=preset)
    with_, without = tmp_path / "with", tmp_path / "without"
    files = sorted(p.relative_to(without) for p in without.rglob("*.parquet"))
    assert files == sorted(p.relative_to(with_) for p in with_.rglob("*.parquet"))
    for file in files:
        if file.parts[0] not in ("person",):
            assert (with_ / file).read_bytes() == (without / file).read_bytes(), file
    person, bare = pl.read_parquet(with_ / "person"), pl.read_parquet(without / "person")
    assert person.drop("location_id").equals(bare.drop("location_id"))
    assert bare["location_id"].null_count() == bare.height
    assert person["location_id"].null_count() == 0
