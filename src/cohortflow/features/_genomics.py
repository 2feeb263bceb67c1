"""Genomic features (``features.genomics``): pure functions of a shard's cohort rows and the
study's phenotype and dosage tables (``genomics/phenotypes.parquet``,
``genomics/variants.parquet``).

The feature axis is fixed by the spec and the allele-definition seeds, not by the data:
per pharmacogene one ``present`` column for each phenotype CPIC can assign it
(``PGX//CYP2C19//poor|all|present``, indeterminate included), then
``GENOMICS//missing|all|present`` (set for persons without genotypes, whose phenotype
columns stay 0), then one ``dosage`` column per declared variant
(``VARIANT//rs4244285|all|dosage``; NaN for a missing call or a person without genotypes).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import polars as pl

from cohortflow.features._aggregate import TIDY_SCHEMA
from cohortflow.study import (
    DOSAGE,
    MISSING_CODE,
    PGX_PREFIX,
    PHENOTYPE_SLUGS,
    STATIC_WINDOW,
    VARIANT_PREFIX,
    GenomicFeatures,
    phenotype_slug,
)


@cache
def gene_phenotypes(gene: str) -> tuple[str, ...]:
    """The phenotypes (short names, in :data:`PHENOTYPE_SLUGS` order) the seeds can assign
    ``gene``: its function pairs' or activity scores', and indeterminate.

    >>> gene_phenotypes("CYP2C19")[-3:]
    ('likely_poor', 'poor', 'indeterminate')
    """
    from cohortflow.pgx import INDETERMINATE, load_definitions

    definition = load_definitions()[gene]
    terms = {*definition.function_pairs.values(), *definition.activity_scores.values(),
             INDETERMINATE}
    slugs = {phenotype_slug(t) for t in terms}
    return tuple(s for s in PHENOTYPE_SLUGS if s in slugs)


def pgx_code(gene: str, phenotype: str) -> str:
    """The feature code of one phenotype of a gene.

    >>> pgx_code("CYP2C19", "poor")
    'PGX//CYP2C19//poor'
    """
    return f"{PGX_PREFIX}{gene}//{phenotype}"


def genomic_keys(spec: GenomicFeatures | None) -> list[tuple[str, str, str]]:
    """The genomic part of the feature axis, (code, window, aggregation) in order."""
    if spec is None:
        return []
    keys = [(pgx_code(gene, p), STATIC_WINDOW, "present")
            for gene in spec.pharmacogenes for p in gene_phenotypes(gene)]
    keys.append((MISSING_CODE, STATIC_WINDOW, "present"))
    keys += [(f"{VARIANT_PREFIX}{v}", STATIC_WINDOW, DOSAGE) for v in spec.variants]
    return keys


def genomic_cells(spec: GenomicFeatures | None, cohort: pl.LazyFrame,
                  phenotypes: pl.LazyFrame | None, dosages: pl.LazyFrame | None
                  ) -> pl.DataFrame:
    """Tidy cells (``TIDY_SCHEMA``) of one shard's cohort rows (``subject_id``, in tensor
    order): a 1 for each row's phenotype at each declared gene, a 1 in the missing
    indicator for a row without genotypes, and each declared variant's dosage where it
    was called.

    >>> spec = GenomicFeatures(pharmacogenes=["CYP2C19"], variants=["rs1"])
    >>> cohort = pl.LazyFrame({"subject_id": [7, 8]})
    >>> ph = pl.LazyFrame({"subject_id": [7], "gene": ["CYP2C19"], "phenotype": ["poor"]})
    >>> ds = pl.LazyFrame({"subject_id": [7], "variant": ["rs1"], "dosage": [2.0]})
    >>> genomic_cells(spec, cohort, ph, ds).rows()  # doctest: +NORMALIZE_WHITESPACE
    [(1, 'GENOMICS//missing', 'all', 'present', 1.0),
     (0, 'PGX//CYP2C19//poor', 'all', 'present', 1.0), (0, 'VARIANT//rs1', 'all', 'dosage', 2.0)]
    """
    if spec is None:
        return pl.DataFrame(schema=TIDY_SCHEMA)
    if phenotypes is None:
        raise ValueError("genomic features need the phenotype table")
    rows = cohort.select("subject_id").with_row_index("row")
    genes = pl.Series(spec.pharmacogenes, dtype=pl.String).implode()
    onehot = (rows.join(phenotypes.filter(pl.col("gene").is_in(genes)), on="subject_id")
              .select("row", feature_code=pl.lit(PGX_PREFIX) + pl.col("gene") + pl.lit("//")
                      + pl.col("phenotype"), value=pl.lit(1.0)))
    typed = phenotypes.select("subject_id").unique()
    missing = (rows.join(typed, on="subject_id", how="anti")
               .select("row", feature_code=pl.lit(MISSING_CODE), value=pl.lit(1.0)))
    parts = [frame.with_columns(window=pl.lit(STATIC_WINDOW), aggregation=pl.lit("present"))
             for frame in (onehot, missing)]
    if spec.variants and dosages is not None:
        wanted = pl.Series(spec.variants, dtype=pl.String).implode()
        called = (rows.join(dosages.filter(pl.col("variant").is_in(wanted)
                                           & pl.col("dosage").is_not_null()), on="subject_id")
                  .select("row", feature_code=pl.lit(VARIANT_PREFIX) + pl.col("variant"),
                          value=pl.col("dosage"), window=pl.lit(STATIC_WINDOW),
                          aggregation=pl.lit(DOSAGE)))
        parts.append(called)
    frames = [p.select(list(TIDY_SCHEMA)).cast(TIDY_SCHEMA) for p in parts]
    return pl.concat(frames).sort("feature_code", "row").collect()


def read_tables(paths: tuple[Path, Path | None] | None
                ) -> tuple[pl.LazyFrame | None, pl.LazyFrame | None]:
    """The phenotype and dosage tables (lazily), from their paths."""
    if paths is None:
        return None, None
    phenotypes, variants = paths
    return (pl.scan_parquet(phenotypes).select("subject_id", "gene", "phenotype"),
            None if variants is None else pl.scan_parquet(variants))
