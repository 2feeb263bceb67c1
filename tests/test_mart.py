"""The de-identified data mart (``cohortflow export-mart``): the k-anonymity step on tiny
frames, the policy's refusals, and, on a small synthetic study with a location table, the
linkage, date-shift and rerun properties and the mart read back as a cohortflow source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cohortflow import omop
from cohortflow.errors import CohortflowError, StudySpecError
from cohortflow.layout import Layout
from cohortflow.mart import RESTRICTED_ZIP3, export_mart, k_anonymise, zip3
from cohortflow.mart._deid import person_keys
from cohortflow.study import MartPolicy, Study, load_study
from tests.helpers import build_labels, make_omop_study, write_study

KEY = "mart-test-key"
ANALYSIS = "cohort__asthma_exacerbation__tar"
CLINICAL_DATES = {
    "observation_period": ["observation_period_start_date", "observation_period_end_date"],
    "visit_occurrence": ["visit_start_date", "visit_start_datetime", "visit_end_date"],
    "condition_occurrence": ["condition_start_date", "condition_start_datetime"],
    "drug_exposure": ["drug_exposure_start_date", "drug_exposure_end_date"],
    "measurement": ["measurement_date", "measurement_datetime"],
    "procedure_occurrence": ["procedure_date"],
}


# ---- k-anonymity on hand-built frames --------------------------------------------------------

def _persons(years: list[int], genders: list[int] | None = None,
             zips: list[str | None] | None = None) -> pl.DataFrame:
    n = len(years)
    return pl.DataFrame({"person_id": list(range(n)), "year_of_birth": years,
                         "gender_concept_id": genders or [8507] * n,
                         "zip3": zips or ["021"] * n},
                        schema={"person_id": pl.Int64, "year_of_birth": pl.Int32,
                                "gender_concept_id": pl.Int64, "zip3": pl.String})


def test_k_anonymity_keeps_what_is_already_k_anonymous() -> None:
    persons = _persons([2001] * 3 + [2007] * 3)
    done = k_anonymise(persons, ["year_of_birth", "gender_concept_id", "zip3"], 3, 0.0)
    assert done.levels == {"year_of_birth": 0, "gender_concept_id": 0, "zip3": 0}
    assert done.frame["year_of_birth"].to_list() == [2001] * 3 + [2007] * 3
    assert done.suppressed == 0 and done.k_reached == 3


def test_k_anonymity_chooses_the_least_generalisation() -> None:
    # k = 2 without suppression: 5- or 10-year bands with zip3 kept leave 2006 alone;
    # zip3 "000" needs 10-year bands (loss 2/3 + 1); 20-year bands with zip3 kept fit
    # (loss 1), and so does nothing less.
    persons = _persons([2001, 2002, 2003, 2006, 2011, 2012],
                       zips=["021", "021", "100", "100", "021", "100"])
    qis = ["year_of_birth", "zip3"]
    done = k_anonymise(persons, qis, 2, 0.0)
    assert done.levels == {"year_of_birth": 3, "zip3": 0}
    assert done.frame["year_of_birth"].to_list() == [2000] * 6
    assert done.suppressed == 0 and done.k_reached == 3
    widths = [1, 5, 10, 20]

    def fits(year_level: int, zip_level: int) -> bool:
        recoded = persons.with_columns(
            (pl.col("year_of_birth") // widths[year_level] * widths[year_level]),
            pl.lit("000").alias("zip3") if zip_level else pl.col("zip3"))
        return bool(recoded.group_by(qis).len()["len"].min() >= 2)  # type: ignore[operator]

    chosen = 3 / 3 + 0
    for year_level in range(4):
        for zip_level in range(2):
            if year_level / 3 + zip_level < chosen:
                assert not fits(year_level, zip_level), (year_level, zip_level)
    assert fits(3, 0) and fits(2, 1)


def test_k_anonymity_suppresses_up_to_the_share_allowed() -> None:
    # 20 persons born in 2001, one in 1950: with a 5% share allowed the outlier is
    # suppressed rather than banding everybody into 20-year bands.
    persons = _persons([2001] * 20 + [1950], genders=[8507] * 10 + [8532] * 10 + [8507])
    qis = ["year_of_birth", "gender_concept_id", "zip3"]
    done = k_anonymise(persons, qis, 5, 0.05)
    assert done.levels == {"year_of_birth": 0, "gender_concept_id": 0, "zip3": 0}
    assert done.suppressed == 1 and done.within_limit
    row = done.frame.filter(pl.col("suppressed")).row(0, named=True)
    assert (row["year_of_birth"], row["gender_concept_id"], row["zip3"]) == (1940, 0, "000")
    assert done.frame.height == persons.height  # nobody dropped
    # with no suppression allowed, the year is banded until the outlier has company: the
    # 1950 person is 51 years from the others, more than any band, so gender goes too
    strict = k_anonymise(persons, qis, 5, 0.0)
    assert strict.suppressed == 1 and not strict.within_limit  # no level fits: fewest kept
    kept = strict.frame.filter(~pl.col("suppressed"))
    assert kept.group_by(qis).len()["len"].min() >= 5  # type: ignore[operator]


def test_k_anonymity_classes_at_least_k_on_random_data() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    n = 400
    persons = pl.DataFrame({
        "person_id": np.arange(n), "year_of_birth": rng.integers(1990, 2020, n).astype(np.int32),
        "gender_concept_id": rng.choice([8507, 8532], n),
        "race_concept_id": rng.choice([8527, 8516, 8515, 0], n, p=[.7, .15, .1, .05]),
        "zip3": rng.choice(["021", "100", "606", "941", None], n)})
    qis = ["year_of_birth", "gender_concept_id", "race_concept_id", "zip3"]
    for k, share in ((2, 0.0), (5, 0.02), (11, 0.05), (25, 0.1)):
        done = k_anonymise(persons, qis, k, share)
        kept = done.frame.filter(~pl.col("suppressed"))
        assert kept.group_by(qis).len()["len"].min() >= k  # type: ignore[operator]
        assert done.suppressed == n - kept.height <= int(share * n)
        assert done.k_reached is not None and done.k_reached >= k


def test_zip3_restricted_prefixes() -> None:
    zips = [f"{p}12" for p in sorted(RESTRICTED_ZIP3)] + ["02134", "10001-2345", "1", None]
    got = pl.DataFrame({"zip": zips}).select(zip3(pl.col("zip"))).to_series().to_list()
    assert got == ["000"] * 17 + ["021", "100", None, None]


# ---- the policy ----------------------------------------------------------------------------

@pytest.mark.parametrize(("mart", "words"), [
    ({"keep_columns": ["person.person_source_value"]}, "medical record numbers"),
    ({"keep_columns": ["location.zip"]}, "the full ZIP code"),
    ({"keep_columns": ["person.birth_datetime"]}, "the birth date"),
    ({"keep_columns": ["visit_occurrence.provider_id"]}, "any other unique identifying"),
    ({"date_shift_days": 0}, "date_shift_days is 0"),
    ({"birth": "full"}, "would keep the birth date"),
    ({"top_code_age": 95}, "ages over 89"),
    ({"quasi_identifiers": ["year_of_birth", "zip5"]}, "unknown quasi-identifier column(s) zip5"),
])
def test_policy_refusals(tmp_path: Path, mart: dict[str, object], words: str) -> None:
    study = write_study(tmp_path / "study.yaml", mart=mart)
    with pytest.raises(StudySpecError, match="mart") as caught:
        load_study(study)
    assert words in str(caught.value) and "fix:" in str(caught.value)


def test_policy_defaults_and_digest(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path / "a.yaml"))
    assert study.mart == MartPolicy()
    changed = load_study(write_study(tmp_path / "b.yaml", mart={"date_shift_days": 30}))
    assert changed.digest() == study.digest()  # a mart's policy changes no result of a run


def _no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_refusals_before_any_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = load_study(write_study(tmp_path / "s.yaml", source={"omop": {"path": "cdm"}},
                                   shards=1))
    out = tmp_path / "mart"
    with pytest.raises(CohortflowError, match=r"min_cell_count is 1.*fix: min_cell_count: 11"):
        export_mart(study.model_copy(update={"min_cell_count": 1}), "cohort", out,
                    results=tmp_path / "results", key=KEY)
    with pytest.raises(CohortflowError, match="cohort 'cohort' of study 'demo' is not built"):
        export_mart(study, "cohort", out, results=tmp_path / "results", key=KEY)
    with pytest.raises(CohortflowError, match=r"no cohort 'cohrt'.*fix: --cohort cohort"):
        export_mart(study, "cohrt", out, results=tmp_path / "results", key=KEY)
    monkeypatch.delenv("COHORTFLOW_PSEUDONYM_KEY", raising=False)
    with pytest.raises(CohortflowError, match=r"no pseudonym key.*fix: export "
                                               r"COHORTFLOW_PSEUDONYM_KEY="):
        export_mart(study, "cohort", out, results=tmp_path / "results")
    _no_output(out)


def test_failure_half_way_leaves_nothing(tmp_path: Path) -> None:
    """A source without a person table fails after the clinical tables were written: the
    temporary folder goes, and a previous mart at --out is left as it was."""
    cdm = tmp_path / "cdm"
    cdm.mkdir()
    pl.DataFrame({"observation_period_id": [1, 2], "person_id": [1, 2],
                  "observation_period_start_date": [date(2010, 1, 1)] * 2,
                  "observation_period_end_date": [date(2012, 1, 1)] * 2}).write_parquet(
        cdm / "observation_period.parquet")
    study = load_study(write_study(tmp_path / "s.yaml", source={"omop": {"path": "cdm"}},
                                   shards=1))
    table = Layout.of(tmp_path / "results", "demo").cohort_table("cohort", "0")
    table.parent.mkdir(parents=True)
    pl.DataFrame({"subject_id": range(1, 13)}).write_parquet(table)  # k = 11 persons or more
    out = tmp_path / "mart"
    with pytest.raises(CohortflowError, match="no person rows"):
        export_mart(study, "cohort", out, results=tmp_path / "results", key=KEY)
    _no_output(out)


# ---- a small study exported ---------------------------------------------------------------

@dataclass(frozen=True)
class MartRun:
    root: Path
    study: Study
    study_path: Path
    results: Path
    cdm: Path
    mart: Path
    again: Path


def _add_locations(cdm: Path) -> None:
    """Give the synthetic CDM a location table (ZIP codes, restricted ones included, and
    the address fields the mart drops) and every person a location."""
    person = pl.read_parquet(cdm / "person" / "*.parquet")
    shutil.rmtree(cdm / "person")
    shutil.rmtree(cdm / "location", ignore_errors=True)  # the synthetic one, when it has it
    (cdm / "person").mkdir()
    person.with_columns((pl.col("person_id") % 12 + 1).alias("location_id")).write_parquet(
        cdm / "person" / "part-00000.parquet")
    zips = ["02134", "02139", "10001", "10002", "60601", "94110", "03601", "89301",
            "02134-5555", "10001", "60614"]
    pl.DataFrame({
        "location_id": list(range(1, 13)),
        "address_1": [f"{i} Main Street" for i in range(12)],
        "city": ["Boston"] * 12, "county": ["Suffolk"] * 12,
        "state": ["MA", "MA", "NY", "NY", "IL", "CA", "NH", "NV", "MA", "NY", "IL", None],
        "zip": [*zips, "9"], "latitude": [42.3] * 12, "longitude": [-71.1] * 12,
        "location_source_value": [f"loc{i}" for i in range(12)],
    }).write_parquet(cdm / "location.parquet")


@pytest.fixture(scope="module")
def mart_run(synth_omop: Path, tmp_path_factory: pytest.TempPathFactory) -> MartRun:
    """The demo cohort on a copy of ``synth_omop`` (with locations), built through the
    package's steps, exported as a mart, and exported again with the same key."""
    root = tmp_path_factory.mktemp("mart")
    study_path = make_omop_study(synth_omop, root / "study")
    cdm = root / "study" / "cdm"
    _add_locations(cdm)
    results = root / "results"
    layout = Layout.of(results, "demo")
    omop.ingest(omop.open_source(cdm), layout.store, shards=2)
    build_labels(study_path, layout.store, layout.root)
    study = load_study(study_path)
    export_mart(study, "cohort", root / "mart", results=results, key=KEY)
    export_mart(study, "cohort", root / "again", results=results, key=KEY)
    return MartRun(root, study, study_path, results, cdm, root / "mart", root / "again")


