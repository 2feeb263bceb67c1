"""Pharmacogene calls on hand-built VCF Zarr datasets: every gene, every phenotype class and
each way a call becomes Indeterminate (missing, unphased-ambiguous, unknown haplotype)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from cohortflow import pgx
from cohortflow.errors import CohortflowError

DEFS = pgx.load_definitions()


def genotypes(calls: dict[str, dict[str, str]], genes: list[str] | None = None,
              contig_prefix: str = "chr") -> xr.Dataset:
    """A VCF Zarr-shaped dataset holding one biallelic record per defining variant of
    ``genes`` (default: every seeded gene); ``calls`` maps sample → {rsID: "0|1", "1/1",
    "./.", ...}, every site not named is "0/0"."""
    variants = [v for g in genes or list(DEFS) for v in DEFS[g].variants]
    contigs = sorted({v.chromosome for v in variants})
    gt = np.zeros((len(variants), len(calls), 2), dtype=np.int8)
    phased = np.zeros((len(variants), len(calls)), dtype=bool)
    for s, sample in enumerate(calls.values()):
        for i, variant in enumerate(variants):
            text = sample.get(variant.id, "0/0")
            gt[i, s] = [-1 if a == "." else int(a) for a in text.replace("|", "/").split("/")]
            phased[i, s] = "|" in text
    return xr.Dataset({
        "contig_id": ("contigs", [contig_prefix + c.removeprefix("chr") for c in contigs]),
        "variant_contig": ("variants", [contigs.index(v.chromosome) for v in variants]),
        "variant_position": ("variants", np.array([v.position for v in variants], np.int32)),
        "variant_allele": (("variants", "alleles"), [[v.ref, v.alt] for v in variants]),
        "call_genotype": (("variants", "samples", "ploidy"), gt),
        "call_genotype_phased": (("variants", "samples"), phased),
        "sample_id": ("samples", list(calls)),
    })


def called(gene: str, calls: dict[str, dict[str, str]]) -> dict[str, tuple[object, ...]]:
    """sample → (diplotype, activity_score, phenotype, reason) for one gene."""
    frame = pgx.call_phenotypes(genotypes(calls, [gene]), genes=[gene])
    return {r["sample_id"]: (r["diplotype"], r["activity_score"], r["phenotype"], r["reason"])
            for r in frame.iter_rows(named=True)}


def test_cyp2c19_cpic_examples() -> None:
    got = called("CYP2C19", {
        "ref": {},
        "s2_2": {"rs4244285": "1/1"},
        "s1_17": {"rs12248560": "0/1"},
        "s17_17": {"rs12248560": "1/1"},
        "s2_17": {"rs4244285": "0/1", "rs12248560": "0/1"},  # one phasing only is defined
        "s1_9": {"rs17884712": "0/1"},
        "s2_9": {"rs4244285": "1|0", "rs17884712": "0|1"},
    })
    assert got == {
        "ref": ("*1/*1", None, "Normal Metabolizer", None),
        "s2_2": ("*2/*2", None, "Poor Metabolizer", None),
        "s1_17": ("*1/*17", None, "Rapid Metabolizer", None),
        "s17_17": ("*17/*17", None, "Ultrarapid Metabolizer", None),
        "s2_17": ("*2/*17", None, "Intermediate Metabolizer", None),
        "s1_9": ("*1/*9", None, "Likely Intermediate Metabolizer", None),
        "s2_9": ("*2/*9", None, "Likely Poor Metabolizer", None),
    }


def test_cyp2c19_star4_with_and_without_the_promoter_variant() -> None:
    got = called("CYP2C19", {
        "4B_cis": {"rs28399504": "0|1", "rs12248560": "0|1"},
        "4A_17_trans": {"rs28399504": "0|1", "rs12248560": "1|0"},
        "unphased": {"rs28399504": "0/1", "rs12248560": "0/1"},
    })
    assert got["4B_cis"] == ("*1/*4", None, "Intermediate Metabolizer", None)
    assert got["4A_17_trans"] == ("*4/*17", None, "Intermediate Metabolizer", None)
    diplotype, _, phenotype, reason = got["unphased"]
    assert (diplotype, phenotype) == (None, "Indeterminate")
    assert "possible diplotypes *1/*4 or *4/*17" in str(reason)


def test_cyp2c9_activity_scores() -> None:
    got = called("CYP2C9", {
        "1_1": {}, "1_2": {"rs1799853": "0/1"}, "1_3": {"rs1057910": "0/1"},
        "2_3": {"rs1799853": "0/1", "rs1057910": "0/1"}, "3_3": {"rs1057910": "1/1"},
        "1_6": {"rs9332131": "1/0"},
        "1_8": {"rs7900194": "0/1"},
    })
    assert got == {
        "1_1": ("*1/*1", 2.0, "Normal Metabolizer", None),
        "1_2": ("*1/*2", 1.5, "Intermediate Metabolizer", None),
        "1_3": ("*1/*3", 1.0, "Intermediate Metabolizer", None),
        "2_3": ("*2/*3", 0.5, "Poor Metabolizer", None),
        "3_3": ("*3/*3", 0.0, "Poor Metabolizer", None),
        "1_6": ("*1/*6", 1.0, "Intermediate Metabolizer", None),
        "1_8": ("*1/*8", 1.5, "Intermediate Metabolizer", None),
    }


def test_tpmt_star3a_is_3b_and_3c_on_one_haplotype() -> None:
    got = called("TPMT", {
        "cis": {"rs1800460": "0|1", "rs1142345": "0|1"},
        "trans": {"rs1800460": "1|0", "rs1142345": "0|1"},
        "hom": {"rs1800460": "1/1", "rs1142345": "1/1"},
        "unphased": {"rs1800460": "0/1", "rs1142345": "0/1"},
        "het2": {"rs1800462": "0/1"},
        "missing": {"rs1800460": "./.", "rs1142345": "0/1"},
    })
    assert got["cis"] == ("*1/*3A", None, "Intermediate Metabolizer", None)
    assert got["trans"] == ("*3B/*3C", None, "Poor Metabolizer", None)
    assert got["hom"] == ("*3A/*3A", None, "Poor Metabolizer", None)
    assert got["het2"] == ("*1/*2", None, "Intermediate Metabolizer", None)
    assert got["unphased"][:3] == (None, None, "Indeterminate")
    assert "possible diplotypes *1/*3A or *3B/*3C" in str(got["unphased"][3])
    assert got["missing"] == (None, None, "Indeterminate", "missing call at rs1800460 "
                              "(chr6:18138997 C>T)")


def test_nudt15_multi_variant_star2_and_uncertain_function() -> None:
    got = called("NUDT15", {
        "1_1": {}, "1_3": {"rs116855232": "0/1"}, "3_3": {"rs116855232": "1/1"},
        "1_2": {"rs746071566": "1|0", "rs116855232": "1|0"},
        "3_6": {"rs746071566": "1|0", "rs116855232": "0|1"},
        "1_6": {"rs746071566": "0/1"},
        "unphased": {"rs746071566": "0/1", "rs116855232": "0/1"},
    })
    assert got["1_1"] == ("*1/*1", None, "Normal Metabolizer", None)
    assert got["1_3"] == ("*1/*3", None, "Intermediate Metabolizer", None)
    assert got["3_3"] == ("*3/*3", None, "Poor Metabolizer", None)
    assert got["1_2"] == ("*1/*2", None, "Intermediate Metabolizer", None)
    assert got["3_6"] == ("*3/*6", None, "Possible Intermediate Metabolizer", None)
    assert got["1_6"][:3] == ("*1/*6", None, "Indeterminate")
    assert "Normal function + Uncertain function" in str(got["1_6"][3])
    assert got["unphased"][:3] == (None, None, "Indeterminate")


def test_slco1b1_function_phenotypes() -> None:
    got = called("SLCO1B1", {
        "1_1": {}, "37_37": {"rs2306283": "1/1"},
        "1_5": {"rs4149056": "0/1"},
        "15_15": {"rs2306283": "1/1", "rs4149056": "1/1"},
        "15_37": {"rs2306283": "1/1", "rs4149056": "0/1"},  # homozygous + heterozygous
        "14_14": {"rs2306283": "1/1", "rs11045819": "1/1"},
        "4_5": {"rs11045819": "1/0", "rs4149056": "0/1"},
        "1_15_or_5_37": {"rs2306283": "0/1", "rs4149056": "0/1"},
    })
    assert got["1_1"] == ("*1/*1", None, "Normal Function", None)
    assert got["37_37"] == ("*37/*37", None, "Normal Function", None)
    assert got["1_5"] == ("*1/*5", None, "Decreased Function", None)
    assert got["15_15"] == ("*15/*15", None, "Poor Function", None)
    assert got["15_37"] == ("*15/*37", None, "Decreased Function", None)
    assert got["14_14"] == ("*14/*14", None, "Increased Function", None)
    assert got["4_5"] == ("*4/*5", None, "Possible Decreased Function", None)
    assert got["1_15_or_5_37"][2] == "Indeterminate"
    assert "*1/*15 or *5/*37" in str(got["1_15_or_5_37"][3])


def test_dpyd_activity_scores_and_lowest_values() -> None:
    a2, t2846 = "c.1905+1G>A (*2A)", "c.2846A>T"
    got = called("DPYD", {
        "ref": {}, "2A": {"rs3918290": "0/1"}, "2A_2A": {"rs3918290": "1/1"},
        "2846": {"rs67376798": "0/1"},
        "hapb3": {"rs75017182": "0/1", "rs56038477": "0/1"},
        "9A_2846": {"rs1801265": "0/1", "rs67376798": "0/1"},
        "2A_2846": {"rs3918290": "0/1", "rs67376798": "0/1"},
        "2A_2846_cis": {"rs3918290": "0|1", "rs67376798": "0|1"},
        "1236_alone": {"rs56038477": "0/1"},
    })
    assert got["ref"] == ("Reference/Reference", 2.0, "Normal Metabolizer", None)
    assert got["2A"] == (f"Reference/{a2}", 1.0, "Intermediate Metabolizer", None)
    assert got["2A_2A"] == (f"{a2}/{a2}", 0.0, "Poor Metabolizer", None)
    assert got["2846"] == (f"Reference/{t2846}", 1.5, "Intermediate Metabolizer", None)
    assert got["hapb3"] == ("Reference/c.1129-5923C>G, c.1236G>A (HapB3)", 1.5,
                            "Intermediate Metabolizer", None)
    assert got["9A_2846"] == (f"{t2846}/c.85T>C (*9A)", 1.5, "Intermediate Metabolizer", None)
    # unphased: the two lowest values (CPIC); phased in cis: the lowest on that haplotype
    assert got["2A_2846"] == (f"{t2846}/{a2}", 0.5, "Poor Metabolizer", None)
    assert got["2A_2846_cis"] == (f"Reference/{a2}", 1.0, "Intermediate Metabolizer", None)
    assert got["1236_alone"][2] == "Indeterminate"
    assert "rs56038477" in str(got["1236_alone"][3])


def test_every_phenotype_class_is_reached() -> None:
    """The hand-made table above covers each CPIC class the seeds can give."""
    reached = {"Normal Metabolizer", "Rapid Metabolizer", "Ultrarapid Metabolizer",
               "Intermediate Metabolizer", "Likely Intermediate Metabolizer",
               "Likely Poor Metabolizer", "Poor Metabolizer",
               "Possible Intermediate Metabolizer", "Normal Function", "Increased Function",
               "Decreased Function", "Possible Decreased Function", "Poor Function",
               "Indeterminate"}
    seeded = {p for g in DEFS.values()
              for p in (*g.function_pairs.values(), *g.activity_scores.values())}
    assert seeded | {"Indeterminate"} == reached


def test_absent_site_is_indeterminate_unless_declared_reference() -> None:
    ds = genotypes({"a": {"rs4244285": "0/1"}}, ["CYP2C19"]).isel(variants=slice(0, 8))
    row = pgx.call_phenotypes(ds, genes=["CYP2C19"]).row(0, named=True)
    assert row["phenotype"] == "Indeterminate"
    assert "not in the genotypes: rs72558186" in row["reason"]
    row = pgx.call_phenotypes(ds, genes=["CYP2C19"], absent="reference").row(0, named=True)
    assert (row["diplotype"], row["reason"]) == ("*1/*2", None)


def test_contig_names_multiallelic_records_and_output_schema() -> None:
    ds = genotypes({"a": {}, "b": {}}, ["CYP2C9"], contig_prefix="")
    i = [v.id for v in DEFS["CYP2C9"].variants].index("rs7900194")  # G>A is *8, G>T is *27
    alleles = [[*pair, ""] for pair in ds["variant_allele"].values.tolist()]
    alleles[i] = ["G", "T", "A"]
    ds["variant_allele"] = (("variants", "alleles"), np.array(alleles))
    ds["call_genotype"][i, 0] = [0, 2]
    ds["call_genotype"][i, 1] = [0, 1]
    frame = pgx.call_phenotypes(ds, genes=["CYP2C9"])
    assert frame.schema == pgx.SCHEMA
    assert frame["diplotype"].to_list() == ["*1/*8", "*1/*1"]
    assert frame["sample_id"].to_list() == ["a", "b"]


def test_zarr_store_roundtrip_and_vectorised_calls_match_one_by_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    variants = [v.id for g in DEFS.values() for v in g.variants]
    choices = ["0/0"] * 12 + ["0/1", "1/1", "0|1", "1|0", "./."]
    samples = {f"s{i}": {v: str(rng.choice(choices)) for v in variants} for i in range(60)}
    ds = genotypes(samples)
    stored = ds.assign({name: ds[name].astype(object)  # variable-length strings, as bio2zarr
                        for name in ("contig_id", "variant_allele", "sample_id")})
    stored.to_zarr(tmp_path / "g.vcz", mode="w", consolidated=False)
    whole = pgx.call_phenotypes(xr.open_zarr(tmp_path / "g.vcz", consolidated=False))
    assert whole.height == 60 * len(DEFS)
    assert whole.equals(pgx.call_phenotypes(ds))
    for name in ("s0", "s31", "s59"):
        one = pgx.call_phenotypes(genotypes({name: samples[name]}))
        assert one.equals(whole.filter(whole["sample_id"] == name))
    unexplained = whole["reason"].is_null() != (whole["phenotype"] == "Indeterminate")
    assert unexplained.all()
    assert whole["phenotype"].value_counts().height > 5


def test_bad_genotypes_and_unknown_genes_say_what_is_expected() -> None:
    ds = genotypes({"a": {}}, ["TPMT"])
    with pytest.raises(pgx.PgxGenotypeError, match=r"lack the VCF Zarr variable.*sample_id"):
        pgx.call_phenotypes(ds.drop_vars("sample_id"))
    with pytest.raises(pgx.PgxGenotypeError, match="ploidy 2"):
        pgx.call_phenotypes(ds.isel(ploidy=[0]))
    with pytest.raises(CohortflowError, match=r"\['CYP2D6'\] have no allele definitions"):
        pgx.call_phenotypes(ds, genes=["CYP2D6"])
