"""Where a study's OMOP CDM comes from."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from cohortflow.study._base import SpecModel

_PASSWORD_PARAM = re.compile(r"(?i)password\s*=")
_PASSWORD_TO_END = re.compile(r"(?i)password\s*=.*", re.DOTALL)
PASSWORD_FIX = ("remove it and set PGPASSWORD, or add a line "
                "host:port:dbname:user:password to ~/.pgpass (mode 0600; another file: "
                "PGPASSFILE); never put it in a URL or the study file")


def holds_password(url: str) -> bool:
    """Whether a connection string carries a password: ``user:password@`` in a URL, or a
    ``password=`` (or ``sslpassword=``) parameter in any case and spacing, in a URL's query
    or a ``key=value`` connection string.  It errs towards refusing: a ``:`` anywhere
    before the last ``@`` counts, so a password holding ``@``, ``/`` or spaces is caught.

    >>> holds_password("postgresql://reader@db.example.org:5432/cdm?sslmode=require")
    False
    >>> [holds_password(u) for u in ("postgresql://u:p@ss/w d@db/cdm", "postgresql://:x@db/c",
    ...                               "postgresql://u@db/cdm?PassWord = x", "host=db password=x")]
    [True, True, True, True]
    """
    rest = url.partition("://")[2]
    return ":" in rest.rpartition("@")[0] or _PASSWORD_PARAM.search(url) is not None


def redact(url: str) -> str:
    """A connection string safe to show: everything from a ``password=`` on, then
    everything before the last ``@`` (user and password), are replaced by ``***``.

    >>> redact("postgresql://reader:p@ss@db:5432/cdm")
    'postgresql://***@db:5432/cdm'
    >>> redact("postgresql://u@db/cdm?sslmode=require&password=p@ss&x=1")
    'postgresql://***@db/cdm?sslmode=require&password=***'
    """
    scheme, sep, rest = _PASSWORD_TO_END.sub("password=***", url).partition("://")
    if not sep:
        scheme, rest = "", scheme
    _, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host}"


class DriftCodeFrequency(SpecModel):
    """A code whose events happen ``factor`` times as often after the drift date."""

    concept_id: int = Field(description="The concept (and its descendants), e.g. 1177480.")
    factor: float = Field(ge=0, description="Rate after the date / rate before, e.g. 2.0.")


class DriftAssayReplacement(SpecModel):
    """A measurement recorded under a new concept from the drift date on."""

    old: int = Field(description="The measurement concept replaced, e.g. 2000000201.")
    new: int = Field(description="The new concept (added to the vocabulary), e.g. 2000000202.")


class SynthDrift(SpecModel):
    """Changes the generator plants after a date, recorded in ``oracle.json`` (demo only)."""

    after: date = Field(description="The first day of the changed data, e.g. 2021-01-01.")
    code_frequency: DriftCodeFrequency | None = None
    assay_replacement: DriftAssayReplacement | None = None
    outcome_rate_factor: float | None = Field(
        None, gt=0, description="The planted outcome's risk times this for index dates "
        "after the date, e.g. 1.5.")

    @model_validator(mode="after")
    def _some_part(self) -> SynthDrift:
        if (self.code_frequency is None and self.assay_replacement is None
                and self.outcome_rate_factor is None):
            raise ValueError("give at least one of code_frequency, assay_replacement, "
                             "outcome_rate_factor, e.g. outcome_rate_factor: 1.5")
        return self


class SynthGenotypes(SpecModel):
    """A VCF for a share of the persons and a planted CYP2C19 x escitalopram interaction,
    recorded in ``oracle.json`` (demo only)."""

    share: float = Field(0.3, gt=0, le=1, description="Share of persons genotyped, e.g. 0.3.")
    background_variants: int = Field(
        2000, ge=0, le=1_000_000, description="Background SNVs besides the pharmacogene "
        "variants, e.g. 2000.")
    exposed_share: float = Field(
        0.3, gt=0, le=1, description="Share of persons given the CYP2C19 substrate "
        "(escitalopram), e.g. 0.3.")
    effect: Literal["poor_only", "graded"] = Field(
        "poor_only", description="The planted adverse reaction's rate: poor_only, 0.30 for "
        "CYP2C19 poor metabolisers and 0.05 for everyone else; graded, by CYP2C19 phenotype "
        "(ultrarapid 0.02, rapid 0.03, normal 0.05, intermediate 0.12, poor 0.30).")

    @model_serializer(mode="wrap")
    def _omit_default_effect(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # left out of dumps when the default: studies written before it keep their digests
        data: dict[str, Any] = handler(self)
        if data.get("effect") == "poor_only":
            del data["effect"]
        return data


class SynthSource(SpecModel):
    """Generate a synthetic OMOP CDM with ``cohortflow synth`` as the study's first step."""

    persons: int = Field(ge=1, description="Number of synthetic persons.")
    seed: int = Field(0, description="Generator seed; same seed, same data.")
    preset: Literal["demo", "warehouse"] = Field(
        "demo", description="demo: 67 codes, about 75 rows per person (fast); warehouse: "
        "over 20,000 codes in a 5-level hierarchy, Zipf-like code frequencies, 1,200 "
        "measurement codes with units and values, heavy-tailed events per person.")
    rare_disease_per_million: float = Field(
        0, ge=0, le=1_000_000, description="Plant a rare disease (concept 2000000020) in "
        "about this many persons per million; 0: none.")
    drift: SynthDrift | None = Field(
        None, description="Plant changes after a date (demo preset); null: none.")
    genotypes: SynthGenotypes | None = Field(
        None, description="Write genotypes/cohort.vcf.gz for a share of the persons and plant "
        "a gene x drug interaction (demo preset); null: none.")

    @model_validator(mode="after")
    def _drift_in_demo(self) -> SynthSource:
        if self.drift is not None and self.preset != "demo":
            raise ValueError("drift is planted in the demo preset only; fix: preset: demo")
        if self.genotypes is not None and self.preset != "demo":
            raise ValueError("genotypes are planted in the demo preset only; fix: preset: demo")
        return self

    @model_serializer(mode="wrap")
    def _omit_demo_preset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The default preset and the plants that are off are left out of dumps, so studies
        # written before them keep their synth and ingest digests (and their results stay
        # current).
        data: dict[str, Any] = handler(self)
        if data.get("preset") == "demo":
            del data["preset"]
        if not data.get("rare_disease_per_million"):
            data.pop("rare_disease_per_million", None)
        if data.get("drift") is None:
            data.pop("drift", None)
        if data.get("genotypes") is None:
            data.pop("genotypes", None)
        return data