def _members(run: MartRun) -> list[int]:
    frames = [pl.read_parquet(p) for p in sorted(
        (run.results / "demo" / "cohorts" / "cohort" / "shards").glob("*.parquet"))]
    return sorted(pl.concat(frames)["subject_id"].unique().to_list())


def _keys(run: MartRun, key: str = KEY) -> pl.DataFrame:
    return person_keys(_members(run), key, run.study.mart.date_shift_days)


def test_mart_is_an_omop_source_with_the_same_cohort(mart_run: MartRun) -> None:
    """Item 2: the cohort rebuilt on the mart's DuckDB file has the same persons, the same
    labels and the same index times moved by each person's shift."""
    root = mart_run.root / "on_mart"
    root.mkdir()
    study_path = write_study(root / "study.yaml", shards=2, source={
        "omop": {"path": str(mart_run.mart / "mart.duckdb")}})
    layout = Layout.of(root / "results", "demo")
    omop.ingest(omop.open_source(mart_run.mart / "mart.duckdb"), layout.store, shards=2)
    _, on_mart = build_labels(study_path, layout.store, layout.root)
    original = pl.read_parquet(mart_run.results / "demo" / "analyses" / ANALYSIS
                               / "labels.parquet")
    expected = original.join(_keys(mart_run), left_on="subject_id", right_on="person_id")
    expected = expected.select(
        pl.col("new_person_id").alias("subject_id"),
        pl.col("index_time") + pl.duration(days=pl.col("shift_days")), "label")
    columns = ["subject_id", "index_time", "label"]
    assert on_mart.height == original.height > 300
    assert on_mart["subject_id"].n_unique() == original["subject_id"].n_unique()
    assert on_mart.select(columns).sort(columns).equals(expected.sort(columns))
    assert 0 < on_mart["label"].sum() < on_mart.height


