"""What a model package was built from, read back as the study's typed objects, and what
an extract must hold for it: the OMOP tables and event-store code families its target
cohort, outcome and feature columns read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from cohortflow import events
from cohortflow.errors import ScoringError
from cohortflow.features import FeatureIndex
from cohortflow.features._aggregate import DEMOGRAPHIC_PREFIX, SET_PREFIX
from cohortflow.package import ModelPackage
from cohortflow.study import (
    Cohort,
    ConceptSet,
    Features,
    OutcomeSpec,
    RiskWindow,
)
from cohortflow.study._features import KEY_SEPARATOR
from cohortflow.study._genomics import MISSING_CODE, PGX_PREFIX, VARIANT_PREFIX
from cohortflow.study._omics import OMICS_PREFIX

DOMAIN_TABLES = {
    "VISIT": "visit_occurrence", "CONDITION": "condition_occurrence", "DRUG": "drug_exposure",
    "DRUG_ERA": "drug_era", "PROCEDURE": "procedure_occurrence", "MEASUREMENT": "measurement",
    "OBSERVATION": "observation", "DEATH": "death",
}
"""The OMOP table each event domain comes from (the ingest's ``CLINICAL_TABLES``, death)."""


@dataclass(frozen=True)
class Definitions:
    """A package's definitions (its ``study.json``) as typed study objects."""

    concept_sets: dict[str, ConceptSet]
    features: Features
    cohort: Cohort
    outcome_name: str
    outcome: OutcomeSpec
    time_at_risk: RiskWindow
    min_cell_count: int
    columns: FeatureIndex

    @classmethod
    def of(cls, pkg: ModelPackage) -> Definitions:
        """The definitions of a loaded (verified) package."""
        raw = pkg.study
        return cls(
            concept_sets={k: ConceptSet.model_validate(v)
                          for k, v in sorted(raw["concept_sets"].items())},
            features=Features.model_validate(raw["features"]),
            cohort=Cohort.model_validate(raw["cohort"]),
            outcome_name=str(raw["analysis"]["outcome"]),
            outcome=OutcomeSpec.model_validate(raw["outcome"]),
            time_at_risk=RiskWindow.model_validate(raw["time_at_risk"]),
            min_cell_count=int(raw["min_cell_count"]),
            columns=parse_columns(pkg.columns))

    def cohort_domains(self) -> list[str]:
        """Event domains the target cohort reads (entry, rules, exit, censoring)."""
        return sorted(_domains(self.cohort.model_dump(mode="json"), self.concept_sets))

    def outcome_domains(self) -> list[str]:
        """Event domains the outcome reads (empty for an outcome that is a library cohort)."""
        if self.outcome.cohort is not None:
            return []
        return sorted(_domains(self.outcome.model_dump(mode="json"), self.concept_sets))

    def feature_families(self) -> list[str]:
        """Code families (``features.domains`` entries, concept sets' domains) that at
        least one packaged column reads: an extract without any code of one cannot give
        the model what it learnt from."""
        found: set[str] = set()
        codes = set(self.columns.code)
        for domain in self.features.domains:
            if any(c == domain or c.startswith(f"{domain}/") for c in codes):
                found.add(domain)
        for name in self.features.concept_sets:
            if f"{SET_PREFIX}{name}" in codes:
                found.add(self.concept_sets[name].domain)
        return sorted(found)

    def beyond_events(self) -> list[str]:
        """What of the packaged definitions an extract's events cannot give (scoring has no
        genotype or omics source): the genomic and omics columns the model reads, a target
        cohort's pharmacogene criteria.  Scoring them from events alone would score every
        person as one with no genotypes, so the package is refused instead."""
        prefixes = (PGX_PREFIX, VARIANT_PREFIX, MISSING_CODE, OMICS_PREFIX)
        found = sorted({c for c in self.columns.code if c.startswith(prefixes)})
        shown = [*found[:3], f"… {len(found)} in all"] if len(found) > 4 else found
        beyond = [f"the feature columns {', '.join(shown)}"] if found else []
        if self.cohort.pgx_criteria():
            genes = sorted({c.gene for c in self.cohort.pgx_criteria()})
            beyond.append(f"the target cohort's pharmacogene criteria ({', '.join(genes)})")
        return beyond

    def tables(self) -> dict[str, str]:
        """OMOP tables the package needs, each with what reads it."""
        needed: dict[str, str] = {}
        for what, domains in (("target cohort", self.cohort_domains()),
                              ("feature columns", self.feature_families())):
            for domain in domains:
                table = DOMAIN_TABLES.get(domain.split("/")[0])
                if table is not None:
                    needed.setdefault(table, f"{what} ({domain} codes)")
        return dict(sorted(needed.items()))


def _domains(node: Any, concept_sets: dict[str, ConceptSet]) -> set[str]:
    """Domains of every criterion in a dumped definition: its ``domain``, else its concept
    set's; a criterion with no concept set is a death."""
    found: set[str] = set()
    if isinstance(node, dict):
        if "concept_set" in node and "domain" in node:
            name, domain = node["concept_set"], node["domain"]
            if domain is not None:
                found.add(domain)
            elif name is not None and name in concept_sets:
                found.add(concept_sets[name].domain)
            elif name is None:
                found.add("DEATH")
        for value in node.values():
            found |= _domains(value, concept_sets)
    elif isinstance(node, list):
        for value in node:
            found |= _domains(value, concept_sets)
    return found


def parse_columns(columns: list[str]) -> FeatureIndex:
    """The packaged feature columns (``code|window|aggregation``) as a feature axis.

    >>> parse_columns(["DRUG//1|30d|count", "MEDS_BIRTH|all|age_years"]).aggregation
    ('count', 'age_years')
    """
    keys = []
    for column in columns:
        code, window, aggregation = column.rsplit(KEY_SEPARATOR, 2)
        keys.append((code, window, aggregation))
    return FeatureIndex.of(keys)


def check_tables(defs: Definitions, tables: list[str], location: str) -> None:
    """Refuse an OMOP extract without a table the package's definitions read.

    >>> from types import SimpleNamespace
    >>> defs = SimpleNamespace(tables=lambda: {"measurement": "feature columns "
    ...                                                       "(MEASUREMENT codes)"})
    >>> check_tables(defs, ["person", "observation_period"], "cdm/")
    Traceback (most recent call last):
    ...
    cohortflow.errors.ScoringError: cdm/: table measurement missing; the \
model package's feature columns (MEASUREMENT codes) read it; fix: export the OMOP CDM \
measurement table with the extract (measurement.parquet, measurement.csv or a database \
table measurement)
    """
    for table, reader in defs.tables().items():
        if table not in tables:
            raise ScoringError(
                f"{location}: table {table} missing; the model package's {reader} read it; "
                f"fix: export the OMOP CDM {table} table with the extract ({table}.parquet, "
                f"{table}.csv or a database table {table})")


def check_store(defs: Definitions, codes: pl.DataFrame, location: str) -> None:
    """Refuse an event store holding no code at all of a family the package reads (its
    target cohort's domains, its feature columns' families, the demographics it uses)."""
    present = codes["code"]
    families = dict.fromkeys(defs.cohort_domains(), "target cohort")
    families |= dict.fromkeys(defs.feature_families(), "feature columns")
    if "age" in defs.features.demographics and any(
            c == events.BIRTH for c in defs.columns.code):
        families[events.BIRTH] = "age feature"
    for demographic, prefix in sorted(DEMOGRAPHIC_PREFIX.items()):
        if demographic in defs.features.demographics and any(
                c.startswith(f"{prefix}//") for c in defs.columns.code):
            families[prefix] = f"{demographic} feature"
    families.pop("DEATH", None)  # an extract may well hold no death
    for family, reader in sorted(families.items()):
        prefix = events.DEATH if family == "DEATH" else family
        if not bool((present.str.starts_with(f"{prefix}/") | (present == prefix)).any()):
            table = DOMAIN_TABLES.get(family)
            source = f" (OMOP table {table})" if table else ""
            raise ScoringError(
                f"{location}: the extract has no {family} codes{source}, and the model "
                f"package's {reader} read them; fix: score an extract that holds {family} "
                "events")
