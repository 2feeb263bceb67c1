"""Genotypes in a study (``genomics:``): the study section, the conversion as separate
jobs, linkage, pharmacogene phenotypes, the ``pgx`` cohort criterion and the genomic
features, checked against direct computations on a hand-built VCF and on the synthetic
source's genotypes (its truth table, independent of the caller)."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import cyvcf2
import numpy as np
import polars as pl
import pytest
import yaml

from cohortflow import cohorts, events, features
from cohortflow.cohorts._engine import GENOTYPED_STEP
from cohortflow.errors import StudySpecError
from cohortflow.features._genomics import gene_phenotypes, genomic_cells, genomic_keys
from cohortflow.features._index import FeatureIndex, dense_block
from cohortflow.genomics import GRCH38_CONTIGS, GenomicsError
from cohortflow.genomics import _study as steps
from cohortflow.layout import Layout
from cohortflow.pgx import PHENOTYPES
from cohortflow.study import (
    PHENOTYPE_SLUGS,
    Cohort,
    ConceptSet,
    GenomicFeatures,
    content_digest,
    load_study,
    parse_study,
    phenotype_slug,
)
from cohortflow.study._digests import file_digest
from cohortflow.synth._genotypes import Bgzf
from tests.helpers import REPO, cohortflow, run_study
from tests.test_rerun_keys import _dry_run, _rules

PGX_STUDY = REPO / "seeds" / "studies" / "pgx.yaml"
STAR2 = "chr10:94781859:G:A"  # CYP2C19*2's defining variant (rs4244285)

# ---- the study section --------------------------------------------------------------------


def _raw(**changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load(PGX_STUDY.read_text())
    raw.update(changes)
    return raw


def test_the_seed_study_validates_with_its_genotypes_rule_and_features() -> None:
    study = load_study(PGX_STUDY)
    assert study.genomics is not None and study.genomics.from_synth
    [rule] = study.cohorts["cyp2c19_poor"].pgx_criteria()
    assert (rule.gene, rule.phenotype) == ("CYP2C19", ["poor"])
    assert study.features.built_aggregations()[-1] == "dosage"
    assert [a.target for a in study.analysis_list()] == ["escitalopram_starters",
                                                        "cyp2c19_poor"]


def test_the_phenotype_names_are_the_cpic_terms_shortened() -> None:
    assert tuple(phenotype_slug(t) for t in PHENOTYPES) == PHENOTYPE_SLUGS
    assert gene_phenotypes("CYP2C19") == ("ultrarapid", "rapid", "normal",
                                          "likely_intermediate", "intermediate",
                                          "likely_poor", "poor", "indeterminate")


@pytest.mark.parametrize(("change", "message"), [
    ({"genomics": None}, "cohorts.cyp2c19_poor"),
    ({"genomics": {"vcf": ["a.vcf.gz"], "zarr": "b.vcz", "linkage": "l.csv"}},
     r"give vcf \(files to convert\) or zarr"),
    ({"genomics": {"vcf": ["a.vcf.gz"]}}, "with their linkage"),
    ({"source": {"synth": {"persons": 10}}}, "the source plants no genotypes"),
])
def test_a_bad_genomics_section_is_refused_at_its_place(change: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(StudySpecError, match=message):
        parse_study(_raw(**change), origin="pgx.yaml")


@pytest.mark.parametrize(("criterion", "message"), [
    ({"gene": "CYP2D6", "phenotype": ["poor"]}, "unknown pharmacogene 'CYP2D6'.*CYP2C19"),
    ({"gene": "CYP2C19", "phenotype": ["slow"]}, "phenotype.0"),
    ({"gene": "CYP2C19", "phenotype": []}, "phenotype"),
])
def test_a_bad_pgx_criterion_names_its_field(criterion: dict[str, Any], message: str) -> None:
    raw = _raw()
    raw["cohorts"]["cyp2c19_poor"]["inclusion_rules"][0]["criteria"][0]["pgx"] = criterion
    with pytest.raises(StudySpecError, match=message):
        parse_study(raw, origin="pgx.yaml")


def test_a_missing_genotype_file_is_named_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "link.csv").write_text("sample_id,person_id\n")
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(_raw(genomics={"vcf": ["chr10.vcf.gz"],
                                                   "linkage": "link.csv"})))
    done = cohortflow("validate", str(study), cwd=tmp_path)
    assert done.returncode == 2
    assert (f"genomics.vcf.0: chr10.vcf.gz: no such file ({tmp_path / 'chr10.vcf.gz'}); "
            "fix: correct the path") in done.stderr
    assert "linkage" not in done.stderr


def test_genomic_features_without_genotypes_are_refused() -> None:
    raw = _raw(genomics=None)
    raw["cohorts"]["cyp2c19_poor"].pop("inclusion_rules")
    with pytest.raises(StudySpecError, match=r"features\.genomics"):
        parse_study(raw, origin="pgx.yaml")
    with pytest.raises(ValueError, match="not a variant"):
        GenomicFeatures(variants=["chr10 94781859"])


def test_editing_the_genotypes_reruns_only_what_reads_them(tmp_path: Path) -> None:
    """The genotype steps' key covers the files' content; the cohorts without a pgx
    criterion and the tensors' keys do not move when the genomics section changes."""
    vcf, link = tmp_path / "a.vcf.gz", tmp_path / "link.csv"
    vcf.write_bytes(b"one")
    link.write_text("sample_id,person_id\n")
    raw = _raw(genomics={"vcf": ["a.vcf.gz"], "linkage": "link.csv", "partitions": 2})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    before = load_study(path)
    keys = before.genomics_digest(), before.synth_digest()
    keys += tuple(before.cohort_digest(n) for n in ("escitalopram_starters", "cyp2c19_poor"))
    vcf.write_bytes(b"two")  # same name, other content, edited a second later
    os.utime(vcf, ns=(vcf.stat().st_atime_ns, vcf.stat().st_mtime_ns + 10**9))
    after = load_study(path)
    assert after.genomics_digest() != keys[0]
    raw["genomics"]["partitions"] = 3
    path.write_text(yaml.safe_dump(raw))
    third = load_study(path)
    assert third.genomics_digest() not in (keys[0], after.genomics_digest())
    assert (third.synth_digest(), *(third.cohort_digest(n) for n in (
        "escitalopram_starters", "cyp2c19_poor"))) == keys[1:]
    for name in ("escitalopram_starters", "cyp2c19_poor"):
        assert third.features_digest(name) == before.features_digest(name)
    raw["genomics"]["absent"] = "reference"  # how the caller counts: the phenotypes only
    path.write_text(yaml.safe_dump(raw))
    fourth = load_study(path)
    assert fourth.phenotypes_digest() != third.phenotypes_digest()
    assert (fourth.genomics_digest(), fourth.linkage_digest(), fourth.variants_digest()) == (
        third.genomics_digest(), third.linkage_digest(), third.variants_digest())
    linked = fourth.genomics_digest(), fourth.linkage_digest()
    link.write_text("sample_id,person_id\nS1,1\n")  # a new linkage: not the conversion
    os.utime(link, ns=(link.stat().st_atime_ns, link.stat().st_mtime_ns + 10**9))
    fifth = load_study(path)
    assert fifth.genomics_digest() == linked[0]
    assert fifth.linkage_digest() != linked[1]


