"""cohortflow.synth's planted genotypes (``genotypes:``): off by default and then nothing
changes; on, a VCF 4.3 of a share of the persons that cohortflow.pgx calls exactly as the
generator assigned, allele frequencies as drawn, and a CYP2C19 x escitalopram interaction
that shows in the tables as the oracle records it."""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path

import polars as pl
import pytest

from cohortflow import pgx, synth
from cohortflow.errors import CohortflowError
from cohortflow.study import load_study
from cohortflow.synth._genotypes import (
    ADVERSE_REACTION,
    CONTIGS,
    ESCITALOPRAM,
    FREQUENCIES,
    RATES,
    WINDOW_DAYS,
)
from tests.helpers import cohortflow, write_study
from tests.test_pgx_vcf import read_vcf

PERSONS, SEED, CHUNK = 5000, 4, 1500
ON = {"share": 0.5, "background_variants": 300, "exposed_share": 0.6}
_GT = re.compile(r"^[01]\|[01]$")


def _generate(out: Path, chunk: int = CHUNK, **plants: object) -> synth.SynthSummary:
    return synth.generate(PERSONS, SEED, out, progress=False, chunk_persons=chunk,
                          **plants)  # type: ignore[arg-type]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _oracle(out: Path) -> dict[str, object]:
    return json.loads((out / "oracle.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("genotypes")
    _generate(root / "off")
    _generate(root / "on", genotypes=ON)
    return {p.name: p for p in root.iterdir()}


def _plain(out: Path) -> Path:
    """The VCF, decompressed next to it (any gzip reader reads BGZF)."""
    plain = out.parent / f"{out.name}.vcf"
    if not plain.exists():
        plain.write_bytes(gzip.decompress((out / "genotypes" / "cohort.vcf.gz").read_bytes()))
    return plain


def _vcf(out: Path) -> tuple[list[str], list[list[str]]]:
    lines = _plain(out).read_text().splitlines()
    return ([x for x in lines if x.startswith("#")],
            [x.split("\t") for x in lines if not x.startswith("#")])


# ---- off by default ------------------------------------------------------------------------

def test_genotypes_are_off_by_default_and_change_nothing(runs, tmp_path):
    _generate(tmp_path / "explicit", genotypes=None)
    assert _files(tmp_path / "explicit") == _files(runs["off"])
    assert not (runs["off"] / "genotypes").exists()
    assert "genotypes" not in _oracle(runs["off"])
    assert "genotypes" not in json.loads((runs["off"] / "synth.json").read_text())
    concept = pl.read_parquet(runs["off"] / "concept.parquet")
    assert not {ESCITALOPRAM, ADVERSE_REACTION} & set(concept["concept_id"])


def test_on_only_adds_the_planted_rows(runs):
    on, off = _files(runs["on"]), _files(runs["off"])
    changed = {k for k in off if on.get(k) != off[k]}
    assert {k.split("/")[0] for k in changed} == {
        "drug_exposure", "condition_occurrence", "concept.parquet",
        "concept_ancestor.parquet", "oracle.json", "synth.json"}
    for table, concept in (("drug_exposure", ESCITALOPRAM),
                           ("condition_occurrence", ADVERSE_REACTION)):
        column = f"{table.split('_')[0]}_concept_id"
        a = pl.read_parquet(runs["on"] / table / "*.parquet")
        b = pl.read_parquet(runs["off"] / table / "*.parquet")
        assert a.filter(pl.col(column) != concept).equals(b)


def test_study_option_is_left_out_of_dumps_when_off(tmp_path):
    demo = load_study(write_study(tmp_path / "demo.yaml"))
    assert "genotypes" not in demo.source.model_dump(mode="json")["synth"]
    on = load_study(write_study(tmp_path / "g.yaml", source__synth__genotypes={"share": 0.3}))
    assert on.source.model_dump(mode="json")["synth"]["genotypes"] == {
        "share": 0.3, "background_variants": 2000, "exposed_share": 0.3}
    small = load_study(write_study(tmp_path / "s.yaml", source__synth__persons=200,
                                   source__synth__genotypes={"background_variants": 10}))
    synth.synthesize(small, tmp_path / "cdm")  # the workflow's synth step passes it on
    assert _oracle(tmp_path / "cdm")["genotypes"]["background_variants"] == 10  # type: ignore[index]
    assert (tmp_path / "cdm" / "genotypes" / "linkage.csv").is_file()
    with pytest.raises(ValueError, match="demo preset only"):
        load_study(write_study(tmp_path / "w.yaml", source__synth__preset="warehouse",
                               source__synth__genotypes={"share": 0.3}))


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(CohortflowError, match="demo preset only"):
        synth.generate(10, 1, tmp_path / "w", progress=False, preset="warehouse",
                       genotypes={"share": 0.3})
    with pytest.raises(CohortflowError, match=r"genotypes.share must be in \(0, 1\]"):
        synth.generate(10, 1, tmp_path / "s", progress=False, genotypes={"share": 1.5})
    with pytest.raises(CohortflowError, match="unknown field"):
        synth.generate(10, 1, tmp_path / "u", progress=False, genotypes={"shares": 0.3})


# ---- the VCF -------------------------------------------------------------------------------

def test_the_vcf_follows_the_spec(runs):
    data = (runs["on"] / "genotypes" / "cohort.vcf.gz").read_bytes()
    assert data[:4] == bytes.fromhex("1f8b0804") and data[12:14] == b"BC"  # BGZF blocks
    assert data.endswith(bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000"))
    meta, rows = _vcf(runs["on"])
    assert meta[0] == "##fileformat=VCFv4.3"
    contigs = [m for m in meta if m.startswith("##contig=")]
    assert contigs[5] == "##contig=<ID=chr6,length=170805979>" and len(contigs) == 22
    assert any(m.startswith("##INFO=<ID=AF,") for m in meta)
    assert '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">' in meta
    header = meta[-1].split("\t")
    assert header[:9] == ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO",
                          "FORMAT"]
    samples = header[9:]
    assert samples == sorted(samples) and len(set(samples)) == len(samples)
    assert all(re.fullmatch(r"CFS\d{8}", s) for s in samples)  # not person ids
    n = PERSONS * ON["share"]
    assert abs(len(samples) - n) <= 4 * math.sqrt(n * (1 - ON["share"]))
    linkage = pl.read_csv(runs["on"] / "genotypes" / "linkage.csv")
    assert linkage["sample_id"].to_list() == samples
    assert linkage["person_id"].n_unique() == len(samples)
    assert linkage["person_id"].is_between(1, PERSONS).all()
    assert (linkage["person_id"] != linkage["sample_id"].str.slice(3).cast(pl.Int64)).any()
    names = list(CONTIGS)
    key = [(names.index(r[0]), int(r[1])) for r in rows]
    assert key == sorted(key) and len(set(key)) == len(key)  # sorted, one record per site
    assert {r[0] for r in rows if r[2] == "."} > {"chr1", "chr6", "chr10", "chr12", "chr13"}
    assert sum(r[2] == "." for r in rows) == ON["background_variants"]
    seeded = {(v.chromosome, v.position, v.id, v.ref, v.alt)
              for g in pgx.load_definitions().values() for v in g.variants}
    assert {(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows if r[2] != "."} == seeded
    for r in rows:
        assert r[5:9] == [".", "PASS", r[7], "GT"] and r[7].startswith("AF=")
        assert len(r) == 9 + len(samples) and all(_GT.match(g) for g in r[9:])


def test_allele_frequencies_are_within_binomial_bounds(runs):
    _, rows = _vcf(runs["on"])
    worst = 0.0
    for r in rows:
        p, haplotypes = float(r[7].removeprefix("AF=")), 2 * (len(r) - 9)
        alt = sum(g.count("1") for g in r[9:])
        sd = math.sqrt(haplotypes * p * (1 - p))
        worst = max(worst, abs(alt - haplotypes * p) / max(sd, 1.0))
    assert worst < 5.5  # about 330 sites: none beyond 5.5 sd
    truth = pl.read_csv(runs["on"] / "genotypes" / "truth.csv")
    cyp = truth.filter(pl.col("gene") == "CYP2C19")["diplotype"].str.split("/").explode()
    for allele in ("*2", "*17"):
        p, n = FREQUENCIES["CYP2C19"][allele], cyp.len()
        assert abs(int((cyp == allele).sum()) - n * p) < 4 * math.sqrt(n * p * (1 - p))


def test_the_pgx_caller_gives_the_assigned_phenotypes(runs):
    called = pgx.call_phenotypes(read_vcf(_plain(runs["on"])))
    truth = pl.read_csv(runs["on"] / "genotypes" / "truth.csv")
    assert called.select("sample_id", "gene", "diplotype", "phenotype").sort(
        "gene", "sample_id").equals(truth.sort("gene", "sample_id"))
    # Indeterminate only where CPIC has no phenotype for the pair (SLCO1B1 uncertain alleles)
    reasons = called["reason"].drop_nulls()
    assert reasons.str.starts_with("CPIC assigns no phenotype to ").all()
    assert reasons.str.contains("Uncertain function").all()
    assert (truth.filter(pl.col("gene") == "CYP2C19")["phenotype"] == "Poor Metabolizer").sum()


# ---- the interaction -----------------------------------------------------------------------

def test_the_planted_interaction_shows_in_the_tables(runs):
    out = runs["on"]
    drug = pl.read_parquet(out / "drug_exposure" / "*.parquet").filter(
        pl.col("drug_concept_id") == ESCITALOPRAM).select(
        "person_id", day=pl.col("drug_exposure_start_date"))
    event = pl.read_parquet(out / "condition_occurrence" / "*.parquet").filter(
        pl.col("condition_concept_id") == ADVERSE_REACTION).select(
        "person_id", event=pl.col("condition_start_date"))
    assert drug["person_id"].is_unique().all() and event["person_id"].is_unique().all()
    both = drug.join(event, on="person_id", how="left")
    gap = (both["event"] - both["day"]).dt.total_days().drop_nulls()
    assert gap.is_between(1, WINDOW_DAYS).all()
    link = pl.read_csv(out / "genotypes" / "linkage.csv")
    pm = pl.read_csv(out / "genotypes" / "truth.csv").filter(pl.col("gene") == "CYP2C19")
    pm = link.join(pm, on="sample_id").select(
        "person_id", pm=pl.col("phenotype") == "Poor Metabolizer")
    groups = both.join(pm, on="person_id", how="left").select(
        group=pl.when(pl.col("pm")).then(pl.lit("genotyped_poor_metabolizer"))
        .when(pl.col("pm").not_()).then(pl.lit("genotyped_other"))
        .otherwise(pl.lit("not_genotyped")),
        hit=pl.col("event").is_not_null()).group_by("group").agg(
        exposed=pl.len(), events=pl.col("hit").sum())
    seen = {r["group"]: (r["exposed"], r["events"]) for r in groups.iter_rows(named=True)}
    oracle = _oracle(out)["genotypes"]
    assert oracle["drug_concept_id"] == ESCITALOPRAM  # type: ignore[index]
    assert oracle["outcome_concept_id"] == ADVERSE_REACTION  # type: ignore[index]
    recorded = {k: (v["exposed"], v["events"]) for k, v in oracle["exposed"].items()}  # type: ignore[index]
    assert seen == recorded
    (n_pm, k_pm), (n_o, k_o) = seen["genotyped_poor_metabolizer"], seen["genotyped_other"]
    assert n_pm >= 20 and k_pm / n_pm > k_o / n_o
    for (n, k), p in (((n_pm, k_pm), RATES["poor_metabolizer"]), ((n_o, k_o), RATES["other"])):
        assert abs(k - n * p) < 4 * math.sqrt(n * p * (1 - p))
    eligible = oracle["exposed_by_true_phenotype"]  # type: ignore[index]
    assert sum(v["exposed"] for v in eligible.values()) == drug.height


# ---- determinism ---------------------------------------------------------------------------

def test_deterministic_and_genotypes_independent_of_chunk_size(runs, tmp_path):
    _generate(tmp_path / "again", genotypes=ON)
    assert _files(tmp_path / "again") == _files(runs["on"])
    _generate(tmp_path / "chunked", chunk=2000, genotypes=ON)
    for name in ("cohort.vcf.gz", "linkage.csv", "truth.csv"):
        assert ((tmp_path / "chunked" / "genotypes" / name).read_bytes()
                == (runs["on"] / "genotypes" / name).read_bytes())
    _generate(tmp_path / "again", genotypes=None)  # a rerun without them removes the files
    assert not (tmp_path / "again" / "genotypes").exists()


def test_cli_genotypes(tmp_path):
    done = cohortflow("synth", "--persons", "300", "--seed", "2", "--no-progress", "--out", "cdm",
                      "--genotypes", "{share: 0.5, background_variants: 20}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    oracle = _oracle(tmp_path / "cdm")["genotypes"]
    assert oracle["share"] == 0.5 and oracle["background_variants"] == 20  # type: ignore[index]
    assert (tmp_path / "cdm" / "genotypes" / "cohort.vcf.gz").is_file()
    bad = cohortflow("synth", "--out", "x", "--genotypes", "[1]", cwd=tmp_path)
    assert bad.returncode == 2 and "not a mapping" in bad.stderr
