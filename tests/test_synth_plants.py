"""cohortflow.synth's planted truths: the rare disease (``rare_disease_per_million``) and drift
(``drift:``).  Both are off by default and then change nothing; on, they change only the
rows they must, deterministically, with the effect the oracle records."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import polars as pl
import pytest
import yaml

from cohortflow import omop, synth
from cohortflow.errors import CohortflowError
from cohortflow.study import load_study
from cohortflow.synth import vocab
from cohortflow.synth._rare import RARE_DISEASE, RARE_GROUPER, YOUNG_YEARS
from tests.helpers import REPO, build_labels, cohortflow, write_study

PERSONS, SEED, CHUNK = 4000, 3, 1500
RATE = 40_000  # per million: about 160 cases in 4,000 persons
AFTER = dt.date(2021, 1, 1)
DRIFT = {"after": AFTER.isoformat(),
         "code_frequency": {"concept_id": vocab.IBUPROFEN, "factor": 2.5},
         "assay_replacement": {"old": vocab.EOSINOPHILS, "new": 2_000_000_202},
         "outcome_rate_factor": 1.5}
DRIFT_PERSONS = 10_000


def _generate(out: Path, persons: int = PERSONS, **plants: object) -> synth.SynthSummary:
    return synth.generate(persons, SEED, out, progress=False, chunk_persons=CHUNK,
                          **plants)  # type: ignore[arg-type]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _read(out: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(out / table / "*.parquet")


def _oracle(out: Path) -> dict[str, object]:
    return json.loads((out / "oracle.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plants")
    _generate(root / "off")
    _generate(root / "rare", rare_disease_per_million=RATE)
    _generate(root / "drift_off", persons=DRIFT_PERSONS)
    _generate(root / "drift", persons=DRIFT_PERSONS, drift=DRIFT)
    return {p.name: p for p in root.iterdir()}


# ---- off by default ------------------------------------------------------------------------

def test_plants_are_off_by_default_and_change_nothing(runs, tmp_path):
    _generate(tmp_path / "explicit", rare_disease_per_million=0, drift=None)
    assert _files(tmp_path / "explicit") == _files(runs["off"])
    concept = pl.read_parquet(runs["off"] / "concept.parquet")
    assert not {RARE_DISEASE, RARE_GROUPER, 2_000_000_202} & set(concept["concept_id"])
    assert not {"rare_disease", "drift"} & set(_oracle(runs["off"]))
    marker = json.loads((runs["off"] / "synth.json").read_text())
    assert not {"rare_disease_per_million", "drift"} & set(marker)


def test_study_keeps_its_digests_when_the_plants_are_off(tmp_path):
    demo = load_study(write_study(tmp_path / "demo.yaml"))
    dumped = demo.source.model_dump(mode="json")["synth"]
    assert dumped == {"persons": 20000, "seed": 7}  # old studies keep their digests
    rare = load_study(write_study(tmp_path / "r.yaml", source__synth__rare_disease_per_million=50))
    drift = load_study(write_study(tmp_path / "d.yaml", source__synth__drift=DRIFT))
    assert rare.source.model_dump(mode="json")["synth"]["rare_disease_per_million"] == 50
    assert drift.source.model_dump(mode="json")["synth"]["drift"]["after"] == "2021-01-01"
    assert len({demo.synth_digest(), rare.synth_digest(), drift.synth_digest()}) == 3
    with pytest.raises(CohortflowError, match="drift is planted in the demo preset only"):
        load_study(write_study(tmp_path / "w.yaml", source__synth__preset="warehouse",
                               source__synth__drift=DRIFT))
    with pytest.raises(CohortflowError, match="at least one of code_frequency"):
        load_study(write_study(tmp_path / "e.yaml", source__synth__drift={"after": "2021-01-01"}))


# ---- the rare disease ----------------------------------------------------------------------

def test_rare_disease_changes_only_condition_rows_and_the_vocabulary(runs):
    off, on = _files(runs["off"]), _files(runs["rare"])
    changed = {k for k in off if off[k] != on.get(k)}
    assert {k.split("/")[0] for k in changed} == {
        "condition_occurrence", "concept.parquet", "concept_ancestor.parquet", "oracle.json",
        "synth.json"}
    cond = _read(runs["rare"], "condition_occurrence")
    rare = cond.filter(pl.col("condition_concept_id") == RARE_DISEASE)
    rest = cond.filter(pl.col("condition_concept_id") != RARE_DISEASE)
    assert rest.equals(_read(runs["off"], "condition_occurrence"))  # ids and order kept
    assert cond["condition_occurrence_id"].is_unique().all()
    assert rare["person_id"].is_unique().all() and rare["visit_occurrence_id"].null_count() == (
        rare.height)
    concept = pl.read_parquet(runs["rare"] / "concept.parquet")
    assert concept.filter(pl.col("concept_id") == RARE_DISEASE)["concept_name"].to_list() == [
        "Rare disease (planted)"]
    anc = pl.read_parquet(runs["rare"] / "concept_ancestor.parquet")
    assert anc.filter((pl.col("ancestor_concept_id") == RARE_GROUPER)
                      & (pl.col("descendant_concept_id") == RARE_DISEASE)).height == 1
    assert anc["ancestor_concept_id"].is_sorted()


def test_rare_disease_count_is_within_the_binomial_bound(runs):
    oracle = _oracle(runs["rare"])["rare_disease"]
    rare = _read(runs["rare"], "condition_occurrence").filter(
        pl.col("condition_concept_id") == RARE_DISEASE)
    assert rare.height == oracle["planted_cases"] > 0
    # About RATE per million: the expectation is N * persons / 1e6 up to the calibration of
    # the mean weight (within 3%), and the count is binomial around it (4 sd).
    expected = RATE * PERSONS / 1e6
    assert oracle["expected_cases"] == pytest.approx(expected, rel=0.03)
    assert abs(rare.height - expected) <= 4 * math.sqrt(expected) + 0.03 * expected
    assert oracle["concept_id"] == RARE_DISEASE and oracle["per_million"] == RATE
    assert oracle["risk_factors"] == {"male": 3.0, f"age_under_{YOUNG_YEARS}_years_at_index": 3.0}


def test_rare_disease_cases_lie_after_the_index_inside_observation(runs):
    out = runs["rare"]
    rare = _read(out, "condition_occurrence").filter(
        pl.col("condition_concept_id") == RARE_DISEASE).select("person_id", "condition_start_date")
    periods = _read(out, "observation_period")
    visits = _read(out, "visit_occurrence").join(periods, on="person_id").filter(
        pl.col("visit_start_date").is_between("observation_period_start_date",
                                              "observation_period_end_date")
        & ((pl.col("visit_start_date") - pl.col("observation_period_start_date"))
           >= pl.duration(days=365)))
    index = visits.group_by("person_id").agg(
        pl.col("visit_start_date", "observation_period_end_date").sort_by(
            "visit_start_date").first())
    cases = rare.join(index, on="person_id", how="left")
    assert cases["visit_start_date"].null_count() == 0
    assert (cases["condition_start_date"] > cases["visit_start_date"]).all()
    assert (cases["condition_start_date"] <= cases["observation_period_end_date"]).all()


def test_rare_disease_is_deterministic_and_independent_of_chunk_size(runs, tmp_path):
    _generate(tmp_path / "again", rare_disease_per_million=RATE)
    assert _files(tmp_path / "again") == _files(runs["rare"])
    # The warehouse's rows do not depend on the chunking, and neither do the plant's draws.
    rows = []
    for chunk in (700, 1500):
        out = tmp_path / f"w{chunk}"
        synth.generate(1500, SEED, out, progress=False, chunk_persons=chunk,
                       preset="warehouse", rare_disease_per_million=RATE)
        rows.append(_read(out, "condition_occurrence").filter(
            pl.col("condition_concept_id") == RARE_DISEASE))
        assert _oracle(out)["rare_disease"]["planted_cases"] == rows[-1].height
    assert rows[0].height > 20 and rows[0].equals(rows[1])


def test_rare_disease_is_commoner_in_boys_and_young_children(tmp_path):
    out = tmp_path / "big"
    _generate(out, persons=12_000, rare_disease_per_million=100_000)  # about 1,200 cases
    groups = _oracle(out)["rare_disease"]["by_group"]

    def rate(*names: str) -> float:
        return (sum(groups[n]["cases"] for n in names)
                / sum(groups[n]["eligible"] for n in names))

    young, old = f"under_{YOUNG_YEARS}", f"{YOUNG_YEARS}_plus"
    assert rate(f"boys_{young}", f"boys_{old}") > 2 * rate(f"girls_{young}", f"girls_{old}")
    assert rate(f"boys_{young}", f"girls_{young}") > 2 * rate(f"boys_{old}", f"girls_{old}")
    # the tables agree: boys among the cases, from the person table
    cases = _read(out, "condition_occurrence").filter(
        pl.col("condition_concept_id") == RARE_DISEASE).join(_read(out, "person"), on="person_id")
    boys = int((cases["gender_concept_id"] == vocab.MALE).sum())
    assert boys == groups[f"boys_{young}"]["cases"] + groups[f"boys_{old}"]["cases"]
    assert boys > 0.65 * cases.height


def test_the_seed_study_cohort_finds_every_planted_case(runs, tmp_path):
    raw = yaml.safe_load((REPO / "seeds" / "studies" / "rare_disease.yaml").read_text())
    assert raw["source"]["synth"]["rare_disease_per_million"] == 50
    assert raw["analyses"][0]["matching"] == {"controls": 4, "sex": True, "age_years": 1,
                                              "index_days": 90, "observation_days": 365}
    del raw["analyses"][0]["matching"]  # the labels are the cohort's, matched or not
    raw["source"], raw["shards"] = {"omop": {"path": str(runs["rare"])}}, 2
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    omop.ingest(omop.open_source(runs["rare"]), tmp_path / "events", shards=2)
    _, labels = build_labels(tmp_path / "study.yaml", tmp_path / "events", tmp_path / "results")
    planted = _read(runs["rare"], "condition_occurrence").filter(
        pl.col("condition_concept_id") == RARE_DISEASE)["person_id"]
    found = labels.filter(pl.col("label") == 1)["subject_id"]
    assert sorted(found.to_list()) == sorted(planted.to_list())
    assert labels.height >= _oracle(runs["rare"])["rare_disease"]["eligible_persons"]


def test_cli_plants(tmp_path):
    done = cohortflow("synth", "--persons", "400", "--seed", "2", "--no-progress", "--out", "cdm",
                      "--rare-disease-per-million", "100000",
                      "--drift", "{after: 2021-01-01, outcome_rate_factor: 2}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    oracle = _oracle(tmp_path / "cdm")
    assert oracle["rare_disease"]["planted_cases"] > 0
    assert oracle["drift"]["settings"] == {"after": "2021-01-01", "outcome_rate_factor": 2.0}
    bad = cohortflow("synth", "--out", "x", "--drift", "{after: 2021-01-01, rate: 2}",
                     cwd=tmp_path)
    assert bad.returncode == 2 and "unknown key(s) rate" in bad.stderr
    bad = cohortflow("synth", "--out", "y", "--preset", "warehouse", "--drift",
                     "{after: 2021-01-01, outcome_rate_factor: 2}", cwd=tmp_path)
    assert bad.returncode == 2 and "demo preset only" in bad.stderr


# ---- drift ---------------------------------------------------------------------------------

def _person_years(out: Path) -> tuple[float, float]:
    p = _read(out, "observation_period").select(
        s=pl.col("observation_period_start_date"),
        e=pl.col("observation_period_end_date") + pl.duration(days=1))
    cut = pl.lit(AFTER)
    before = (pl.min_horizontal("e", cut) - pl.col("s")).dt.total_days().clip(0)
    after = (pl.col("e") - pl.max_horizontal("s", cut)).dt.total_days().clip(0)
    days = p.select(before.sum().alias("b"), after.sum().alias("a"))
    return days["b"][0] / 365.25, days["a"][0] / 365.25


def test_drift_code_frequency_is_multiplied_after_the_date(runs):
    factor = DRIFT["code_frequency"]["factor"]
    rates = []
    for name in ("drift_off", "drift"):
        drug = _read(runs[name], "drug_exposure").filter(
            pl.col("drug_concept_id") == vocab.IBUPROFEN_SUSP)
        late = drug["drug_exposure_start_date"] >= AFTER
        py_before, py_after = _person_years(runs[name])
        rates.append((int((~late).sum()) / py_before, int(late.sum()) / py_after))
    (off_before, off_after), (before, after) = rates
    assert before == off_before  # nothing changes before the date
    # floor(2.5) copies plus one with probability 0.5: after / as written = 2.5 within 4 sd
    written = off_after * _person_years(runs["drift"])[1]
    assert after / off_after == pytest.approx(factor, abs=4 * math.sqrt(0.25 / written))
    # before / after, as a drift detector sees it: the factor, up to the calendar noise
    assert after / before == pytest.approx(factor, rel=0.1)
    measured = _oracle(runs["drift"])["drift"]["code_frequency"]
    assert measured["per_1000_person_years_before"] == pytest.approx(1000 * before, abs=1e-3)
    assert measured["per_1000_person_years_after"] == pytest.approx(1000 * after, abs=1e-3)
    assert measured["ratio"] == pytest.approx(after / before, abs=1e-3)
    assert measured["concept_ids"] == [vocab.IBUPROFEN, vocab.IBUPROFEN_SUSP]


def test_drift_assay_is_replaced_after_the_date(runs):
    new = DRIFT["assay_replacement"]["new"]
    meas = _read(runs["drift"], "measurement")
    late = meas["measurement_date"] >= AFTER
    old_rows = meas.filter(pl.col("measurement_concept_id") == vocab.EOSINOPHILS)
    new_rows = meas.filter(pl.col("measurement_concept_id") == new)
    assert (old_rows["measurement_date"] < AFTER).all()
    assert (new_rows["measurement_date"] >= AFTER).all() and new_rows.height > 100
    off = _read(runs["drift_off"], "measurement")
    assert new_rows.height == off.filter(
        (pl.col("measurement_concept_id") == vocab.EOSINOPHILS)
        & (pl.col("measurement_date") >= AFTER)).height
    assert meas.drop("measurement_concept_id").equals(off.drop("measurement_concept_id"))
    assert int(late.sum()) == int((off["measurement_date"] >= AFTER).sum())
    measured = _oracle(runs["drift"])["drift"]["assay_replacement"]
    assert measured == {"old_before": old_rows.height, "recoded_after": new_rows.height,
                        "old_after": 0, "share_recoded": 1.0}
    concept = pl.read_parquet(runs["drift"] / "concept.parquet")
    assert concept.filter(pl.col("concept_id") == new)["domain_id"].to_list() == ["Measurement"]
    anc = pl.read_parquet(runs["drift"] / "concept_ancestor.parquet")
    assert anc.filter(pl.col("descendant_concept_id") == new).height >= 1


def _demo_cohort(out: Path) -> pl.DataFrame:
    """The planted study's children (index, full year observed) and their outcome."""
    cond = _read(out, "condition_occurrence")
    first = (cond.filter(pl.col("condition_concept_id").is_in(list(synth.ASTHMA_ENTRY)))
             .group_by("person_id").agg(index=pl.col("condition_start_date").min()))
    cohort = first.join(_read(out, "observation_period"), on="person_id").filter(
        pl.col("index").is_between("observation_period_start_date",
                                   "observation_period_end_date")
        & (pl.col("index") - pl.col("observation_period_start_date") >= pl.duration(days=365)))
    exac = cond.filter(pl.col("condition_concept_id") == vocab.EXACERBATION).join(
        cohort, on="person_id").filter(pl.col("condition_start_date").is_between(
            pl.col("index") + pl.duration(days=1), pl.col("index") + pl.duration(days=365)))
    return cohort.select(
        "person_id", late=pl.col("index") >= AFTER,
        full=pl.col("index") + pl.duration(days=365) <= pl.col("observation_period_end_date"),
        outcome=pl.col("person_id").is_in(exac["person_id"].implode()))