def test_studies_without_genotypes_keep_their_keys() -> None:
    """The new fields are left out of the dumps when unused: the demo's keys are those
    its results were built under."""
    demo = load_study()
    dumped = demo.model_dump(mode="json")
    assert "genomics" not in dumped and "genomics" not in dumped["features"]

# ---- a hand-built VCF ---------------------------------------------------------------------


SAMPLES = ("S1", "S2", "S3", "S4")
RECORDS = (  # CHROM POS ID REF ALT, then S1..S4
    ("chr10", 100, "rsMULTI", "A", "C,T", ("0/2", "1/2", "0/0", "2/2")),
    ("chr10", 94781859, "rs4244285", "G", "A", ("1|1", "0|1", "0|0", "./.")),
    ("chr12", 500, "rsBI", "C", "G", ("0/1", "1/1", "./.", "0/0")),
)
LINKAGE = {"S1": 11, "S2": 12, "S3": 13, "S4": 14, "S9": 19}  # S9: not genotyped here


def _vcf_text() -> str:
    head = ["##fileformat=VCFv4.3", "##contig=<ID=chr10,length=133797422>",
            "##contig=<ID=chr12,length=133275309>",
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
            "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO",
                       "FORMAT", *SAMPLES])]
    rows = ["\t".join([c, str(p), i, r, a, ".", "PASS", ".", "GT", *gt])
            for c, p, i, r, a, gt in RECORDS]
    return "\n".join(head + rows) + "\n"