def test_mart_files_and_record(mart_run: MartRun) -> None:
    mart = mart_run.mart
    assert oct(mart.stat().st_mode & 0o777) == "0o700"
    for path in mart.iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600", path.name
    record = json.loads((mart / "deid_report.json").read_text())
    assert record["format"] == "cohortflow-deid-report/1" and record["k"] == 11
    assert len(record["safe_harbor"]) == 18
    assert "shifted-dates mart" in json.dumps(record["safe_harbor"])
    assert record["k_reached"] >= 11
    tables = {t["table"] for t in record["tables"]}
    assert {"person", "location", "concept", "concept_ancestor", "visit_occurrence"} <= tables
    page = (mart / "deid_report.html").read_text()
    assert "<tr id=k>" in page and "k required / k reached" in page  # k met: no "unmet" mark
    assert json.loads((mart / "mart.json").read_text())["generator"] == "cohortflow.mart"


def test_free_text_and_identifiers_gone(mart_run: MartRun) -> None:
    for path in mart_run.mart.glob("*.parquet"):
        if path.stem in ("concept", "concept_ancestor"):
            continue
        frame = pl.read_parquet(path)
        dropped = [c for c in frame.columns if c.endswith("_source_value") or c in (
            "stop_reason", "sig", "lot_number", "measurement_time", "value_as_string")]
        assert not dropped, (path.name, dropped)
        for column in ("provider_id", "care_site_id", "visit_detail_id"):
            if column in frame.columns:
                assert frame[column].null_count() == frame.height
    person = pl.read_parquet(mart_run.mart / "person.parquet")
    for column in ("month_of_birth", "day_of_birth", "birth_datetime"):
        assert person[column].null_count() == person.height
    for column in ("gender_source_concept_id", "race_source_concept_id",
                   "ethnicity_source_concept_id"):  # they would repeat what was generalised
        assert (person[column] == 0).all()
    visits = pl.read_parquet(mart_run.mart / "visit_occurrence.parquet")
    assert visits["visit_occurrence_id"].to_list() == list(range(1, visits.height + 1))
    conditions = pl.read_parquet(mart_run.mart / "condition_occurrence.parquet")
    linked = conditions.filter(pl.col("visit_occurrence_id").is_not_null()).join(
        visits.select("visit_occurrence_id", pl.col("person_id").alias("visit_person")),
        on="visit_occurrence_id", how="left")
    assert linked.height and (linked["person_id"] == linked["visit_person"]).all()
    location = pl.read_parquet(mart_run.mart / "location.parquet")
    assert location.columns == ["location_id", "zip", "state"]
    assert set(location["zip"].drop_nulls()) <= {"021", "100", "606", "941", "000"}
    assert location.select("zip", "state").is_unique().all()
    assert set(person["location_id"].drop_nulls()) <= set(location["location_id"])