def test_drift_outcome_rate_rises_after_the_date(runs):
    factor = DRIFT["outcome_rate_factor"]
    off, on = _demo_cohort(runs["drift_off"]), _demo_cohort(runs["drift"])
    assert off.select("person_id", "late").equals(on.select("person_id", "late"))
    assert on.filter(~pl.col("late"))["outcome"].equals(off.filter(~pl.col("late"))["outcome"])
    late_off = int(off.filter(pl.col("late"))["outcome"].sum())
    late_on = int(on.filter(pl.col("late"))["outcome"].sum())
    assert late_off > 50
    # each late child's risk r becomes min(1, 1.5 r): outcomes x 1.5 up to the cap, 4 sd
    assert late_on / late_off == pytest.approx(factor, abs=4 * math.sqrt(0.5 / late_off) + 0.05)
    measured = _oracle(runs["drift"])["drift"]["outcome_rate"]
    assert measured["outcomes_after"] == late_on
    assert measured["outcomes_before"] == int(on.filter(~pl.col("late"))["outcome"].sum())
    assert measured["eligible_after"] == int(on["late"].sum())
    full = on.filter("full").group_by("late").agg(pl.col("outcome").mean()).sort("late")
    assert measured["full_year_ratio"] == pytest.approx(
        full["outcome"][1] / full["outcome"][0], abs=1e-3)
    assert summary_matches(runs["drift"])