def _direct_dosage(variant: str, sample: str) -> float:
    """The dosage read off the VCF text above, by hand."""
    k = SAMPLES.index(sample)
    for chrom, pos, vid, ref, alts, gts in RECORDS:
        parts = variant.split(":")
        if variant != vid and parts[:2] != [chrom, str(pos)]:
            continue
        alleles = gts[k].replace("|", "/").split("/")
        if "." in alleles:
            return math.nan
        if len(parts) == 4:
            wanted = str([ref, *alts.split(",")].index(parts[3]))
            return float(sum(a == wanted for a in alleles))
        return float(sum(a != "0" for a in alleles))
    raise AssertionError(variant)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """The hand-built VCF converted by the workflow's steps, one call per job (two
    partitions asked), then linked, called and its dosages read."""
    root = tmp_path_factory.mktemp("tiny")
    vcf = root / "in" / "tiny.vcf.gz"
    vcf.parent.mkdir()
    with vcf.open("wb") as raw, io.BufferedWriter(Bgzf(raw)) as f:
        f.write(_vcf_text().encode())
    link = root / "in" / "link.csv"
    link.write_text("sample_id,person_id\n" + "".join(f"{s},{p}\n" for s, p in LINKAGE.items()))
    lay = Layout.of(root / "results", "tiny")
    init = lay.genomics_step("explode_init.json")
    steps.convert_init([vcf], lay.genotypes, 2, init)
    exploded = []
    for part in steps.partition_names(init):
        exploded.append(lay.genomics_step(f"explode/{part}.json"))
        steps.convert_explode(lay.genotypes, int(part), exploded[-1])
    encode = lay.genomics_step("encode_init.json")
    steps.convert_encode_init(lay.genotypes, 2, exploded, encode)
    for part in steps.partition_names(encode):
        steps.convert_encode(lay.genotypes, int(part), lay.genomics_step(f"encode/{part}.json"))
    steps.convert_finish(lay.genotypes, lay.genotypes_record)
    steps.write_linkage(lay.genotypes_record, link, lay.linkage)
    steps.write_phenotypes(lay.genotypes_record, lay.linkage, "reference", lay.phenotypes)
    steps.write_dosages(lay.genotypes_record, lay.linkage,
                        ["rs4244285", "chr10:100:A:T", "chr12:500"], lay.variants)
    return lay


def test_the_converted_store_is_recorded_and_its_samples_linked(tiny: Layout) -> None:
    record = json.loads(tiny.genotypes_record.read_text())
    assert (record["samples"], record["variants"]) == (4, 3)
    assert Path(record["store"]) == tiny.genotypes.absolute()
    assert json.loads(tiny.genomics_step("explode_init.json").read_text())["partitions"] >= 1
    assert pl.read_parquet(tiny.linkage).rows() == [("S1", 11), ("S2", 12), ("S3", 13),
                                                     ("S4", 14)]
    assert tiny.genotypes.stat().st_mode & 0o077 == 0  # the rest: the workflow's umask


