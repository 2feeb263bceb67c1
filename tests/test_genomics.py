"""cohortflow.genomics: synth's VCF converted with bio2zarr (in partitions, chunked
variants × samples) into a VCF Zarr store that opens with zarr/xarray and holds exactly the
VCF's samples, sites and genotypes, so cohortflow.pgx calls the phenotypes synth assigned;
bad VCFs, foreign or corrupt stores and bad linkage tables each fail with one clear message
(file, field, fix) and leave no output."""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zarr

from cohortflow import genomics, pgx, synth
from cohortflow.genomics import GenomicsError
from cohortflow.synth._genotypes import Bgzf
from tests.test_pgx_vcf import read_vcf

PARTITIONS = 3


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(synth's genotypes folder, its VCF converted into a store of 100 × 400 chunks)."""
    root = tmp_path_factory.mktemp("genomics")
    synth.generate(2000, 4, root / "synth", progress=False,
                   genotypes={"share": 0.5, "background_variants": 300})
    folder = root / "synth" / "genotypes"
    store = genomics.convert_vcf([folder / "cohort.vcf.gz"], root / "out" / "cohort.vcz",
                                 partitions=PARTITIONS, variants_chunk_size=100,
                                 samples_chunk_size=400)
    return folder, store


def _plain(vcf: Path, into: Path) -> Path:
    into.write_bytes(gzip.decompress(vcf.read_bytes()))
    return into


def _bgzf(text: str, path: Path) -> Path:
    with path.open("wb") as raw, io.BufferedWriter(Bgzf(raw)) as f:
        f.write(text.encode())
    return path


def test_the_store_holds_the_vcfs_samples_sites_and_genotypes(converted, tmp_path):
    folder, store = converted
    ds = genomics.open_genotypes(store)
    expected = read_vcf(_plain(folder / "cohort.vcf.gz", tmp_path / "cohort.vcf"))
    assert ds["sample_id"].values.tolist() == expected["sample_id"].values.tolist()
    assert ds["contig_id"].values.tolist() == expected["contig_id"].values.tolist()
    np.testing.assert_array_equal(ds["variant_position"].values,
                                  expected["variant_position"].values)
    np.testing.assert_array_equal(ds["variant_contig"].values, expected["variant_contig"].values)
    np.testing.assert_array_equal(ds["call_genotype"].values, expected["call_genotype"].values)
    np.testing.assert_array_equal(ds["call_genotype_phased"].values,
                                  expected["call_genotype_phased"].values)
    # chunked variants × samples as asked, so a job reads a block, not the whole matrix
    assert zarr.open_array(store / "call_genotype", mode="r").chunks[:2] == (100, 400)
    assert ds.sizes["variants"] > 300 and ds.sizes["samples"] > 900


def test_pgx_calls_the_assigned_phenotypes_from_the_store(converted):
    folder, store = converted
    called = pgx.call_phenotypes(genomics.open_genotypes(store))
    truth = pl.read_csv(folder / "truth.csv")
    assert called.select(truth.columns).sort("gene", "sample_id").equals(
        truth.sort("gene", "sample_id"))


def test_only_the_finished_store_is_left_owner_only_and_not_converted_twice(converted):
    folder, store = converted
    assert [p.name for p in store.parent.iterdir()] == [store.name]
    assert store.stat().st_mode & 0o777 == 0o700
    assert not (folder / "cohort.vcf.gz.csi").exists()  # the index stayed in the staging
    with pytest.raises(GenomicsError, match="already exists; fix: remove it"):
        genomics.convert_vcf([folder / "cohort.vcf.gz"], store)


def test_a_stale_staging_folder_is_cleared_only_if_a_conversion_left_it(converted, tmp_path):
    folder, _ = converted
    vcf = folder / "cohort.vcf.gz"
    foreign = genomics.staging_path(tmp_path / "a.vcz")
    foreign.mkdir()
    (foreign / "notes.txt").write_text("the user's")
    with pytest.raises(GenomicsError, match="is not a staging folder a conversion left"):
        genomics.stage([vcf], tmp_path / "a.vcz")
    assert (foreign / "notes.txt").read_text() == "the user's"  # left untouched

    work = genomics.stage([vcf], tmp_path / "b.vcz")  # as an interrupted conversion leaves
    (work / "half-written").write_text("x")
    again = genomics.stage([vcf], tmp_path / "b.vcz")
    assert again == work and not (work / "half-written").exists()


def test_every_sample_links_to_its_person(converted):
    folder, store = converted
    linkage = genomics.read_linkage(folder / "linkage.csv")
    ds = genomics.open_genotypes(store)
    linked = genomics.link_samples(linkage, ds["sample_id"].values.tolist(),
                                   folder / "linkage.csv")
    assert linked["sample_id"].to_list() == ds["sample_id"].values.tolist()
    assert linked["person_id"].null_count() == 0 and linked["person_id"].is_unique().all()
    parquet = folder.parent / "linkage.parquet"
    linkage.write_parquet(parquet)
    assert genomics.read_linkage(parquet).equals(linkage)


VCF = """\
##fileformat=VCFv4.3
##contig=<ID=chr1,length=1000>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2
chr1\t10\t.\tA\tG\t.\tPASS\t.\tGT\t0|1\t0|0
chr2\t20\t.\tC\tT\t.\tPASS\t.\tGT\t1|1\t0|1
"""


def test_a_vcf_with_an_undeclared_contig_is_refused_and_leaves_nothing(tmp_path):
    (tmp_path / "in").mkdir()
    vcf = _bgzf(VCF, tmp_path / "in" / "bad.vcf.gz")
    out = tmp_path / "out" / "bad.vcz"
    with pytest.raises(GenomicsError, match=r"bad\.vcf\.gz: CHROM: records on contig\(s\) "
                                            r"chr2 .*fix: add ##contig=<ID=chr2"):
        genomics.convert_vcf([vcf], out)
    assert not out.exists() and list(out.parent.iterdir()) == []
    assert sorted(p.name for p in vcf.parent.iterdir()) == ["bad.vcf.gz"]


def test_a_plain_gzip_vcf_and_a_missing_file_are_refused(tmp_path):
    text = VCF.replace("##contig=<ID=chr1,length=1000>\n",
                       "##contig=<ID=chr1,length=1000>\n##contig=<ID=chr2,length=1000>\n")
    gz = tmp_path / "plain.vcf.gz"
    gz.write_bytes(gzip.compress(text.encode()))  # gzip, not BGZF: cannot be indexed
    with pytest.raises(GenomicsError,
                       match=r"plain\.vcf\.gz: is not BGZF-compressed .*; fix: compress it"):
        genomics.convert_vcf([gz], tmp_path / "a.vcz")
    with pytest.raises(GenomicsError, match="no such file; fix: correct the path"):
        genomics.convert_vcf([tmp_path / "none.vcf.gz"], tmp_path / "b.vcz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.vcf.gz"]


def test_a_foreign_or_corrupt_store_gets_one_clear_message(converted, tmp_path):
    _, store = converted
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(foreign, mode="w").create_array("x", shape=(3,), dtype="i4")
    with pytest.raises(GenomicsError, match=r"not a VCF Zarr store: no contig_id, "
                                            r"variant_contig.*; fix: convert the VCF again"):
        genomics.open_genotypes(foreign)
    broken = tmp_path / "broken.vcz"
    shutil.copytree(store, broken)
    (broken / ".zgroup").write_text("{not json")  # bio2zarr writes Zarr format 2
    with pytest.raises(GenomicsError, match=r"broken\.vcz: unreadable VCF Zarr store .*fix:"):
        genomics.open_genotypes(broken)
    damaged = tmp_path / "damaged.vcz"
    shutil.copytree(store, damaged)
    chunks = [p for p in (damaged / "variant_position").iterdir() if not p.name.startswith(".")]
    assert chunks
    for chunk in chunks:
        chunk.write_bytes(b"garbage")
    with pytest.raises(GenomicsError, match=r"damaged\.vcz: unreadable VCF Zarr store"):
        genomics.open_genotypes(damaged)
    with pytest.raises(GenomicsError, match="no VCF Zarr store here"):
        genomics.open_genotypes(tmp_path / "nowhere.vcz")


@pytest.mark.parametrize(("rows", "message"), [
    ("sample_id,person_id\nS1,1\nS2,2\nS1,3\n",
     r"sample_id: listed more than once: S1; fix: keep one row per sample"),
    ("sample_id,person_id\nS1,1\nS2,1\nS3,2\n",
     r"person_id: 1 person\(s\) linked to more than one sample \(person 1: S1, S2\); "
     r"fix: keep one sample per person"),
    ("sample_id,person_id\nS1,1\nS2,x\n",
     r"person_id: 1 row\(s\) empty or not an integer \(e\.g\. 'x' for sample 'S2'\)"),
    ("sample,person_id\nS1,1\n", r"no sample_id column; it has sample, person_id; fix: name"),
])
def test_a_bad_linkage_table_names_the_file_field_and_fix(tmp_path, rows, message):
    path = tmp_path / "linkage.csv"
    path.write_text(rows)
    with pytest.raises(GenomicsError, match=r"linkage\.csv: " + message):
        genomics.read_linkage(path)


def test_a_genotyped_sample_missing_from_the_linkage_is_named(tmp_path):
    path = tmp_path / "linkage.csv"
    path.write_text("sample_id,person_id\nS1,1\nS2,2\n")
    linkage = genomics.read_linkage(path)
    with pytest.raises(GenomicsError, match=r"linkage\.csv: sample_id: 2 genotyped sample\(s\) "
                                            r"not in the linkage table: S0, S9; fix: add"):
        genomics.link_samples(linkage, ["S0", "S1", "S9"], path)


def _split_by_contig(vcf: Path, into: Path) -> list[Path]:
    """``vcf`` as two BGZF files: the records of its first contig with records, and the
    rest (one header each), as a cohort split per chromosome is delivered."""
    header, records = [], []
    for line in gzip.decompress(vcf.read_bytes()).decode().splitlines(keepends=True):
        (header if line.startswith("#") else records).append(line)
    first = records[0].split("\t")[0]
    parts = [[r for r in records if r.split("\t")[0] == first],
             [r for r in records if r.split("\t")[0] != first]]
    into.mkdir()
    return [_bgzf("".join(header + part), into / f"part{i}.vcf.gz")
            for i, part in enumerate(parts)]


def test_a_vcf_split_in_files_converts_to_the_same_store(converted, tmp_path):
    folder, store = converted
    parts = _split_by_contig(folder / "cohort.vcf.gz", tmp_path / "parts")
    genomics.build_index(parts[1], parts[1].with_name(parts[1].name + ".csi"))  # one indexed
    split = genomics.convert_vcf(parts, tmp_path / "split.vcz", partitions=PARTITIONS)
    whole, halves = genomics.open_genotypes(store), genomics.open_genotypes(split)
    for name in ("sample_id", "contig_id", "variant_position", "variant_contig",
                 "variant_allele", "call_genotype", "call_genotype_phased"):
        np.testing.assert_array_equal(halves[name].values, whole[name].values, err_msg=name)
    assert sorted(p.name for p in parts[0].parent.iterdir()) == [
        "part0.vcf.gz", "part1.vcf.gz", "part1.vcf.gz.csi"]


def test_vcfs_of_different_samples_are_refused_and_leave_nothing(tmp_path):
    one = _bgzf(VCF.replace("chr2\t20", "chr1\t20"), tmp_path / "one.vcf.gz")
    other = _bgzf(VCF.replace("chr2\t20", "chr1\t30").replace("\tS2\n", "\tS3\n"),
                  tmp_path / "other.vcf.gz")
    out = tmp_path / "out" / "both.vcz"
    with pytest.raises(GenomicsError, match=r"genomics\.vcf: the VCFs cannot be combined .*"
                                            r"fix: give files with the same samples"):
        genomics.convert_vcf([one, other], out)
    assert list(out.parent.iterdir()) == []
