"""cohortflow.synth's warehouse preset: a wide vocabulary with a deep hierarchy, Zipf-like
code frequencies, measurements with units, visits, heavy-tailed events per person, the
planted study and determinism whatever the chunking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cohortflow import omop, synth
from cohortflow.errors import CohortflowError
from cohortflow.study import load_study
from cohortflow.synth import vocab
from tests.helpers import build_labels, cohortflow, write_study

PERSONS, SEED, CHUNK = 2000, 5, 700  # chunks cut through the generator's 1,000-person blocks
EVENT_TABLES = {"visit_occurrence": "visit", "condition_occurrence": "condition",
                "drug_exposure": "drug", "procedure_occurrence": "procedure",
                "measurement": "measurement", "observation": "observation"}


def _generate(out: Path, chunk: int = CHUNK, persons: int = PERSONS) -> synth.SynthSummary:
    return synth.generate(persons, SEED, out, progress=False, chunk_persons=chunk,
                          preset="warehouse")


@pytest.fixture(scope="module")
def cdm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthSummary]:
    out = tmp_path_factory.mktemp("warehouse") / "cdm"
    return out, _generate(out)


def _read(out: Path, table: str, *columns: str) -> pl.DataFrame:
    return pl.read_parquet(out / table / "*.parquet", columns=list(columns) or None)


def _events_per_person(out: Path, persons: int) -> np.ndarray:
    ids = pl.concat([_read(out, t, "person_id") for t in EVENT_TABLES])["person_id"].to_numpy()
    return np.bincount(ids - 1, minlength=persons)


def test_vocabulary_is_wide_and_covers_the_data(cdm):
    out, _ = cdm
    concept = pl.read_parquet(out / "concept.parquet")
    assert concept.height >= 20_000 and concept["concept_id"].is_unique().all()
    by_domain = dict(concept.group_by("domain_id").len().iter_rows())
    for domain in ("Condition", "Drug", "Procedure", "Measurement", "Observation"):
        assert by_domain[domain] >= 1000, domain
    known = set(concept["concept_id"])
    for table in (*EVENT_TABLES, "person", "observation_period", "death"):
        frame = _read(out, table)
        for col in (c for c in frame.columns if c.endswith("concept_id")):
            assert set(frame[col].drop_nulls()) <= known, (table, col)
    # Every event table's concepts lie in its own domain.
    domain_of = dict(zip(concept["concept_id"], concept["domain_id"], strict=True))
    for table, prefix in list(EVENT_TABLES.items())[1:]:
        used = set(_read(out, table, f"{prefix}_concept_id")[f"{prefix}_concept_id"])
        assert {domain_of[c] for c in used} == {prefix.capitalize()}, table


def test_measurements_have_units_and_values(cdm):
    out, _ = cdm
    meas = _read(out, "measurement", "measurement_concept_id", "value_as_number",
                 "unit_concept_id", "unit_source_value")
    assert meas.null_count().row(0) == (0, 0, 0, 0)
    units = pl.read_parquet(out / "concept.parquet").filter(pl.col("domain_id") == "Unit")
    assert set(meas["unit_concept_id"]) <= set(units["concept_id"])
    per_code = meas.group_by("measurement_concept_id").agg(
        pl.col("unit_concept_id").n_unique().alias("units"), pl.len())
    assert per_code.height >= 500 and (per_code["units"] == 1).all()
    assert (meas["value_as_number"] > 0).all()
    voc = synth.warehouse_vocabulary()
    assert (voc.unit["measurement"] > 0).sum() >= 500
    obs = _read(out, "observation", "value_as_number", "unit_concept_id")
    valued = obs["value_as_number"].is_not_null()
    assert 0.1 < valued.mean() < 0.9
    assert (valued == obs["unit_concept_id"].is_not_null()).all()


def test_hierarchy_is_deep_closed_and_omop_shaped(cdm):
    out, _ = cdm
    anc = pl.read_parquet(out / "concept_ancestor.parquet")
    assert anc["max_levels_of_separation"].max() >= 4
    assert (anc["min_levels_of_separation"] <= anc["max_levels_of_separation"]).all()
    assert (anc["min_levels_of_separation"] < anc["max_levels_of_separation"]).sum() > 100
    concept = pl.read_parquet(out / "concept.parquet")
    standard = concept.filter(pl.col("standard_concept").is_not_null())["concept_id"]
    selfs = anc.filter(pl.col("ancestor_concept_id") == pl.col("descendant_concept_id"))
    assert set(selfs["ancestor_concept_id"]) == set(standard)
    assert (selfs["max_levels_of_separation"] == 0).all()
    # Closed: a descendant's descendants are the ancestor's descendants too.
    edges = anc.filter(pl.col("min_levels_of_separation") > 0).select(
        a="ancestor_concept_id", d="descendant_concept_id")
    two = edges.join(edges.rename({"a": "d", "d": "dd"}), on="d").select("a", d="dd")
    assert two.join(edges, on=["a", "d"], how="anti").height == 0
    # Asthma has generated descendants beyond the demo's, and the entry codes under it.
    below = set(anc.filter(pl.col("ancestor_concept_id") == vocab.ASTHMA)[
        "descendant_concept_id"])
    assert {*synth.ASTHMA_ENTRY, vocab.EXACERBATION} <= below and len(below) >= 30
    # Roll-up does work: used condition codes reach ancestors 3+ levels up.
    used = _read(out, "condition_occurrence", "condition_concept_id").unique()
    up = anc.join(used, left_on="descendant_concept_id", right_on="condition_concept_id")
    assert up["max_levels_of_separation"].max() >= 4


def test_code_frequencies_are_zipf_like(cdm):
    out, _ = cdm
    counts = np.sort(_read(out, "condition_occurrence", "condition_concept_id")[
        "condition_concept_id"].value_counts()["count"].to_numpy())[::-1]
    assert counts.size > 3000  # a long tail of codes seen only a few times
    top = max(1, counts.size // 100)
    assert counts[:top].sum() / counts.sum() > 0.2  # the top 1% of codes hold a fifth
    ranks = np.arange(1, counts.size + 1)
    head = slice(2, 300)  # past the demo's planted codes
    slope = np.polyfit(np.log(ranks[head]), np.log(counts[head]), 1)[0]
    assert -1.6 < slope < -0.6


def test_events_per_person_are_heavy_tailed(cdm):
    out, summary = cdm
    per_person = _events_per_person(out, PERSONS)
    assert 60 <= np.median(per_person) <= 160
    assert np.quantile(per_person, 0.99) >= 1000
    assert summary.total_rows > 200 * PERSONS


@pytest.mark.slow
def test_events_per_person_on_a_larger_sample(tmp_path):
    _generate(tmp_path / "cdm", chunk=10_000, persons=20_000)
    per_person = _events_per_person(tmp_path / "cdm", 20_000)
    assert 80 <= np.median(per_person) <= 130
    assert 1500 <= np.quantile(per_person, 0.99) <= 6000


def test_events_reference_their_visits(cdm):
    out, _ = cdm
    visits = _read(out, "visit_occurrence", "visit_occurrence_id", "person_id",
                   "visit_start_date", "visit_end_date")
    assert visits["visit_occurrence_id"].to_list() == list(range(1, visits.height + 1))
    for table, prefix in list(EVENT_TABLES.items())[1:]:
        date = "drug_exposure_start_date" if prefix == "drug" else (
            "condition_start_date" if prefix == "condition" else f"{prefix}_date")
        events = _read(out, table, "visit_occurrence_id", "person_id", date)
        joined = events.join(visits, on="visit_occurrence_id", how="left", suffix="_v")
        assert joined["person_id_v"].null_count() == 0, table
        assert (joined["person_id"] == joined["person_id_v"]).all(), table
        assert (joined[date] == joined["visit_start_date"]).all(), table
    kinds = set(visits.join(_read(out, "visit_occurrence", "visit_occurrence_id",
                                  "visit_concept_id"), on="visit_occurrence_id")[
        "visit_concept_id"])
    assert kinds == {vocab.INPATIENT, vocab.OUTPATIENT, vocab.EMERGENCY}


def test_same_rows_whatever_the_chunking(cdm, tmp_path):
    out, summary = cdm
    again = _generate(tmp_path / "again")
    assert again == summary
    for path in sorted(out.rglob("*")):
        if path.is_file():
            assert (tmp_path / "again" / path.relative_to(out)).read_bytes() == \
                path.read_bytes(), path
    whole = _generate(tmp_path / "whole", chunk=PERSONS)
    assert whole == summary
    assert len(list((tmp_path / "whole" / "person").iterdir())) == 1
    for table in synth.WAREHOUSE_TABLES:
        assert _read(tmp_path / "whole", table).equals(_read(out, table)), table
    assert json.loads((out / "oracle.json").read_text()) == json.loads(
        (tmp_path / "whole" / "oracle.json").read_text())


def test_ingest_reads_it_and_the_demo_cohort_matches_the_oracle(cdm, tmp_path):
    out, summary = cdm
    oracle = json.loads((out / "oracle.json").read_text())
    assert oracle["preset"] == "warehouse" and oracle["n_eligible"] == summary.n_eligible
    assert 0.6 < summary.oracle_auroc < 0.9 and summary.n_outcomes > 50
    store = tmp_path / "events"
    omop.ingest(omop.open_source(out), store, shards=2)
    codes = pl.read_parquet(store / "metadata" / "codes.parquet")
    assert codes.height > 5000
    study = write_study(tmp_path / "study.yaml", shards=2, source={"omop": {"path": str(out)}})
    _, cohort = build_labels(study, store, tmp_path / "results")
    assert cohort.height == summary.n_eligible
    assert cohort["label"].sum() == summary.n_outcomes


def test_bad_preset_is_refused(tmp_path):
    with pytest.raises(CohortflowError, match="preset must be one of demo, warehouse"):
        synth.generate(10, 1, tmp_path / "x", progress=False, preset="huge")


def test_study_and_cli_choose_the_preset(tmp_path):
    demo = load_study(write_study(tmp_path / "demo.yaml"))
    wide = load_study(write_study(tmp_path / "wide.yaml", source__synth__preset="warehouse"))
    assert demo.source.synth is not None and demo.source.synth.preset == "demo"
    assert "preset" not in demo.source.model_dump(mode="json")["synth"]  # old digests hold
    assert wide.source.model_dump(mode="json")["synth"]["preset"] == "warehouse"
    assert wide.synth_digest() != demo.synth_digest()
    done = cohortflow("synth", "--persons", "30", "--seed", "2", "--preset", "warehouse",
                      "--no-progress", "--out", "cdm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    marker = json.loads((tmp_path / "cdm" / "synth.json").read_text())
    assert marker["preset"] == "warehouse" and marker["persons"] == 30
    assert (tmp_path / "cdm" / "observation").is_dir()
    bad = cohortflow("synth", "--preset", "huge", "--out", "x", cwd=tmp_path)
    assert bad.returncode == 2 and "fix: --preset warehouse" in bad.stderr