def test_a_rerun_conversion_replaces_its_own_store_only(tiny: Layout, tmp_path: Path) -> None:
    """A conversion rerun (its inputs changed) starts by removing the store it published
    before; a folder of that name that is not a Zarr store is refused and kept."""
    vcf = tiny.root.parents[1] / "in" / "tiny.vcf.gz"
    old = tmp_path / "genotypes.vcz"
    shutil.copytree(tiny.genotypes, old)
    steps.convert_init([vcf], old, 1, tmp_path / "init.json")
    assert not old.exists() and steps.partition_names(tmp_path / "init.json")
    foreign = tmp_path / "other" / "genotypes.vcz"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(GenomicsError, match="already exists"):
        steps.convert_init([vcf], foreign, 1, tmp_path / "init2.json")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_given_store_is_checked_against_the_declared_reference(tiny: Layout,
                                                                tmp_path: Path) -> None:
    """genomics.zarr with genomics.reference: the store's contigs with records are checked
    when it is recorded (here chr10 and chr12)."""
    steps.describe_store(tiny.genotypes, tmp_path / "ok.json", GRCH38_CONTIGS)
    assert json.loads((tmp_path / "ok.json").read_text())["variants"] == 3
    with pytest.raises(GenomicsError, match=r"genotypes\.vcz: CHROM: records on contig\(s\) "
                                            r"chr12, not a contig of the reference \(10\)"):
        steps.describe_store(tiny.genotypes, tmp_path / "bad.json", ["10"])
    assert not (tmp_path / "bad.json").exists()


def test_the_phenotypes_are_the_callers_for_each_linked_person(tiny: Layout) -> None:
    table = pl.read_parquet(tiny.phenotypes).filter(pl.col("gene") == "CYP2C19")
    assert table.select("subject_id", "diplotype", "phenotype", "cpic_phenotype").rows() == [
        (11, "*2/*2", "poor", "Poor Metabolizer"),
        (12, "*1/*2", "intermediate", "Intermediate Metabolizer"),
        (13, "*1/*1", "normal", "Normal Metabolizer"),
        (14, None, "indeterminate", "Indeterminate")]
    assert "missing call" in table["reason"][3]


def test_the_dosages_equal_the_vcfs_by_hand(tiny: Layout) -> None:
    table = pl.read_parquet(tiny.variants)
    by_person = {p: s for s, p in LINKAGE.items()}
    assert table.height == 12
    for subject, variant, dosage in table.iter_rows():
        expected = _direct_dosage(variant, by_person[subject])
        assert (dosage is None and math.isnan(expected)) or dosage == expected, (
            subject, variant)


def test_an_unknown_or_ambiguous_variant_is_named(tiny: Layout, tmp_path: Path) -> None:
    for variant, message in (("chr10:101", "is not in the genotypes"),
                             ("chr10:100", "has 2 alternate alleles.*chr10:100:A:C"),
                             ("rs404", "is not in the genotypes")):
        with pytest.raises(GenomicsError, match=f"features.genomics.variants: .*{message}"):
            steps.write_dosages(tiny.genotypes_record, tiny.linkage, [variant],
                                tmp_path / "v.parquet")


def test_the_genomic_feature_cells_equal_a_direct_computation(tiny: Layout) -> None:
    spec = GenomicFeatures(pharmacogenes=["CYP2C19"],
                           variants=["rs4244285", "chr10:100:A:T", "chr12:500"])
    subjects = [14, 19, 11, 12, 13, 11]  # 19: no sample; 11 twice (two episodes)
    cells = genomic_cells(spec, pl.LazyFrame({"subject_id": subjects}),
                          pl.scan_parquet(tiny.phenotypes), pl.scan_parquet(tiny.variants))
    index = FeatureIndex.of(genomic_keys(spec))
    block = dense_block(index, cells, len(subjects))
    phenotype = {11: "poor", 12: "intermediate", 13: "normal", 14: "indeterminate"}
    sample = {p: s for s, p in LINKAGE.items()}
    for i, subject in enumerate(subjects):
        for j, key in enumerate(index.keys()):
            code, _, aggregation = key.rsplit("|", 2)
            if code.startswith("PGX//CYP2C19//"):
                expected = float(phenotype.get(subject) == code.rsplit("//", 1)[1])
            elif code == "GENOMICS//missing":
                expected = float(subject not in phenotype)
            else:
                assert aggregation == "dosage"
                variant = code.removeprefix("VARIANT//")
                expected = (_direct_dosage(variant, sample[subject]) if subject in phenotype
                            else math.nan)
            assert np.isclose(block[i, j], expected, equal_nan=True), (subject, key)

# ---- the pgx criterion --------------------------------------------------------------------