def summary_matches(out: Path) -> bool:
    """``oracle.json``'s n_eligible and n_outcomes are the written cohort's."""
    oracle, cohort = _oracle(out), _demo_cohort(out)
    return bool(oracle["n_eligible"] == cohort.height
                and oracle["n_outcomes"] == int(cohort["outcome"].sum()))


def test_drift_is_deterministic_and_each_part_leaves_other_tables_alone(runs, tmp_path):
    _generate(tmp_path / "again", persons=DRIFT_PERSONS, drift=DRIFT)
    assert _files(tmp_path / "again") == _files(runs["drift"])
    off = _files(runs["drift_off"])
    parts = {"code_frequency": {"drug_exposure"}, "assay_replacement": {"measurement"},
             "outcome_rate_factor": {"visit_occurrence", "condition_occurrence",
                                     "drug_exposure", "procedure_occurrence"}}
    for part, tables in parts.items():
        out = tmp_path / part
        _generate(out, persons=DRIFT_PERSONS,
                  drift={"after": DRIFT["after"], part: DRIFT[part]})
        on = _files(out)
        changed = {k.split("/")[0] for k in off if off[k] != on.get(k)}
        vocabulary = {"concept.parquet", "concept_ancestor.parquet"}
        assert changed - vocabulary == tables | {"oracle.json", "synth.json"}, part
        assert (changed & vocabulary) == (vocabulary if part == "assay_replacement" else set())


