"""cohortflow.synth: determinism, OMOP layout, population invariants and the planted study."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohortflow import synth
from cohortflow.errors import CohortflowError
from cohortflow.synth import vocab

PERSONS, SEED, CHUNK = 5000, 11, 2000
EVENT_TABLES = {  # table -> (start date column, end date column or None)
    "visit_occurrence": ("visit_start_date", "visit_end_date"),
    "condition_occurrence": ("condition_start_date", "condition_end_date"),
    "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date"),
    "measurement": ("measurement_date", None),
    "procedure_occurrence": ("procedure_date", None),
}
ENTRY = list(synth.ASTHMA_ENTRY)


def _generate(out: Path, persons: int = PERSONS, seed: int = SEED) -> synth.SynthSummary:
    # Several chunks even at small sizes.
    return synth.generate(persons, seed, out, progress=False, chunk_persons=CHUNK)


@pytest.fixture(scope="module")
def cdm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "cdm"
    return out, _generate(out)


def _read(out: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(out / table / "*.parquet")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_inputs_give_byte_identical_files(cdm, tmp_path):
    out, summary = cdm
    assert _generate(tmp_path / "again") == summary
    assert _files(tmp_path / "again") == _files(out)
    _generate(tmp_path / "other", seed=SEED + 1)
    other = _files(tmp_path / "other")
    assert other["person/part-00000.parquet"] != _files(out)["person/part-00000.parquet"]


def test_layout_and_types(cdm):
    out, summary = cdm
    parts = [f"part-{i:05d}.parquet" for i in range(-(-PERSONS // CHUNK))]
    for table, schema in synth.SCHEMAS.items():
        assert sorted(p.name for p in (out / table).iterdir()) == parts
        assert pq.read_schema(out / table / parts[0]).remove_metadata() == schema
        assert _read(out, table).height == summary.rows[table]
    person = pq.read_schema(out / "person" / parts[0])
    assert person.field("person_id").type == pa.int64()
    assert person.field("birth_datetime").type == pa.timestamp("us")
    cond = pq.read_schema(out / "condition_occurrence" / parts[0])
    assert cond.field("condition_start_date").type == pa.date32()
    assert cond.field("condition_concept_id").type == pa.int64()
    meas = _read(out, "measurement")
    assert {"value_as_number", "unit_concept_id", "unit_source_value"} <= set(meas.columns)
    assert meas["value_as_number"].null_count() == 0
    marker = json.loads((out / "synth.json").read_text())
    assert marker["complete"] and marker["rows"] == summary.rows
    assert summary.total_rows == sum(summary.rows.values())


def test_ids_unique_across_chunks_and_visits_resolve(cdm):
    out, _ = cdm
    person = _read(out, "person")
    assert person["person_id"].to_list() == list(range(1, PERSONS + 1))
    for table in [*EVENT_TABLES, "observation_period"]:
        ids = _read(out, table)[f"{table}_id"]
        assert ids.n_unique() == ids.len() and ids.min() == 1 and ids.max() == ids.len()
    visits = _read(out, "visit_occurrence").select("visit_occurrence_id", "person_id")
    for table in list(EVENT_TABLES)[1:]:
        events = _read(out, table).select("visit_occurrence_id", "person_id")
        joined = events.join(visits, on="visit_occurrence_id", how="left", suffix="_v")
        assert (joined["person_id"] == joined["person_id_v"]).all()


def test_everyone_is_a_child_throughout_observation(cdm):
    out, _ = cdm
    birth = _read(out, "person").select(
        "person_id", birth=pl.date("year_of_birth", "month_of_birth", "day_of_birth"))
    periods = _read(out, "observation_period").join(birth, on="person_id")
    assert (periods["observation_period_start_date"] >= periods["birth"]).all()
    assert (periods["observation_period_end_date"]
            < periods["birth"].dt.offset_by("18y")).all()
    assert (periods["observation_period_end_date"]
            >= periods["observation_period_start_date"]).all()
    assert periods["observation_period_start_date"].min() >= dt.date(2005, 1, 1)
    assert periods["observation_period_end_date"].max() <= dt.date(2024, 12, 31)
    counts = periods.group_by("person_id").len()["len"]
    assert counts.max() == 2 and 0.02 < (counts == 2).mean() < 0.15


def test_events_inside_observation_and_not_after_death(cdm):
    out, _ = cdm
    periods = _read(out, "observation_period")
    for table, (start, end) in EVENT_TABLES.items():
        events = _read(out, table).select(f"{table}_id", "person_id", start,
                                          *([end] if end else []))
        inside = events.join(periods, on="person_id").with_columns(
            ok=(pl.col(start) >= pl.col("observation_period_start_date"))
            & (pl.col(end or start) <= pl.col("observation_period_end_date")))
        per_event = inside.group_by(f"{table}_id").agg(pl.col("ok").any())
        assert per_event.height == events.height and per_event["ok"].all(), table
    death = _read(out, "death")
    assert death.height < PERSONS * 0.01
    last = periods.group_by("person_id").agg(pl.col("observation_period_end_date").max())
    if death.height:
        joined = death.join(last, on="person_id")
        assert (joined["death_date"] == joined["observation_period_end_date"]).all()


def test_vocabulary_covers_data_and_hierarchy_is_closed(cdm):
    out, _ = cdm
    concept = pl.read_parquet(out / "concept.parquet")
    known = set(concept["concept_id"])
    for table in synth.SCHEMAS:
        frame = _read(out, table)
        for col in (c for c in frame.columns if c.endswith("concept_id")):
            assert set(frame[col].drop_nulls()) <= known, (table, col)
    anc = pl.read_parquet(out / "concept_ancestor.parquet")
    pairs = set(zip(anc["ancestor_concept_id"], anc["descendant_concept_id"], strict=True))
    standard = set(concept.filter(pl.col("standard_concept").is_not_null())["concept_id"])
    assert {(c, c) for c in standard} <= pairs
    down: dict[int, set[int]] = {}
    for a, d in pairs:
        down.setdefault(a, set()).add(d)
    for a, ds in down.items():
        for d in ds:
            assert down.get(d, set()) <= ds, (a, d)
    assert (anc["min_levels_of_separation"] <= anc["max_levels_of_separation"]).all()
    assert anc["max_levels_of_separation"].max() >= 3
    assert {(vocab.ASTHMA, c) for c in [*ENTRY, vocab.EXACERBATION]} <= pairs
    assert (vocab.ALBUTEROL, vocab.ALBUTEROL_MDI) in pairs


def _cohort(out: Path) -> pl.DataFrame:
    """The planted study recomputed from the written data, with the risk features."""
    cond = _read(out, "condition_occurrence")
    first = (cond.filter(pl.col("condition_concept_id").is_in(ENTRY))
             .group_by("person_id").agg(index=pl.col("condition_start_date").min()))
    periods = _read(out, "observation_period")
    cohort = (first.join(periods, on="person_id")
              .filter(pl.col("index").is_between("observation_period_start_date",
                                                 "observation_period_end_date"))
              .filter(pl.col("index") - pl.col("observation_period_start_date")
                      >= pl.duration(days=365))
              .select("person_id", "index"))
    exac = cond.filter(pl.col("condition_concept_id") == vocab.EXACERBATION).join(
        cohort, on="person_id").filter(
        pl.col("condition_start_date").is_between(pl.col("index") + pl.duration(days=1),
                                                  pl.col("index") + pl.duration(days=365)))

    def lookback(table: str, date: str, concept: int, agg: pl.Expr) -> pl.DataFrame:
        return (_read(out, table).filter(pl.col(f"{table.split('_')[0]}_concept_id") == concept)
                .join(cohort, on="person_id")
                .filter(pl.col(date).is_between(pl.col("index") - pl.duration(days=365),
                                                pl.col("index")))
                .group_by("person_id").agg(agg))

    person = _read(out, "person").select(
        "person_id", male=pl.col("gender_concept_id") == vocab.MALE,
        birth=pl.date("year_of_birth", "month_of_birth", "day_of_birth"))
    frames = [
        lookback("condition_occurrence", "condition_start_date", vocab.ALLERGIC_RHINITIS,
                 pl.len().alias("allergic_rhinitis_any")),
        lookback("condition_occurrence", "condition_start_date", vocab.ATOPIC_DERMATITIS,
                 pl.len().alias("atopic_dermatitis_any")),
        lookback("drug_exposure", "drug_exposure_start_date", vocab.ALBUTEROL_MDI,
                 pl.len().alias("albuterol_count")),
        lookback("measurement", "measurement_date", vocab.EOSINOPHILS,
                 pl.col("value_as_number").mean().alias("eosinophils_mean")),
        exac.group_by("person_id").agg(pl.len().alias("outcome")),
    ]
    for frame in frames:
        cohort = cohort.join(frame, on="person_id", how="left")
    return cohort.join(person, on="person_id").fill_null(0).with_columns(
        pl.col("allergic_rhinitis_any", "atopic_dermatitis_any", "outcome") > 0,
        age_years=(pl.col("index") - pl.col("birth")).dt.total_days() / 365.25)


def test_planted_study_matches_oracle(cdm):
    out, summary = cdm
    oracle = json.loads((out / "oracle.json").read_text())
    assert oracle["generator"] == "cohortflow.synth" and oracle["generator_version"] == 1
    assert (oracle["persons"], oracle["seed"]) == (PERSONS, SEED)
    cohort = _cohort(out)
    assert cohort.height == oracle["n_eligible"] == summary.n_eligible
    assert cohort["outcome"].sum() == oracle["n_outcomes"] == summary.n_outcomes
    prevalence = summary.n_outcomes / summary.n_eligible
    assert 0.14 < prevalence < 0.28
    assert 0.70 < summary.oracle_auroc < 0.86
    # The risk is a function of the written data only: recomputing it gives the oracle.
    coef = oracle["planted_study"]["risk_model"]["coefficients"]
    logit = coef["intercept"] + sum(cohort[k].cast(pl.Float64) * v for k, v in coef.items()
                                    if k != "intercept")
    assert synth.auroc(logit.to_numpy(), cohort["outcome"].to_numpy()) == pytest.approx(
        summary.oracle_auroc, abs=1e-4)
    assert (cohort["eosinophils_mean"] > 0).mean() > 0.6


def test_attrition_and_outcome_only_after_first_asthma_code(cdm):
    out, _ = cdm
    cond = _read(out, "condition_occurrence")
    first = (cond.filter(pl.col("condition_concept_id").is_in(ENTRY))
             .group_by("person_id").agg(first=pl.col("condition_start_date").min()))
    asthmatic = first.height / PERSONS
    assert 0.30 < asthmatic < 0.40
    assert 0.1 < 1 - _cohort(out).height / first.height < 0.4  # prior-observation attrition
    exac = cond.filter(pl.col("condition_concept_id") == vocab.EXACERBATION).join(
        first, on="person_id", how="left")
    assert exac["first"].null_count() == 0
    gap = (exac["condition_start_date"] - exac["first"]).dt.total_days()
    assert gap.min() >= 1 and gap.max() <= 365
    repeats = cond.filter(pl.col("condition_concept_id").is_in(ENTRY)).group_by(
        "person_id").len()
    assert (repeats["len"] > 1).mean() > 0.3


def test_heavy_tailed_events_per_person(cdm):
    out, summary = cdm
    per_person = pl.concat([_read(out, t).select("person_id") for t in EVENT_TABLES]).group_by(
        "person_id").len()["len"]
    assert 40 <= (summary.total_rows - 2 * PERSONS) / PERSONS <= 110
    assert per_person.max() > 8 * per_person.median()


def test_bad_inputs_and_rerun(tmp_path):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(CohortflowError, match="persons"):
            synth.generate(bad, 1, tmp_path / "x", progress=False)
    with pytest.raises(CohortflowError, match="seed"):
        synth.generate(10, -1, tmp_path / "x", progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CohortflowError, match="not a previous"):
        synth.generate(10, 1, foreign, progress=False)
    out = tmp_path / "cdm"
    _generate(out, persons=CHUNK + 10)
    assert len(list((out / "person").iterdir())) == 2
    small = _generate(out, persons=20)  # a previous synth output is replaced, stale parts too
    assert [p.name for p in (out / "person").iterdir()] == ["part-00000.parquet"]
    assert _read(out, "person").height == small.persons == 20


def test_auroc_handles_ties_and_degenerate_labels():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 400).astype(float)
    labels = rng.random(400) < 0.3
    pos, neg = scores[labels], scores[~labels]
    brute = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert synth.auroc(scores, labels) == pytest.approx(brute, abs=1e-12)
    assert np.isnan(synth.auroc(scores, np.zeros(400, bool)))


@pytest.mark.parametrize("persons", [1, 2, 3])
def test_tiny_sizes(tmp_path, persons):
    for seed in range(10):  # some chunks have no visits or no asthma at all
        summary = synth.generate(persons, seed, tmp_path / "cdm", progress=False)
        assert summary.rows["person"] == persons
        assert summary.n_outcomes <= summary.n_eligible <= persons