def test_the_pgx_rule_keeps_the_matching_genotyped_persons_only(tiny: Layout) -> None:
    drug = "DRUG//715939"
    rows = []
    for person in (11, 12, 13, 14, 19, 20):  # 20: neither sample nor linkage row
        rows += [(person, "2000-01-01", events.OBSERVATION_START),
                 (person, "2030-01-01", events.OBSERVATION_END), (person, "2015-01-01", drug)]
    ev = pl.LazyFrame({"subject_id": [r[0] for r in rows],
                       "time": [date.fromisoformat(r[1]) for r in rows],
                       "code": [r[2] for r in rows]},
                      schema_overrides={"time": pl.Datetime("us")}).with_columns(
        numeric_value=pl.lit(None, pl.Float32), unit=pl.lit(None, pl.String))
    cohort = Cohort.model_validate({
        "entry": {"concept_set": "esc"}, "prior_observation_days": 0,
        "inclusion_rules": [{"name": "poor or intermediate", "criteria": [
            {"pgx": {"gene": "CYP2C19", "phenotype": ["poor", "intermediate"]}}]}]})
    codes = pl.DataFrame({"code": [drug], "parent_codes": [[]]})
    plan = cohorts.CohortPlan(cohort, {"esc": ConceptSet(include=[{"concept_id": 715939}],
                                                         domain="DRUG")}, codes,
                              pl.read_parquet(tiny.phenotypes))
    steps_ = cohorts.make_episodes(plan)(ev)
    counts = {name: frame.collect()["subject_id"].to_list() for name, frame in steps_}
    assert sorted(counts[GENOTYPED_STEP]) == [11, 12, 13, 14]
    assert sorted(steps_[-1][1].collect()["subject_id"]) == [11, 12]
    without = cohorts.CohortPlan(cohort, plan.concept_sets, codes)
    with pytest.raises(StudySpecError, match="phenotype table"):
        cohorts.make_episodes(without)(ev)

# ---- end to end ---------------------------------------------------------------------------


E2E_PERSONS = 3000


@pytest.fixture(scope="module")
def pgx_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed study at 3,000 persons in 2 shards, its restricted cohort widened to poor
    and intermediate metabolisers (poor ones are about 2% of persons), logistic only."""
    root = tmp_path_factory.mktemp("pgx")
    raw = _raw()
    raw["source"]["synth"]["persons"] = E2E_PERSONS
    raw["shards"] = 2
    rule = raw["cohorts"]["cyp2c19_poor"]["inclusion_rules"][0]
    rule["criteria"][0]["pgx"]["phenotype"] = ["poor", "intermediate"]
    study = root / "pgx.yaml"
    study.write_text(yaml.safe_dump(raw, sort_keys=False))
    return run_study(study, root / "run", name="pgx")


def _truth(results: Path) -> pl.DataFrame:
    """The generator's CYP2C19 phenotype of each genotyped person (its own record, not the
    caller's), by person."""
    folder = results / "omop" / "genotypes"
    link = pl.read_csv(folder / "linkage.csv", schema_overrides={"person_id": pl.Int64})
    truth = pl.read_csv(folder / "truth.csv").filter(pl.col("gene") == "CYP2C19")
    return truth.join(link, on="sample_id").select(
        "sample_id", subject_id="person_id", phenotype=pl.col("phenotype").map_elements(
            phenotype_slug, return_dtype=pl.String))


@pytest.mark.e2e
def test_the_conversion_runs_as_one_job_per_partition(pgx_run: Path) -> None:
    log = (pgx_run / "logs" / "snakemake.log").read_text()
    for step in ("explode", "encode"):
        planned = json.loads((pgx_run / "genomics" / "steps" / f"{step}_init.json"
                              ).read_text())["partitions"]
        jobs = log.count(f"rule genomics_{step}:")
        assert jobs == planned, step
        assert len(list((pgx_run / "benchmarks" / "genomics" / step).glob("*.tsv"))) == planned
    assert json.loads((pgx_run / "genomics" / "steps" / "explode_init.json").read_text()
                      )["partitions"] > 1
    for kind, rule in (("checkpoint", "genomics_explode_init"),
                       ("checkpoint", "genomics_encode_init"), ("rule", "genomics_store"),
                       ("rule", "genomics_linkage"), ("rule", "genomics_phenotypes"),
                       ("rule", "genomics_variants")):
        assert log.count(f"{kind} {rule}:") == 1, rule


