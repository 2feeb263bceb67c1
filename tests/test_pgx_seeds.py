"""The pharmacogene seeds: every row loads, each gene has its reference allele, and a bad
row is reported with its file, line and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cohortflow import pgx

GENES = ["CYP2C19", "CYP2C9", "SLCO1B1", "TPMT", "NUDT15", "DPYD"]


def test_every_seed_row_loads_and_each_gene_has_its_reference() -> None:
    folder = pgx.seeds_folder()
    defs = pgx.load_definitions(folder)
    assert list(defs) == GENES
    rows = {name: sum(1 for _ in (folder / name).open()) - 1
            for name in ("variants.csv", "alleles.csv")}
    assert sum(len(g.variants) for g in defs.values()) == rows["variants.csv"]
    assert sum(len(g.definitions) for g in defs.values()) == rows["alleles.csv"]
    for gene in defs.values():
        assert gene.definitions[0] == gene.reference
        assert gene.alleles[gene.reference].function == "Normal function"
        assert all(v.chromosome == gene.chromosome for v in gene.variants)
        if gene.phenotype_rule == "activity_score":
            assert all(a.activity is not None for a in gene.alleles.values())
            assert gene.activity_scores[2.0] == "Normal Metabolizer"
        else:
            assert gene.function_pairs[frozenset({"Normal function"})] in {
                "Normal Metabolizer", "Normal Function"}
    assert defs["TPMT"].definitions[0b101] == "*3A"  # rs1142345 + rs1800460 on one haplotype
    assert defs["DPYD"].alleles["c.1905+1G>A (*2A)"].activity == 0.0


@pytest.mark.parametrize(("file", "old", "new", "message"), [
    ("variants.csv", "chr10,94781859,G,A", "chr10,9478x859,G,A",
     r"variants.csv:9: field 'position' is '9478x859'; expected a 1-based GRCh38 position"),
    ("variants.csv", "94781859,G,A", "94781859,G,Q",
     r"variants.csv:9: field 'alt' is 'Q'; expected bases A, C, G, T or N"),
    ("alleles.csv", "CYP2C19,*2,rs4244285,No function",
     "CYP2C19,*2,rs4244285,No functoin",
     r"alleles.csv:3: field 'function' is 'No functoin'; expected one of Normal function"),
    ("alleles.csv", "TPMT,*3A,rs1800460+rs1142345", "TPMT,*3A,rs1800460+rs999",
     r"alleles.csv:32: field 'variants' is 'rs1800460\+rs999'; expected rsIDs of TPMT"),
    ("alleles.csv", "CYP2C9,*3,rs1057910,No function,0.0",
     "CYP2C9,*3,rs1057910,No function,",
     r"alleles.csv:16: field 'activity_value' is ''; expected a number"),
    ("alleles.csv", "TPMT,*1,,Normal function,", "TPMT,*1x,,Normal function,",
     r"alleles.csv:30: field 'variants' is ''; expected no variants for the reference"),
    ("function_pairs.csv", "TPMT,No function,No function,Poor Metabolizer",
     "TPMT,No function,No function,Poor Metaboliser",
     r"function_pairs.csv:21: field 'phenotype' is 'Poor Metaboliser'; expected one of"),
    ("activity_scores.csv", "DPYD,0.5,", "DPYX,0.5,",
     r"activity_scores.csv:10: field 'gene' is 'DPYX'; expected a gene of genes.csv"),
    ("genes.csv", "DPYD,chr1,Reference,activity_score", "DPYD,chr1,Reference,score",
     r"genes.csv:7: field 'phenotype_rule' is 'score'; expected one of function_pair"),
])
def test_a_bad_seed_row_names_file_line_and_field(tmp_path: Path, file: str, old: str,
                                                   new: str, message: str) -> None:
    folder = tmp_path / "pgx"
    shutil.copytree(pgx.seeds_folder(), folder)
    text = (folder / file).read_text()
    assert old in text
    (folder / file).write_text(text.replace(old, new, 1))
    with pytest.raises(pgx.PgxSeedError, match=message) as error:
        pgx.load_definitions(folder)
    assert str(folder / file) in str(error.value)


def test_a_missing_seed_file_or_header_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "pgx"
    shutil.copytree(pgx.seeds_folder(), folder)
    (folder / "alleles.csv").write_text("gene,allele,vars,function,activity_value\n")
    with pytest.raises(pgx.PgxSeedError, match=r"alleles.csv:1: header .* fix: the header "
                       "must be gene,allele,variants,function,activity_value"):
        pgx.load_definitions(folder)
    (folder / "alleles.csv").unlink()
    with pytest.raises(pgx.PgxSeedError, match=r"alleles\.csv: seed file missing"):
        pgx.load_definitions(folder)