class OmopCdm(SpecModel):
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
        if holds_password(url):  # inside a study, Source refuses it first, without echo
            raise ValueError(f"the URL holds a password; fix: {PASSWORD_FIX}")
        scheme, _, rest = url.partition("://")
        if scheme not in ("postgresql", "postgres") or not rest:
            raise ValueError("expected a PostgreSQL URL, e.g. postgresql://reader@db:5432/cdm")
        return url

    @model_validator(mode="after")
    def _path_or_url(self) -> OmopCdm:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of 'path' (a DuckDB file or a directory) or "
                             "'url' (postgresql://user@host:5432/dbname)")
        return self

    @property
    def location(self) -> str | Path:
        """The path, or the URL, that :func:`cohortflow.omop.open_source` opens."""
        return self.url if self.url is not None else Path(str(self.path))


class MedsSource(SpecModel):
    """An existing MEDS dataset (made by any ETL): ``data/**/*.parquet`` with ``subject_id``
    (int64), ``time`` (timestamp), ``code`` (string), ``numeric_value`` (float), and
    optionally ``metadata/codes.parquet`` (descriptions, ``parent_codes``) and
    ``metadata/subject_splits.parquet``.  ``meds: DIR`` is short for ``meds: {path: DIR}``.
    """

    path: Path = Field(description="The dataset's root directory (holding data/ and metadata/); "
                       "a relative path is read from the study file's folder.")

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str | Path) else data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The schema of the mapping, or of the shorthand: the path alone."""
        mapping = handler.resolve_ref_schema(handler(core_schema))
        return {"anyOf": [mapping, {"type": "string", "description": "The path alone."}]}


class Source(SpecModel):
    """Exactly one of ``synth``, ``omop`` or ``meds``."""

    synth: SynthSource | None = None
    omop: OmopCdm | None = None
    meds: MedsSource | None = Field(
        None, description="An existing MEDS dataset: {path: DIR}, or just DIR.")

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        """Refuse a password in ``omop.url`` before the URL is validated, on this mapping:
        a study error shows a field's received value, and for a mapping only its kind, so
        the password reaches no message, log or Snakemake record."""
        omop = data.get("omop") if isinstance(data, dict) else None
        url = omop.get("url") if isinstance(omop, dict) else None
        if isinstance(url, str) and holds_password(url):
            raise ValueError(f"omop.url {redact(url)} holds a password; fix: {PASSWORD_FIX}")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        given = [s for s in (self.synth, self.omop, self.meds) if s is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'synth', 'omop' or 'meds', e.g. source: {synth: "
                "{persons: 5000}}, source: {omop: {path: cdm.duckdb}} or source: {meds: "
                "{path: my_meds_dataset}}"
            )
        return self