def test_no_class_under_k_among_unsuppressed(mart_run: MartRun) -> None:
    """Linkage: each mart person's released quasi-identifiers are shared by at least k
    mart persons (persons suppressed are all alike), and the original persons' values,
    generalised at the recorded levels, find each mart person among at least k."""
    record = json.loads((mart_run.mart / "deid_report.json").read_text())
    qis = record["quasi_identifiers"]
    person = pl.read_parquet(mart_run.mart / "person.parquet")
    location = pl.read_parquet(mart_run.mart / "location.parquet")
    released = person.join(location.rename({"zip": "zip3"}), on="location_id", how="left")
    sizes = released.group_by(qis).len()
    suppressed = (0, 0, 0, "000")  # gender, race, ethnicity, zip3
    small = sizes.filter(pl.col("len") < 11)
    for row in small.iter_rows(named=True):
        assert (row["gender_concept_id"], row["race_concept_id"], row["ethnicity_concept_id"],
                row["zip3"]) == suppressed
    assert record["suppression"]["within_limit"]
    levels = {g["column"]: g["level"] for g in record["generalisation"]}
    width = [1, 5, 10, 20][levels["year_of_birth"]]
    unsuppressed = released.join(small.select(qis), on=qis, how="anti", nulls_equal=True)
    assert (unsuppressed["year_of_birth"] % width == 0).all()
    assert unsuppressed.height >= 0.95 * person.height
    # each original person, generalised at the recorded levels, is found in its mart class
    source = pl.read_parquet(mart_run.cdm / "person" / "*.parquet").join(
        _keys(mart_run), on="person_id")
    places = pl.read_parquet(mart_run.cdm / "location.parquet").select(
        "location_id", zip3(pl.col("zip")).alias("zip3_source"))
    source = source.join(places, on="location_id", how="left")
    alike = (pl.col("gender_concept_id") == 0) & (pl.col("race_concept_id") == 0) & (
        pl.col("ethnicity_concept_id") == 0) & (pl.col("zip3") == "000")
    plain = released.filter(~alike)  # not suppressed (suppressed persons all look like this)
    pairs = source.join(plain, left_on="new_person_id", right_on="person_id", suffix="_mart")
    assert pairs.height == plain.height > 0.9 * person.height
    for column in ("gender_concept_id", "race_concept_id", "ethnicity_concept_id"):
        expected = pairs[column] if levels[column] == 0 else pl.Series([0] * pairs.height)
        assert (pairs[f"{column}_mart"] == expected).all(), column
    expected_zip = pairs["zip3_source"] if levels["zip3"] == 0 else pl.Series(
        ["000"] * pairs.height)
    assert (pairs["zip3"].eq_missing(expected_zip)).all()
    # the shifted birth year, banded: within a year of the true one, before banding
    assert ((pairs["year_of_birth"] // width * width - pairs["year_of_birth_mart"]).abs()
            <= width).all()


def test_every_date_moved_by_the_persons_shift(mart_run: MartRun) -> None:
    """Each person's dates are the original ones moved by one non-zero shift: no mart row
    keeps its exact date, and the intervals between a person's events are the same."""
    keys = _keys(mart_run)
    assert (keys["shift_days"] != 0).all()
    assert keys["shift_days"].n_unique() > 100  # shifts differ between persons
    members = keys["person_id"].implode()
    for table, columns in CLINICAL_DATES.items():
        source = pl.read_parquet(mart_run.cdm / table / "*.parquet").filter(
            pl.col("person_id").is_in(members)).join(keys, on="person_id")
        mart = pl.read_parquet(mart_run.mart / f"{table}.parquet")
        assert mart.height == source.height
        for column in columns:
            moved = source.select(
                pl.col("new_person_id").alias("person_id"),
                (pl.col(column) + pl.duration(days=pl.col("shift_days"))).cast(
                    source.schema[column]).alias(column)).sort("person_id", column)
            in_mart = mart.select("person_id", column).sort("person_id", column)
            assert in_mart.equals(moved)  # so the intervals between them are kept too
            before = source.select(pl.col("new_person_id").alias("person_id"), column).sort(
                "person_id", column)
            # row by row (each person's sorted dates pair up): no date kept
            same = (in_mart[column] == before[column]).fill_null(False)
            assert not same.any(), (table, column)


def test_rerun_identical_and_key_dependent(mart_run: MartRun, tmp_path: Path) -> None:
    for path in sorted(mart_run.mart.iterdir()):
        if path.name != "mart.duckdb":
            assert path.read_bytes() == (mart_run.again / path.name).read_bytes(), path.name
    # DuckDB writes a random database identifier into its file header: the tables match
    for table in ("person", "visit_occurrence", "measurement"):
        frames = []
        for mart in (mart_run.mart, mart_run.again):
            with duckdb.connect(str(mart / "mart.duckdb"), read_only=True) as con:
                frames.append(con.sql(f"SELECT * FROM {table}").pl())
        assert frames[0].equals(frames[1])
        assert frames[0].equals(pl.read_parquet(mart_run.mart / f"{table}.parquet"))
    assert _keys(mart_run).equals(_keys(mart_run))
    other = export_mart(mart_run.study, "cohort", tmp_path / "other", results=mart_run.results,
                        key="another-key")
    assert other["persons"] == json.loads((mart_run.mart / "deid_report.json").read_text())[
        "persons"]
    first = pl.read_parquet(mart_run.mart / "person.parquet")["person_id"]
    second = pl.read_parquet(tmp_path / "other" / "person.parquet")["person_id"]
    assert not set(first) & set(second)
    shifts = _keys(mart_run, "another-key")["shift_days"]
    assert (shifts != _keys(mart_run)["shift_days"]).mean() > 0.9  # type: ignore[operator]


def test_keep_columns_policy(mart_run: MartRun, tmp_path: Path) -> None:
    study = mart_run.study.model_copy(update={"mart": MartPolicy(
        keep_columns=["condition_occurrence.condition_source_value"], birth="year_month")})
    record = export_mart(study, "cohort", tmp_path / "kept", results=mart_run.results, key=KEY)
    condition = pl.read_parquet(tmp_path / "kept" / "condition_occurrence.parquet")
    assert "condition_source_value" in condition.columns
    assert pl.read_parquet(tmp_path / "kept" / "person.parquet")["month_of_birth"].null_count() \
        < record["persons"]  # type: ignore[operator]
    assert "drug_source_value" not in pl.read_parquet(
        tmp_path / "kept" / "drug_exposure.parquet").columns


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cohortflow", "export-mart", *args], cwd=cwd,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})


def test_cli(mart_run: MartRun, tmp_path: Path) -> None:
    study, results = str(mart_run.study_path), str(mart_run.results)
    done = _cli(study, "--cohort", "cohort", "--out", "mart", "--results", results,
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mart" / "mart.duckdb").is_file()
    again = _cli(study, "--cohort", "cohort", "--out", "mart", "--results", results,
                 cwd=tmp_path)  # a previous mart is replaced
    assert again.returncode == 0, again.stderr
    (tmp_path / "mart" / "my_notes.txt").write_text("mine")
    refused = _cli(study, "--cohort", "cohort", "--out", "mart", "--results", results,
                   cwd=tmp_path)  # nor a previous mart the user added a file to
    assert refused.returncode == 2 and "my_notes.txt" in refused.stderr
    assert (tmp_path / "mart" / "my_notes.txt").read_text() == "mine"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    refused = _cli(study, "--cohort", "cohort", "--out", "other", "--results", results,
                   cwd=tmp_path)
    assert refused.returncode == 2 and "is not a previous `cohortflow export-mart`" in (
        refused.stderr)
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]
    no_key = _cli(study, "--cohort", "cohort", "--out", "new", "--results", results,
                  cwd=tmp_path, env={"COHORTFLOW_PSEUDONYM_KEY": ""})
    assert no_key.returncode == 2 and "no pseudonym key" in no_key.stderr
    assert "Traceback" not in no_key.stderr
    bad = write_study(tmp_path / "bad.yaml", shards=2, mart={"date_shift_days": 0},
                      source={"omop": {"path": str(mart_run.cdm)}})
    refused = _cli(str(bad), "--cohort", "cohort", "--out", "new", "--results", results,
                   cwd=tmp_path)
    assert refused.returncode == 2 and "date_shift_days is 0" in refused.stderr
    one = write_study(tmp_path / "one.yaml", shards=2, min_cell_count=1,
                      source={"omop": {"path": str(mart_run.cdm)}})
    refused = _cli(str(one), "--cohort", "cohort", "--out", "new", "--results", results,
                   cwd=tmp_path)
    assert refused.returncode == 2 and "min_cell_count is 1" in refused.stderr
    _no_output(tmp_path / "new")


def test_top_coding_and_suppression_on_a_tiny_source(tmp_path: Path) -> None:
    """Twelve persons born in 1990 and three in 1920 (over 90 at their last date), no
    location table: the old ones are top-coded into one category of three, under k, and
    suppressed (more than the share allowed, which the record says); nobody appears older
    than 90, and the twelve others form one class."""
    cdm = tmp_path / "cdm"
    cdm.mkdir()
    ids = list(range(1, 16))
    pl.DataFrame({"person_id": ids, "gender_concept_id": [8532] * 15,
                  "year_of_birth": [1990] * 12 + [1920] * 3, "month_of_birth": [6] * 15,
                  "day_of_birth": [15] * 15, "race_concept_id": [8527] * 15,
                  "ethnicity_concept_id": [38003564] * 15,
                  "person_source_value": [f"MRN{i}" for i in ids]}).write_parquet(
        cdm / "person.parquet")
    pl.DataFrame({"observation_period_id": ids, "person_id": ids,
                  "observation_period_start_date": [date(2015, 1, 1)] * 15,
                  "observation_period_end_date": [date(2020, 6, 30)] * 15}).write_parquet(
        cdm / "observation_period.parquet")
    pl.DataFrame({"condition_occurrence_id": ids, "person_id": ids,
                  "condition_concept_id": [317009] * 15,
                  "condition_start_date": [date(2019, 5, 5)] * 15,
                  "condition_source_value": ["J45"] * 15}).write_parquet(
        cdm / "condition_occurrence.parquet")
    study = load_study(write_study(tmp_path / "s.yaml", source={"omop": {"path": "cdm"}},
                                   shards=1))
    table = Layout.of(tmp_path / "results", "demo").cohort_table("cohort", "0")
    table.parent.mkdir(parents=True)
    pl.DataFrame({"subject_id": ids}).write_parquet(table)
    record = export_mart(study, "cohort", tmp_path / "mart", results=tmp_path / "results",
                         key=KEY)
    person = pl.read_parquet(tmp_path / "mart" / "person.parquet")
    ends = pl.read_parquet(tmp_path / "mart" / "observation_period.parquet")
    ages = person.join(ends, on="person_id").select(
        pl.col("observation_period_end_date").dt.year() - pl.col("year_of_birth"))
    assert ages.to_series().max() <= 90  # type: ignore[operator]
    assert record["persons"] == 15 and record["k_reached"] == 12
    assert record["suppression"]["persons"] == "<11"
    assert record["suppression"]["within_limit"] is False
    suppressed = person.filter(pl.col("gender_concept_id") == 0)
    assert suppressed.height == 3
    assert (suppressed["race_concept_id"] == 0).all()
    assert person.filter(pl.col("gender_concept_id") != 0)["year_of_birth"].n_unique() == 1
    assert "person_source_value" not in person.columns
    assert person["month_of_birth"].null_count() == 15
    assert "location.parquet" not in {p.name for p in (tmp_path / "mart").iterdir()}


@pytest.mark.slow
def test_a_synth_study_exports_from_its_results_tree(tmp_path: Path) -> None:
    """A ``source.synth`` study's CDM is the one its synth step wrote under the results."""
    from cohortflow import synth

    study_path = write_study(tmp_path / "s.yaml", shards=1, source__synth__persons=400)
    layout = Layout.of(tmp_path / "results", "demo")
    synth.synthesize(load_study(study_path), layout.omop)
    omop.ingest(omop.open_source(layout.omop), layout.store, shards=1)
    build_labels(study_path, layout.store, layout.root)
    record = export_mart(load_study(study_path), "cohort", tmp_path / "mart",
                         results=tmp_path / "results", key=KEY)
    cohort = pl.read_parquet(layout.cohort_table("cohort", "0"))
    person = pl.read_parquet(tmp_path / "mart" / "person.parquet")
    assert person.height == cohort["subject_id"].n_unique() > 0
    assert record["persons"] == (person.height if person.height >= 11 else "<11")
