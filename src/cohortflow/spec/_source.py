"""Where a study's OMOP CDM comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cohortflow.spec._base import SpecModel


class SynthSource(SpecModel):
    """Generate a synthetic OMOP CDM with ``cohortflow synth`` as the study's first step."""

    persons: int = Field(ge=1, description="Number of synthetic persons.")
    seed: int = Field(0, description="Generator seed; same seed, same data.")


class OmopSource(SpecModel):
    """An existing OMOP CDM: a DuckDB file, a directory of Parquet or CSV tables, or a
    PostgreSQL database (``url``; the password comes from PGPASSWORD or ~/.pgpass)."""

    path: Path | None = Field(None, description="DuckDB file or directory of tables.")
    url: str | None = Field(
        None,
        description="PostgreSQL URL without a password, e.g. postgresql://reader@db:5432/cdm; "
        "the password comes from PGPASSWORD or ~/.pgpass.",
    )
    format: Literal["duckdb", "parquet", "csv", "postgresql"] | None = Field(
        None, description="Source format; inferred from the path or url when omitted."
    )
    schema_name: str | None = Field(
        None, alias="schema",
        description="Database schema holding the CDM tables (DuckDB, PostgreSQL).",
    )

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is None:
            return url
        scheme, _, rest = url.partition("://")
        if scheme not in ("postgresql", "postgres") or not rest:
            raise ValueError("expected a PostgreSQL URL, e.g. postgresql://reader@db:5432/cdm")
        if ":" in rest.rpartition("@")[0] or "password=" in rest.lower():
            raise ValueError("the URL holds a password; remove it and set PGPASSWORD or add "
                             "it to ~/.pgpass (host:port:dbname:user:password, mode 0600)")
        return url

    @model_validator(mode="after")
    def _path_or_url(self) -> OmopSource:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of 'path' (a DuckDB file or a directory) or "
                             "'url' (postgresql://user@host:5432/dbname)")
        return self

    @property
    def location(self) -> str | Path:
        """The path, or the URL, that :func:`cohortflow.omop.open_source` opens."""
        return self.url if self.url is not None else Path(str(self.path))


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
