"""The genotypes of a study (``genomics:``), the pharmacogene phenotype criterion of a
cohort (``pgx:``) and the genomic features (``features.genomics``).

Phenotypes are named by :func:`phenotype_slug` of the CPIC term (``Poor Metabolizer`` is
``poor``, ``Decreased Function`` is ``decreased_function``), in criteria and on the feature
axis alike.

>>> Genomics.model_validate({"vcf": ["a.vcf.gz"], "linkage": "link.csv"}).partitions
4
>>> Genomics(reference="GRCh38").reference_contigs()[-3:]
('chrX', 'chrY', 'chrM')
>>> PgxCriterion(gene="CYP2C19", phenotype=["poor", "intermediate"]).phenotype
['poor', 'intermediate']
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from cohortflow.study._base import SpecModel

PGX_PREFIX = "PGX//"
"""Feature code of a gene's phenotype one-hot: ``PGX//CYP2C19//poor|all|present``."""
VARIANT_PREFIX = "VARIANT//"
"""Feature code of a declared variant's dosage: ``VARIANT//rs4244285|all|dosage``."""
MISSING_CODE = "GENOMICS//missing"
"""Feature code set (``|all|present``) for persons without genotypes (no linked sample)."""
GRCH38_CONTIGS: tuple[str, ...] = (*(f"chr{i}" for i in range(1, 23)), "chrX", "chrY", "chrM")
"""The GRCh38 primary assembly's chromosomes, named as the pgx seeds name them (a VCF's
``10`` is the same contig as ``chr10``: see :func:`cohortflow.genomics._reference.bare`)."""
REFERENCE_BUILDS: dict[str, tuple[str, ...]] = {"GRCh38": GRCH38_CONTIGS}
"""The reference builds ``genomics.reference`` may name, with their contigs."""
_CONTIG = re.compile(r"^[^\s,<>=]+$")
DOSAGE = "dosage"
"""The aggregation of a variant's dosage: copies of the alternate allele, 0, 1 or 2; NaN
for a missing call or a person without genotypes."""

_CPIC_PHENOTYPES = (
    "Ultrarapid Metabolizer", "Rapid Metabolizer", "Normal Metabolizer",
    "Likely Intermediate Metabolizer", "Intermediate Metabolizer",
    "Possible Intermediate Metabolizer", "Likely Poor Metabolizer", "Poor Metabolizer",
    "Increased Function", "Normal Function", "Possible Decreased Function",
    "Decreased Function", "Poor Function", "Indeterminate",
)
"""The CPIC terms of :data:`cohortflow.pgx.PHENOTYPES` (repeated here: the study model
imports nothing heavy; a test keeps the two equal)."""


def phenotype_slug(term: str) -> str:
    """The short name of a CPIC phenotype term, as criteria and features write it.

    >>> phenotype_slug("Poor Metabolizer"), phenotype_slug("Possible Decreased Function")
    ('poor', 'possible_decreased_function')
    """
    return re.sub(r"\s+", "_", term.removesuffix(" Metabolizer").strip().lower())


PHENOTYPE_SLUGS: tuple[str, ...] = tuple(phenotype_slug(t) for t in _CPIC_PHENOTYPES)
Phenotype = Literal[
    "ultrarapid", "rapid", "normal", "likely_intermediate", "intermediate",
    "possible_intermediate", "likely_poor", "poor", "increased_function", "normal_function",
    "possible_decreased_function", "decreased_function", "poor_function", "indeterminate"]


@cache
def seeded_genes() -> tuple[str, ...]:
    """The genes of ``seeds/pgx/genes.csv`` (read once; the CSV is a few lines)."""
    from cohortflow.pgx._seeds import seeds_folder

    lines = (seeds_folder() / "genes.csv").read_text(encoding="utf-8").splitlines()
    return tuple(line.split(",")[0].strip() for line in lines[1:] if line.strip())