def test_bad_drift_settings_are_refused(tmp_path):
    with pytest.raises(CohortflowError, match="not in the synthetic vocabulary"):
        _generate(tmp_path / "a", persons=50, drift={
            "after": "2021-01-01", "code_frequency": {"concept_id": 1, "factor": 2}})
    with pytest.raises(CohortflowError, match="is already a concept"):
        _generate(tmp_path / "b", persons=50, drift={
            "after": "2021-01-01", "assay_replacement": {"old": vocab.EOSINOPHILS,
                                                         "new": vocab.WEIGHT}})
    with pytest.raises(CohortflowError, match="rare_disease_per_million must be"):
        _generate(tmp_path / "c", persons=50, rare_disease_per_million=-1)


def test_drift_below_one_thins_events_and_outcomes_and_keeps_visits_whole(runs, tmp_path):
    out = tmp_path / "fewer"
    _generate(out, persons=DRIFT_PERSONS, drift={
        "after": DRIFT["after"], "code_frequency": {"concept_id": vocab.IBUPROFEN, "factor": 0.5},
        "outcome_rate_factor": 0.5})
    measured = _oracle(out)["drift"]
    ratio = measured["code_frequency"]["ratio"] / measured["code_frequency"]["ratio_without_drift"]
    assert ratio == pytest.approx(0.5, abs=0.06)
    off, on = _demo_cohort(runs["drift_off"]), _demo_cohort(out)
    late_off = int(off.filter(pl.col("late"))["outcome"].sum())
    late_on = int(on.filter(pl.col("late"))["outcome"].sum())
    assert late_on / late_off == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / late_off))
    assert measured["outcome_rate"]["outcomes_after"] == late_on
    # every event's visit is still there, and every exacerbation visit kept its events
    visits = _read(out, "visit_occurrence")["visit_occurrence_id"]
    for table in ("condition_occurrence", "drug_exposure", "procedure_occurrence"):
        assert _read(out, table)["visit_occurrence_id"].drop_nulls().is_in(
            visits.implode()).all(), table
    assert _read(out, "drug_exposure")["drug_exposure_id"].is_unique().all()
