"""Omics feature blocks of a study (``features.omics``): samples × features matrices (a
plain Zarr group or an AnnData store, :func:`cohortflow.genomics.open_omics`) joined to
persons through their own linkage table, each a block of columns on the feature axis."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from cohortflow.study._base import SpecModel

OMICS_PREFIX = "OMICS//"
"""First part of an omics feature code: ``OMICS//<block>//<feature>``."""
OMICS_VALUE = "value"
"""The aggregation of an omics feature: the sample's value itself (NaN: no sample)."""


def omics_code(block: str, feature: str) -> str:
    """The feature code of one feature of a block.

    >>> omics_code("rna", "GENE_A"), omics_code("rna", "missing")
    ('OMICS//rna//GENE_A', 'OMICS//rna//missing')
    """
    return f"{OMICS_PREFIX}{block}//{feature}"


class OmicsFeatures(SpecModel):
    """One omics block: columns ``OMICS//<name>//<feature>|all|value`` (the linked sample's
    value; NaN for a person without a sample) and ``OMICS//<name>//missing|all|present``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="The block's name in its "
                      "feature codes, e.g. rna (lower case, digits, underscores).")
    store: Path = Field(description="The matrix: a Zarr group (values, sample_id, feature_id) "
                        "or an AnnData store (adata.write_zarr); relative to the study file.")
    linkage: Path = Field(description="Its sample_id,person_id table (CSV or Parquet), "
                          "relative to the study file.")
    layer: str | None = Field(None, description="An AnnData layer instead of X; null: X.")
    features: list[str] | None = Field(
        None, min_length=1, description="The features (the store's feature ids) to keep, in "
        "this order; null: all of them, in store order.")

    @field_validator("features")
    @classmethod
    def _once(cls, features: list[str] | None) -> list[str] | None:
        if features is not None and len(set(features)) != len(features):
            seen = sorted({f for f in features if features.count(f) > 1})
            raise ValueError(f"features repeat: {seen}; fix: list each feature once")
        if features is not None and "missing" in features:
            raise ValueError("'missing' is the block's missing indicator, not a feature "
                             "name to select; fix: leave it out")
        return features
