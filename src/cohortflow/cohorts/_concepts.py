"""Concept sets resolved to event-store codes: included minus excluded, with descendants."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from cohortflow import events
from cohortflow.errors import StudySpecError
from cohortflow.study import Cohort, ConceptRef, ConceptSet

log = logging.getLogger(__name__)


def _expand(refs: list[ConceptRef], domain: str, codes: pl.DataFrame) -> set[str]:
    found: set[str] = set()
    for ref in refs:
        root = ref.code if ref.code is not None else (
            f"{domain}{events.CODE_SEPARATOR}{ref.concept_id}")
        found |= events.descendants(codes, [root]) if ref.descendants else {root}
    return found


def concept_codes(name: str, concept_set: ConceptSet, codes: pl.DataFrame,
                  domain: str | None = None, required: bool = True) -> list[str]:
    """Event-store codes of a concept set in ``domain`` (default: the set's own), descendants
    expanded from ``parent_codes``; excluded concepts (and their descendants) removed.

    >>> codes = pl.DataFrame({"code": ["CONDITION//1", "CONDITION//2", "CONDITION//3"],
    ...                       "parent_codes": [[], ["CONDITION//1"], ["CONDITION//1"]]})
    >>> concept_codes("x", ConceptSet(include=[{"concept_id": 1}],
    ...                               exclude=[{"concept_id": 3}]), codes)
    ['CONDITION//1', 'CONDITION//2']
    >>> concept_codes("x", ConceptSet(include=[{"concept_id": 9}]), codes)
    Traceback (most recent call last):
    ...
    cohortflow.errors.StudySpecError: concept_sets.x: none of the concepts 9 (domain CONDITION) ...
    """
    domain = domain or concept_set.domain
    if domain == "DEATH":
        return [events.DEATH]
    wanted = _expand(concept_set.include, domain, codes) - _expand(concept_set.exclude, domain,
                                                                   codes)
    known = sorted(wanted & set(codes["code"].to_list()))
    if not known:
        ids = ", ".join(str(r.concept_id if r.code is None else r.code)
                        for r in concept_set.include)
        message = (f"concept_sets.{name}: none of the concepts {ids} (domain {domain}) "
                   "occurs in the event store; fix: check the concept ids and the domain")
        if required:
            raise StudySpecError(message)
        log.warning("%s", message)
    return known


@dataclass
class CohortPlan:
    """A cohort definition with its concept sets, resolving each (set, domain) to codes once.

    ``required`` concept sets (entry, and a single-form cohort's outcome) must occur in the
    store; the others may be absent (a washout of a drug nobody takes is simply always passed).
    ``phenotypes`` are the study's pharmacogene phenotypes (``subject_id``, ``gene``,
    ``phenotype``; :data:`cohortflow.genomics.PHENOTYPE_SCHEMA`), for ``pgx`` criteria.
    """

    cohort: Cohort
    concept_sets: Mapping[str, ConceptSet]
    codes: pl.DataFrame
    phenotypes: pl.DataFrame | None = None
    _cache: dict[tuple[str | None, str], list[str]] = field(default_factory=dict, repr=False)

    def domain_of(self, concept_set: str | None, domain: str | None) -> str:
        if domain is not None:
            return domain
        if concept_set is None:
            return "DEATH"
        return self.concept_sets[concept_set].domain

    def codes_of(self, concept_set: str | None, domain: str | None = None,
                 required: bool = False) -> list[str]:
        """Event-store codes of a concept set in a domain (``['MEDS_DEATH']`` for DEATH)."""
        resolved = self.domain_of(concept_set, domain)
        key = (concept_set, resolved)
        if key not in self._cache:
            if concept_set is None:
                self._cache[key] = [events.DEATH]
            else:
                self._cache[key] = concept_codes(concept_set, self.concept_sets[concept_set],
                                                 self.codes, resolved, required)
        return self._cache[key]

    def resolved(self) -> list[list[str]]:
        """The codes of every (concept set, domain) resolved so far."""
        return list(self._cache.values())

    def check(self) -> None:
        """Resolve the entry concept sets now (and a single-form cohort's outcome, when it has
        one), so a typo fails before any work."""
        for criterion in self.cohort.entry.all_criteria():
            self.codes_of(criterion.concept_set, criterion.domain, required=True)
        if self.cohort.outcome is not None:
            self.codes_of(self.cohort.outcome.concept_set, self.cohort.outcome.domain,
                          required=True)
