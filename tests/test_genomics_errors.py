"""Bad genotype input, one case each, on tiny VCFs written by hand (VCF 4.3, BGZF through
synth's writer): a contig the header or the reference does not declare, a REF that is not
GRCh38's at a pharmacogene's defining position, a sample missing from the linkage table, a
store with an array missing, a chunk cut short or its dimensions swapped.  Each fails with
one :class:`GenomicsError` naming the file, the field and the fix (status 2 through the
command's error handler), and a failed conversion leaves no output and no staging folder."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
import zarr

from cohortflow import cli, genomics
from cohortflow.errors import CohortflowError
from cohortflow.genomics import GenomicsError
from cohortflow.synth._genotypes import Bgzf

# CYP2C19 rs12248560 (c.-806C>T) is chr10:94761900 C>T in seeds/pgx/variants.csv; CYP2C9
# rs9332131 (c.818delA) is chr10:94949281 GA>G.
HEADER = """\
##fileformat=VCFv4.3
##reference=GRCh38
##contig=<ID=chr10,length=133797422>
##contig=<ID=chr13,length=114364328>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2
"""
GOOD = """\
chr10\t1000\t.\tA\tG\t.\tPASS\t.\tGT\t0|1\t0|0
chr10\t94761900\trs12248560\tC\tT\t.\tPASS\t.\tGT\t0|1\t1|1
chr10\t94949281\t.\tG\tT\t.\tPASS\t.\tGT\t0|0\t0|1
chr13\t500\t.\tT\tC\t.\tPASS\t.\tGT\t1|1\t./.
"""


def bgzf(text: str, path: Path) -> Path:
    """``text`` written BGZF-compressed (as htslib writes it) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, io.BufferedWriter(Bgzf(raw)) as f:
        f.write(text.encode())
    return path


