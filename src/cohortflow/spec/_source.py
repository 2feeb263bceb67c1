"""Where a study's OMOP CDM comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cohortflow.spec._base import SpecModel


class SynthSource(SpecModel):
    """Generate a synthetic OMOP CDM with ``cohortflow synth`` as the study's first step."""

    persons: int = Field(ge=1, description="Number of synthetic persons.")
    seed: int = Field(0, description="Generator seed; same seed, same data.")


class OmopSource(SpecModel):
    """An existing OMOP CDM: a DuckDB file, or a directory of Parquet or CSV tables."""

    path: Path = Field(description="DuckDB file or directory of tables.")
    format: Literal["duckdb", "parquet", "csv"] | None = Field(
        None, description="Source format; inferred from the path when omitted."
    )
    schema_name: str | None = Field(
        None, alias="schema", description="Database schema holding the CDM tables (DuckDB)."
    )


class Source(SpecModel):
    """Exactly one of ``synth`` or ``omop``."""

    synth: SynthSource | None = None
    omop: OmopSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if (self.synth is None) == (self.omop is None):
            raise ValueError(
                "give exactly one of 'synth' or 'omop', e.g. source: {synth: {persons: 5000}}"
            )
        return self