@pytest.mark.e2e
def test_the_phenotype_table_is_the_generators_truth(pgx_run: Path) -> None:
    table = pl.read_parquet(pgx_run / "genomics" / "phenotypes.parquet")
    assert set(table.columns) >= {"subject_id", "gene", "diplotype", "phenotype"}
    called = table.filter(pl.col("gene") == "CYP2C19").select("subject_id", "phenotype")
    truth = _truth(pgx_run).select("subject_id", "phenotype").sort("subject_id")
    assert called.sort("subject_id").equals(truth)
    for path in [pgx_run / "genomics", *(pgx_run / "genomics").rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path  # owner-only, person-level
    shared = [p for p in (pgx_run / "export").rglob("*") if p.is_file()]
    assert shared and not any("phenotype" in p.name for p in shared)


def _entered(results: Path) -> set[int]:
    """Persons whose first escitalopram event lies in an observation period: the entry
    event of both targets (prior observation 0), read straight off the event store."""
    store = results / "events"
    found: set[int] = set()
    for shard in events.list_shards(store):
        ev = events.scan_shard(store, shard).filter(pl.col("code").is_in(
            [events.OBSERVATION_START, events.OBSERVATION_END, "DRUG//715939"])).collect()
        first = (ev.filter(pl.col("code") == "DRUG//715939").group_by("subject_id")
                 .agg(day=pl.col("time").min().dt.date()))
        starts = ev.filter(pl.col("code") == events.OBSERVATION_START).select(
            "subject_id", s=pl.col("time").dt.date())
        ends = ev.filter(pl.col("code") == events.OBSERVATION_END).select(
            "subject_id", e=pl.col("time").dt.date())
        periods = starts.sort("subject_id", "s").with_columns(
            e=ends.sort("subject_id", "e")["e"])
        inside = first.join(periods, on="subject_id").filter(
            (pl.col("day") >= pl.col("s")) & (pl.col("day") <= pl.col("e")))
        found |= set(inside["subject_id"].to_list())
    return found


@pytest.mark.e2e
def test_the_restricted_cohort_is_the_linked_reduced_metabolisers_with_entry(
        pgx_run: Path) -> None:
    entered = _entered(pgx_run)
    truth = _truth(pgx_run)
    reduced = set(truth.filter(pl.col("phenotype").is_in(["poor", "intermediate"]))
                  ["subject_id"].to_list())
    cohort = cohorts.read_cohort(pgx_run / "cohorts" / "cyp2c19_poor", ["0", "1"])
    assert set(cohort["subject_id"].to_list()) == entered & reduced
    starters = cohorts.read_cohort(pgx_run / "cohorts" / "escitalopram_starters", ["0", "1"])
    assert set(starters["subject_id"].to_list()) == entered
    steps_ = json.loads((pgx_run / "cohorts" / "cyp2c19_poor" / "attrition.json").read_text())
    by_name = {s["step"]: s["subjects"] for s in steps_}
    assert by_name[GENOTYPED_STEP] == len(entered & set(truth["subject_id"].to_list()))
    exported = json.loads((pgx_run / "export" / "cyp2c19_poor__adverse_reaction__90d"
                           / "attrition.json").read_text())
    assert GENOTYPED_STEP in [s["step"] for s in exported]


@pytest.mark.e2e
def test_the_genomic_features_equal_a_direct_computation(pgx_run: Path) -> None:
    ds = features.open_features(pgx_run / "features" / "escitalopram_starters"
                                / "features.zarr")
    truth = _truth(pgx_run)
    phenotype = dict(zip(truth["subject_id"].to_list(), truth["phenotype"].to_list(),
                         strict=True))
    sample = dict(zip(truth["subject_id"].to_list(), truth["sample_id"].to_list(),
                      strict=True))
    vcf = cyvcf2.VCF(str(pgx_run / "omop" / "genotypes" / "cohort.vcf.gz"))
    [record] = [r for r in vcf if (r.CHROM, r.POS, r.REF) == ("chr10", 94781859, "G")
                and "A" in r.ALT]
    column = {s: i for i, s in enumerate(vcf.samples)}
    keys = [str(k) for k in ds["feature"].values]
    values = ds["values"].values
    subjects = ds["subject"].values.tolist()
    assert len(subjects) == len(_entered(pgx_run))
    for gene_key in [k for k in keys if k.startswith("PGX//CYP2C19//")]:
        wanted = gene_key.split("|")[0].rsplit("//", 1)[1]
        got = values[:, keys.index(gene_key)]
        assert got.tolist() == [float(phenotype.get(s) == wanted) for s in subjects], gene_key
    missing = values[:, keys.index("GENOMICS//missing|all|present")]
    assert missing.tolist() == [float(s not in phenotype) for s in subjects]
    dosage = values[:, keys.index(f"VARIANT//{STAR2}|all|dosage")]
    alt = 1 + list(record.ALT).index("A")
    for s, got in zip(subjects, dosage.tolist(), strict=True):
        if s not in sample:
            assert math.isnan(got)
            continue
        gt = record.genotypes[column[sample[s]]][:2]
        assert got == float(sum(a == alt for a in gt)), s
    assert 0 < missing.sum() < len(subjects)


@pytest.mark.e2e
def test_the_tensor_is_byte_identical_whatever_the_worker_count(pgx_run: Path,
                                                                tmp_path: Path) -> None:
    study = load_study(pgx_run.parents[2] / "pgx.yaml")
    lay = Layout(pgx_run)
    target = "escitalopram_starters"
    built = lay.tensor(target)
    for workers in (1, 3):
        out = tmp_path / f"w{workers}" / "features.zarr"
        out.parent.mkdir()
        features.build_tensor(study, target, lay.store, lay.cohort(target), out,
                              scratch=out.parent / ".dask", workers=workers,
                              genomics=(lay.phenotypes, lay.variants))
        ours = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        theirs = {p.relative_to(built): p.read_bytes() for p in built.rglob("*")
                  if p.is_file()}
        assert ours == theirs, workers


@pytest.mark.e2e
def test_editing_how_absent_sites_count_reruns_the_phenotypes_not_the_conversion(
        pgx_run: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load((pgx_run.parents[2] / "pgx.yaml").read_text())
    raw["genomics"]["absent"] = "reference"
    study = pgx_run.parents[2] / "edited.yaml"
    study.write_text(yaml.safe_dump(raw, sort_keys=False))
    jobs = _dry_run(study, pgx_run.parents[1])
    rules = _rules(jobs)
    assert {"genomics_phenotypes", "cohort_shard", "features"} <= rules
    assert not rules & {"synth", "ingest", "genomics_explode", "genomics_encode",
                        "genomics_store", "genomics_linkage", "genomics_variants"}
    assert {w for r, w in jobs if r == "cohort_shard"} == {
        "cohort=cyp2c19_poor, shard=0", "cohort=cyp2c19_poor, shard=1"}


@pytest.mark.e2e
def test_a_given_store_skips_the_conversion(pgx_run: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load((pgx_run.parents[2] / "pgx.yaml").read_text())
    raw["genomics"] = {"zarr": str(pgx_run / "genomics" / "genotypes.vcz"),
                       "linkage": str(pgx_run / "omop" / "genotypes" / "linkage.csv")}
    study = tmp_path / "zarr.yaml"
    study.write_text(yaml.safe_dump(raw, sort_keys=False))
    rules = _rules(_dry_run(study, tmp_path))
    assert {"genomics_store", "genomics_linkage", "genomics_phenotypes"} <= rules
    assert not rules & {"genomics_explode_init", "genomics_explode", "genomics_encode_init",
                        "genomics_encode"}


# ---- the declared reference, through the workflow -----------------------------------------

UNPLACED = "chrUn_KI270302v1"  # a GRCh38 analysis-set contig, not of the primary assembly


def _reference_study(root: Path, extra_record: bool) -> Path:
    """The pgx seed study on the hand-built VCF (plus a record on an unplaced contig,
    declared in the header, when ``extra_record``), its reference declared GRCh38."""
    text = _vcf_text()
    if extra_record:
        text = text.replace("##FORMAT", f"##contig=<ID={UNPLACED},length=2274>\n##FORMAT")
        text += "\t".join([UNPLACED, "10", ".", "A", "G", ".", "PASS", ".", "GT",
                           "0/1", "0/0", "0/0", "1/1"]) + "\n"
    vcf = root / "tiny.vcf.gz"
    root.mkdir(parents=True, exist_ok=True)
    with vcf.open("wb") as raw, io.BufferedWriter(Bgzf(raw)) as f:
        f.write(text.encode())
    (root / "link.csv").write_text("sample_id,person_id\n" + "".join(
        f"{s},{p}\n" for s, p in LINKAGE.items()))
    study = root / "pgx.yaml"
    study.write_text(yaml.safe_dump(_raw(genomics={
        "vcf": ["tiny.vcf.gz"], "linkage": "link.csv", "partitions": 2,
        "reference": "GRCh38"}), sort_keys=False))
    return study


def test_the_declared_reference_is_in_the_section_and_the_conversion_key(
        tmp_path: Path) -> None:
    study = load_study(_reference_study(tmp_path, extra_record=False))
    assert study.genomics is not None
    contigs = study.genomics.reference_contigs()
    assert contigs is not None and contigs[:2] == ("chr1", "chr2") and len(contigs) == 25
    assert study.genomics.model_dump()["reference"] == "GRCh38"
    raw = yaml.safe_load((tmp_path / "pgx.yaml").read_text())
    raw["genomics"].pop("reference")
    unset = parse_study(raw, origin="pgx.yaml")
    assert unset.genomics is not None and "reference" not in unset.genomics.model_dump()
    unset._folder = study._folder
    assert unset.genomics_digest() != study.genomics_digest()
    # the key without a reference is the one studies written before it had
    assert unset.genomics_digest() == content_digest(
        {"partitions": 2, "files": [file_digest(f) for f in unset.genotype_files()]})


@pytest.mark.parametrize(("reference", "message"), [
    ("hg19", r"genomics\.reference.*unknown reference 'hg19'; fix: reference: GRCh38"),
    ([], r"genomics\.reference.*no contig listed"),
    (["chr1", "chr1"], r"genomics\.reference.*contigs repeat"),
    (["chr 1"], r"genomics\.reference.*'chr 1' is not a contig name"),
])
def test_a_bad_reference_is_refused_at_its_place(reference: Any, message: str) -> None:
    raw = _raw(genomics={"vcf": ["a.vcf.gz"], "linkage": "l.csv", "reference": reference})
    with pytest.raises(StudySpecError, match=message):
        parse_study(raw, origin="pgx.yaml")


@pytest.mark.e2e
def test_a_vcf_off_the_declared_reference_fails_its_conversion(tmp_path: Path) -> None:
    """Through the workflow: the study's reference reaches the conversion, which refuses
    the record on an unplaced contig with one message, leaving no store, no staging folder
    and no step record; the same study without that record converts."""
    study = _reference_study(tmp_path / "bad", extra_record=True)
    target = "results/pgx/genomics/genotypes.json"
    done = cohortflow("run", str(study), "--results", "results", "--", target,
                      cwd=tmp_path / "bad")
    console = done.stdout + done.stderr
    assert done.returncode == 2, console[-3000:]  # refused input
    errors = [line for line in console.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: step genomics_explode_init failed: {tmp_path / 'bad' / 'tiny.vcf.gz'}: "
        f"CHROM: records on contig(s) {UNPLACED}, not a contig of the reference (chr1, "
        "chr2, chr3, chr4, … 25 in all); fix: rename the contigs to the reference's names "
        "(`bcftools annotate --rename-chrs`), drop those records (`bcftools view -t "
        "^CONTIG`), or list the reference's contigs as genomics.reference"], console[-3000:]
    assert "Traceback" not in console
    genomics_dir = tmp_path / "bad" / "results" / "pgx" / "genomics"
    left = sorted(p.relative_to(genomics_dir).as_posix() for p in genomics_dir.rglob("*")
                  ) if genomics_dir.exists() else []
    assert left in ([], ["steps"]), left
    ok = _reference_study(tmp_path / "good", extra_record=False)
    results = run_study(ok, tmp_path / "good", "--", target, name="pgx")
    record = json.loads((results / "genomics" / "genotypes.json").read_text())
    assert (record["samples"], record["variants"]) == (4, 3)