def refused(vcf: Path, out: Path, match: str, **options: object) -> None:
    """Converting ``vcf`` into ``out`` fails with ``match``, leaving the input folder as it
    was and nothing beside ``out`` (no store, no staging folder)."""
    before = sorted(p.name for p in vcf.parent.iterdir())
    with pytest.raises(GenomicsError, match=match):
        genomics.convert_vcf([vcf], out, **options)  # type: ignore[arg-type]
    assert not out.exists() and not genomics.staging_path(out).exists()
    assert list(out.parent.iterdir()) == []
    assert sorted(p.name for p in vcf.parent.iterdir()) == before


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good VCF converted (4 variants × 2 samples, chunks of 2 variants × 1 sample)."""
    root = tmp_path_factory.mktemp("good")
    vcf = bgzf(HEADER + GOOD, root / "in" / "good.vcf.gz")
    return genomics.convert_vcf([vcf], root / "out" / "good.vcz",
                                reference_contigs=genomics.GRCH38_CONTIGS,
                                variants_chunk_size=2, samples_chunk_size=1)


def test_the_good_vcf_converts_against_the_grch38_contigs(store: Path) -> None:
    ds = genomics.open_genotypes(store)
    assert ds["variant_position"].values.tolist() == [1000, 94761900, 94949281, 500]
    assert ds["sample_id"].values.tolist() == ["S1", "S2"]


def test_dosages_are_read_chunk_by_chunk(store: Path, tmp_path: Path) -> None:
    nan = float("nan")
    got = genomics.read_dosages(store, np.array([3, 1, 0]), np.array([1, 0]))
    np.testing.assert_array_equal(got, [[nan, 2, 0], [2, 1, 1]])  # S2 then S1
    damaged = tmp_path / "damaged.vcz"
    shutil.copytree(store, damaged)
    (damaged / "call_genotype" / "1.0.0").write_bytes(b"garbage")  # variants 2-3 of S1
    np.testing.assert_array_equal(genomics.read_dosages(damaged, np.array([0, 3]),
                                                        np.array([1])), [[0, nan]])
    with pytest.raises(GenomicsError, match=r"damaged\.vcz: call_genotype: unreadable chunk"):
        genomics.read_dosages(damaged, np.array([3]), np.array([0]))


def test_a_contig_the_header_does_not_declare(tmp_path: Path) -> None:
    vcf = bgzf(HEADER + GOOD + "chrX\t10\t.\tA\tG\t.\tPASS\t.\tGT\t0|1\t0|0\n",
               tmp_path / "in" / "x.vcf.gz")
    refused(vcf, tmp_path / "out" / "x.vcz",
            r"x\.vcf\.gz: CHROM: records on contig\(s\) chrX that no ##contig header line "
            r"declares; fix: add ##contig=<ID=chrX")


def test_a_contig_not_of_the_declared_reference(tmp_path: Path) -> None:
    text = HEADER.replace("##FORMAT", "##contig=<ID=HLA-A*01:01:01:01,length=3503>\n##FORMAT")
    vcf = bgzf(text + GOOD + "HLA-A*01:01:01:01\t10\t.\tA\tG\t.\tPASS\t.\tGT\t0|1\t0|0\n",
               tmp_path / "in" / "alt.vcf.gz")
    refused(vcf, tmp_path / "out" / "alt.vcz",
            r"alt\.vcf\.gz: CHROM: records on contig\(s\) HLA-A\*01:01:01:01, not a contig of "
            r"the reference \(chr1, chr2, chr3, chr4, … 25 in all\); fix: rename the contigs",
            reference_contigs=genomics.GRCH38_CONTIGS)
    # without a declared reference the same VCF converts; `10` and `chr10` are one contig
    bare = bgzf(HEADER.replace("chr10,", "10,").replace("chr13,", "13,")
                + GOOD.replace("chr1", "1"), tmp_path / "bare" / "bare.vcf.gz")
    out = genomics.convert_vcf([bare], tmp_path / "bare.vcz",
                               reference_contigs=genomics.GRCH38_CONTIGS)
    assert genomics.open_genotypes(out)["contig_id"].values.tolist() == ["10", "13"]


@pytest.mark.parametrize("suffix", [".vcf.gz", ".vcf"])
def test_a_ref_that_is_not_grch38s_at_a_defining_position(tmp_path: Path, suffix: str) -> None:
    text = HEADER + GOOD.replace("94761900\trs12248560\tC\tT", "94761900\trs12248560\tA\tT")
    vcf = tmp_path / "in" / f"b37{suffix}"
    if suffix == ".vcf":  # uncompressed, unindexed: read through
        vcf.parent.mkdir()
        vcf.write_text("".join(line for line in text.splitlines(keepends=True)
                               if not line.startswith("chr13")))
    else:
        bgzf(text, vcf)
    refused(vcf, tmp_path / "out" / "b37.vcz",
            rf"b37{suffix.replace('.', '[.]')}: REF: chr10:94761900 has REF 'A' but the "
            r"CYP2C19 definition of rs12248560 there has 'C' \(seeds/pgx/variants\.csv, "
            r"GRCh38\); the genotypes are not aligned to GRCh38; fix: give a GRCh38 VCF")


def test_a_store_whose_ref_is_not_grch38s_is_refused_when_opened(store: Path,
                                                                 tmp_path: Path) -> None:
    edited = tmp_path / "edited.vcz"
    shutil.copytree(store, edited)
    alleles = zarr.open_array(edited / "variant_allele", mode="r+")
    alleles[1, 0] = "G"
    with pytest.raises(GenomicsError, match=r"edited\.vcz: REF: chr10:94761900 has REF 'G' "
                                            r"but the CYP2C19 definition"):
        genomics.open_genotypes(edited)
    assert genomics.open_genotypes(edited, check_reference=False).sizes["variants"] == 4


def test_a_genotyped_sample_without_a_person(store: Path, tmp_path: Path) -> None:
    linkage = tmp_path / "linkage.csv"
    linkage.write_text("sample_id,person_id\nS1,11\nS9,19\n")
    samples = genomics.open_genotypes(store)["sample_id"].values.tolist()
    with pytest.raises(GenomicsError, match=r"linkage\.csv: sample_id: 1 genotyped sample\(s\) "
                                            r"not in the linkage table: S2; fix: add a row"):
        genomics.link_samples(genomics.read_linkage(linkage), samples, linkage)


@pytest.mark.parametrize(("rows", "message"), [
    ("sample_id,person_id\nS1,11\nS2,11\n",
     r"person_id: 1 person\(s\) linked to more than one sample \(person 11: S1, S2\)"),
    ("sample_id,person_id\nS1,11\nS2,12\nS2,13\n",
     r"sample_id: listed more than once: S2; fix: keep one row per sample"),
])
def test_a_person_or_a_sample_linked_twice_in_parquet(tmp_path: Path, rows: str,
                                                      message: str) -> None:
    import polars as pl

    path = tmp_path / "linkage.parquet"
    pl.read_csv(io.StringIO(rows)).write_parquet(path)
    with pytest.raises(GenomicsError, match=r"linkage\.parquet: " + message):
        genomics.read_linkage(path)


def test_a_store_missing_an_array(store: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.vcz"
    shutil.copytree(store, damaged)
    shutil.rmtree(damaged / "call_genotype")
    with pytest.raises(GenomicsError, match=r"damaged\.vcz: not a VCF Zarr store: no "
                                            r"call_genotype variable\(s\); fix: convert"):
        genomics.open_genotypes(damaged)


def test_a_truncated_genotype_chunk(store: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "cut.vcz"
    shutil.copytree(store, damaged)
    chunk = damaged / "call_genotype" / "0.0.0"
    chunk.write_bytes(chunk.read_bytes()[:-5])
    assert genomics.truncated_chunks(store / "call_genotype") == []
    with pytest.raises(GenomicsError, match=r"cut\.vcz: call_genotype: chunk\(s\) 0\.0\.0 "
                                            r"truncated \(1 in all.*; fix: convert"):
        genomics.open_genotypes(damaged)


def test_swapped_genotype_dimensions(store: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "swapped.vcz"
    shutil.copytree(store, damaged)
    attrs = damaged / "call_genotype" / ".zattrs"
    meta = json.loads(attrs.read_text())
    meta["_ARRAY_DIMENSIONS"] = ["variants", "ploidy", "samples"]
    attrs.write_text(json.dumps(meta))
    with pytest.raises(GenomicsError, match=r"swapped\.vcz: call_genotype has dimensions "
                                            r"\('variants', 'ploidy', 'samples'\); expected "
                                            r"\(variants, samples, ploidy\)"):
        genomics.open_genotypes(damaged)


def test_the_command_prints_a_genomics_error_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vcf = bgzf(HEADER + GOOD.replace("\tC\tT\t", "\tA\tT\t"), tmp_path / "in" / "b37.vcf.gz")

    @cli._friendly
    def convert() -> None:
        genomics.convert_vcf([vcf], tmp_path / "out" / "b37.vcz")

    assert issubclass(GenomicsError, CohortflowError)
    with pytest.raises(typer.Exit) as done:
        convert()
    assert done.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {vcf}: REF: chr10:94761900") and "Traceback" not in err