def _known_gene(gene: str) -> str:
    genes = seeded_genes()
    if gene not in genes:
        raise ValueError(f"unknown pharmacogene {gene!r}; the allele definitions "
                         f"(seeds/pgx/genes.csv) cover {', '.join(genes)}; fix: name one "
                         "of them")
    return gene


class Genomics(SpecModel):
    """Genotypes: VCF/BCF files converted once into a VCF Zarr store (``vcf``), or an
    existing store (``zarr``), and the linkage of their samples to persons.  Paths are
    read from the study file's folder.  With a synthetic source that plants genotypes
    (``source.synth.genotypes``), leave vcf, zarr and linkage out to use the generator's."""

    vcf: list[Path] = Field(
        [], description="VCF/BCF files (BGZF; same samples), converted into "
                        "genomics/genotypes.vcz, e.g. [chr10.vcf.gz, chr12.vcf.gz].")
    zarr: Path | None = Field(
        None, description="An existing VCF Zarr store instead (vcf2zarr); nothing converted.")
    linkage: Path | None = Field(
        None, description="CSV or Parquet file with columns sample_id, person_id.")
    partitions: int = Field(
        4, ge=1, le=4096, description="Conversion partitions asked of bio2zarr: a target, "
        "not an exact count; each pass plans its own partitions, one job each.  explode: "
        "each VCF is cut at its index entries into about partitions / (number of VCFs) "
        "regions, at least one per contig with records (a region never spans two contigs) "
        "and fewer when the file has fewer index entries; an uncompressed .vcf is one.  "
        "encode: min(partitions, number of chunks of 1000 variants).  genomics/steps/"
        "explode_init.json and encode_init.json record how many were planned.")
    reference: Literal["GRCh38"] | list[str] | None = Field(
        None, description="The reference the VCFs are aligned to, whose contigs their "
        "records must be on (checked when they are converted, or a given store when it is "
        "recorded): GRCh38 (its primary assembly, chr1-chr22, chrX, chrY, chrM; 10 and chr10 "
        "are the same contig) or the list of your reference's contig names, e.g. [chr1, "
        "chr2, chrEBV]; null: not checked.")
    absent: Literal["missing", "reference"] = Field(
        "missing", description="A pharmacogene's defining site absent from the genotypes: "
        "missing (the gene is indeterminate) or reference (homozygous reference, for a "
        "joint-called VCF).")

    @field_validator("reference", mode="before")
    @classmethod
    def _reference(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in REFERENCE_BUILDS:
            raise ValueError(f"unknown reference {value!r}; fix: reference: GRCh38, or list "
                             "your reference's contig names, e.g. reference: [chr1, chr2]")
        if isinstance(value, list):
            bad = [c for c in value if not isinstance(c, str) or not _CONTIG.match(c)]
            if bad or not value:
                raise ValueError(f"{bad[0]!r} is not a contig name" if bad else
                                 "no contig listed; fix: reference: GRCh38, or reference: "
                                 "[chr1, chr2, ...]")
            if len(set(value)) != len(value):
                raise ValueError(f"contigs repeat: {value}; fix: list each contig once")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Genomics:
        if self.vcf and self.zarr is not None:
            raise ValueError("give vcf (files to convert) or zarr (a converted store), not "
                             "both; fix: remove one")
        if (bool(self.vcf) or self.zarr is not None) != (self.linkage is not None):
            raise ValueError("give the genotypes (vcf or zarr) with their linkage (CSV or "
                             "Parquet, sample_id → person_id), or neither (a synthetic "
                             "source's genotypes); fix: genomics: {vcf: [cohort.vcf.gz], "
                             "linkage: linkage.csv}")
        return self

    @model_serializer(mode="wrap")
    def _omit_defaults_added_later(self, handler: SerializerFunctionWrapHandler
                                   ) -> dict[str, Any]:
        # reference was added after studies were written: left out of dumps when unset, so
        # those studies keep their digests.  Pydantic keeps one serializer per model.
        data: dict[str, Any] = handler(self)
        if data.get("reference") is None:
            data.pop("reference", None)
        return data

    @property
    def from_synth(self) -> bool:
        """Whether the genotypes are the synthetic source's (no file given)."""
        return self.linkage is None

    def reference_contigs(self) -> tuple[str, ...] | None:
        """The contigs of the declared reference (a build's, or the listed ones); None:
        no reference declared, contigs not checked.

        >>> Genomics(reference=["chr10", "chrEBV"]).reference_contigs()
        ('chr10', 'chrEBV')
        >>> Genomics().reference_contigs() is None
        True
        """
        if self.reference is None:
            return None
        if isinstance(self.reference, str):
            return REFERENCE_BUILDS[self.reference]
        return tuple(self.reference)


class PgxCriterion(SpecModel):
    """Persons whose pharmacogene phenotype (called from the study's genotypes) is one of
    ``phenotype``; persons without genotypes never match."""

    gene: str = Field(description="A gene of seeds/pgx/genes.csv, e.g. CYP2C19.")
    phenotype: list[Phenotype] = Field(
        min_length=1, description="Phenotypes that match, e.g. [poor, intermediate] (the CPIC "
                                  "term, lower case, without 'Metabolizer').")

    @field_validator("gene")
    @classmethod
    def _gene(cls, gene: str) -> str:
        return _known_gene(gene)

    def label(self) -> str:
        """How the attrition names it.

        >>> PgxCriterion(gene="CYP2C19", phenotype=["poor"]).label()
        'CYP2C19 phenotype poor'
        """
        return f"{self.gene} phenotype {' or '.join(self.phenotype)}"


_VARIANT = re.compile(r"^(?:[A-Za-z0-9_.]+:\d+(?::[ACGTN]+:[ACGTN*]+)?|[A-Za-z][A-Za-z0-9_.]*)$")


class GenomicFeatures(SpecModel):
    """Genomic features: per pharmacogene one-hot phenotype columns
    (``PGX//CYP2C19//poor|all|present``) and per declared variant its dosage
    (``VARIANT//rs4244285|all|dosage``), with ``GENOMICS//missing|all|present`` set for
    persons without genotypes (their one-hots 0, their dosages NaN)."""

    pharmacogenes: list[str] = Field(
        [], description="Genes of seeds/pgx/genes.csv whose phenotype becomes one-hot "
                        "features, e.g. [CYP2C19].")
    variants: list[str] = Field(
        [], description="Variants whose dosage (0/1/2 alternate alleles; NaN: missing call) "
                        "becomes a feature: a VCF ID (rs4244285), CHROM:POS (the one "
                        "alternate allele of a biallelic site) or CHROM:POS:REF:ALT.")

    @field_validator("pharmacogenes")
    @classmethod
    def _genes(cls, genes: list[str]) -> list[str]:
        for gene in genes:
            _known_gene(gene)
        if len(set(genes)) != len(genes):
            raise ValueError(f"pharmacogenes repeat: {genes}; fix: list each gene once")
        return genes

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: list[str]) -> list[str]:
        for v in variants:
            if not _VARIANT.match(v):
                raise ValueError(f"{v!r} is not a variant: write an ID (rs4244285), "
                                 "CHROM:POS (chr10:94781859) or CHROM:POS:REF:ALT "
                                 "(chr10:94781859:G:A)")
        if len(set(variants)) != len(variants):
            raise ValueError(f"variants repeat: {variants}; fix: list each variant once")
        return variants

    @model_validator(mode="after")
    def _something(self) -> GenomicFeatures:
        if not self.pharmacogenes and not self.variants:
            raise ValueError("genomics features need pharmacogenes or variants; fix: "
                             "genomics: {pharmacogenes: [CYP2C19]}")
        return self
