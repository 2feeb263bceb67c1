"""A tiny VCF 4.3 file, read into the VCF Zarr layout by a minimal reader written here (no
new dependency), gives the expected pharmacogene calls: multi-allelic records, ``chr``-less
contigs, phased and unphased genotypes, and a missing call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from cohortflow import pgx

VCF = """\
##fileformat=VCFv4.3
##contig=<ID=6,length=170805979>
##contig=<ID=10,length=133797422>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNA1\tNA2\tNA3\tNA4
6\t18130687\trs1142345\tT\tC\t.\tPASS\t.\tGT\t0|1\t0/1\t0/0\t./.
6\t18130781\trs1800584\tC\tT\t.\tPASS\t.\tGT\t0|0\t0/0\t0/0\t0/0
6\t18138997\trs1800460\tC\tT\t.\tPASS\t.\tGT\t0|1\t0/1\t0/0\t0/0
6\t18143724\trs1800462\tC\tG\t.\tPASS\t.\tGT\t0|0\t0/0\t0/1\t0/0
10\t94942290\trs1799853\tC\tT\t.\tPASS\t.\tGT\t0|0\t0/0\t0/1\t0/0
10\t94942309\trs7900194\tG\tT,A\t.\tPASS\t.\tGT\t0|0\t0/0\t0/0\t2/0
10\t94949281\trs9332131\tGA\tG\t.\tPASS\t.\tGT\t0|0\t0/0\t0/0\t0/0
10\t94981224\trs28371685\tC\tT\t.\tPASS\t.\tGT\t0|0\t0/0\t0/0\t0/0
10\t94981296\trs1057910\tA\tC\t.\tPASS\t.\tGT\t0|0\t0/0\t1/0\t0/0
10\t94981301\trs28371686\tC\tG\t.\tPASS\t.\tGT\t0|0\t0/0\t0/0\t0/0
"""


def read_vcf(path: Path) -> xr.Dataset:
    """The VCF Zarr variables of a diploid, GT-only VCF (VCF 4.3 section 1.6)."""
    contigs: list[str] = []
    rows: list[list[str]] = []
    samples: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("##contig=<ID="):
            contigs.append(line.removeprefix("##contig=<ID=").split(",")[0])
        elif line.startswith("#CHROM"):
            samples = line.split("\t")[9:]
        elif not line.startswith("#"):
            rows.append(line.split("\t"))
    width = 1 + max(len(r[4].split(",")) for r in rows)
    alleles = [[r[3], *r[4].split(",")] + [""] * (width - 1 - len(r[4].split(",")))
               for r in rows]
    gts = [[f.split(":")[0] for f in r[9:]] for r in rows]
    call = [[[-1 if a == "." else int(a) for a in g.replace("|", "/").split("/")] for g in gt]
            for gt in gts]
    return xr.Dataset({
        "contig_id": ("contigs", contigs),
        "variant_contig": ("variants", [contigs.index(r[0]) for r in rows]),
        "variant_position": ("variants", [int(r[1]) for r in rows]),
        "variant_allele": (("variants", "alleles"), np.array(alleles, dtype=object)),
        "call_genotype": (("variants", "samples", "ploidy"), np.array(call, dtype=np.int8)),
        "call_genotype_phased": (("variants", "samples"),
                                 np.array([["|" in g for g in gt] for gt in gts])),
        "sample_id": ("samples", samples),
    })


def test_a_tiny_vcf_gives_the_expected_tpmt_and_cyp2c9_calls(tmp_path: Path) -> None:
    (tmp_path / "tiny.vcf").write_text(VCF)
    frame = pgx.call_phenotypes(read_vcf(tmp_path / "tiny.vcf"), genes=["TPMT", "CYP2C9"])
    got = {(r["gene"], r["sample_id"]): (r["diplotype"], r["activity_score"], r["phenotype"])
           for r in frame.iter_rows(named=True)}
    assert got == {
        ("TPMT", "NA1"): ("*1/*3A", None, "Intermediate Metabolizer"),
        ("TPMT", "NA2"): (None, None, "Indeterminate"),
        ("TPMT", "NA3"): ("*1/*2", None, "Intermediate Metabolizer"),
        ("TPMT", "NA4"): (None, None, "Indeterminate"),
        ("CYP2C9", "NA1"): ("*1/*1", 2.0, "Normal Metabolizer"),
        ("CYP2C9", "NA2"): ("*1/*1", 2.0, "Normal Metabolizer"),
        ("CYP2C9", "NA3"): ("*2/*3", 0.5, "Poor Metabolizer"),
        ("CYP2C9", "NA4"): ("*1/*8", 1.5, "Intermediate Metabolizer"),
    }
    reasons = frame.filter(frame["phenotype"] == "Indeterminate")["reason"].to_list()
    assert "possible diplotypes *1/*3A or *3B/*3C" in reasons[0]
    assert reasons[1].startswith("missing call at rs1142345")
