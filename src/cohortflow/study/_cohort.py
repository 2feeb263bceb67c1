"""Concept sets and the cohort definition: entry events, inclusion rules, exit, outcome label.

The model follows OHDSI's Circe/ATLAS cohort definitions, with dates counted in whole days
between calendar dates.  The smallest cohort is an entry concept set and an outcome:

>>> c = Cohort.model_validate({"entry": {"concept_set": "a"}, "outcome": {"concept_set": "b"}})
>>> c.entry.first_only, c.prior_observation_days, c.exit.strategy
(True, 365, 'observation_end')
>>> sorted({name for _, name in c.concept_set_refs()})
['a', 'b']
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from cohortflow.study._base import SpecModel
from cohortflow.study._genomics import PgxCriterion

Domain = Literal["CONDITION", "DRUG", "DRUG_ERA", "PROCEDURE", "MEASUREMENT", "OBSERVATION",
                 "VISIT", "DEATH"]
"""Event domains: the event-store code prefix (``DRUG_ERA//1118084``; ``MEDS_DEATH``)."""


class ConceptRef(SpecModel):
    """One concept of a concept set: an OMOP concept id, or a literal event-store code."""

    concept_id: int | None = Field(None, description="OMOP concept_id, e.g. 317009 (Asthma).")
    code: str | None = Field(
        None, description="A literal event-store code instead, e.g. ICD10CM//K92.2 (MEDS).")
    descendants: bool = Field(True, description="Also match every descendant concept.")

    @model_validator(mode="after")
    def _one_key(self) -> ConceptRef:
        if (self.concept_id is None) == (self.code is None):
            raise ValueError("give exactly one of concept_id or code, e.g. {concept_id: 317009}")
        return self


class ConceptSet(SpecModel):
    """A named set of concepts: included minus excluded, each with or without descendants.

    ``seed: NAME`` reads the reusable CSV concept set ``seeds/concept_sets/NAME.csv``.
    """

    include: list[ConceptRef] = Field(min_length=1, description="Concepts in the set.")
    exclude: list[ConceptRef] = Field(
        default_factory=list, description="Concepts removed from the set (after expansion).")
    domain: Domain = Field(
        "CONDITION", description="Default domain of criteria that use this set.")
    seed: str | None = Field(
        None, description="Reusable CSV in seeds/concept_sets (name or path); "
        "columns concept_id or code, descendants, exclude.")

    @model_validator(mode="before")
    @classmethod
    def _read_seed(cls, raw: Any, info: ValidationInfo) -> Any:
        if isinstance(raw, dict) and raw.get("seed") and "include" not in raw:
            folder = (info.context or {}).get("folder")
            return {**raw, **load_seed(str(raw["seed"]), folder)}
        return raw


class ValueRange(SpecModel):
    """Inclusive bounds on ``numeric_value`` (measurement, observation)."""

    min: float | None = Field(None, description="Smallest value kept (inclusive).")
    max: float | None = Field(None, description="Largest value kept (inclusive).")


class Criterion(SpecModel):
    """Events of one domain whose code is in a concept set (DEATH needs no concept set)."""

    concept_set: str | None = Field(None, description="Name of a concept set in concept_sets.")
    domain: Domain | None = Field(None, description="Domain; default: the concept set's.")
    first_occurrence: bool = Field(
        False, description="Only each person's first such event in their whole history.")
    value: ValueRange | None = Field(None, description="Keep events with a value in range.")
    units: list[str] | None = Field(None, description="Keep events with one of these units.")

    @model_validator(mode="after")
    def _has_concepts(self) -> Criterion:
        if self.concept_set is None and self.domain != "DEATH":
            raise ValueError("concept_set is required except for domain DEATH, "
                             "e.g. {concept_set: gi_bleed, domain: CONDITION}")
        return self


class Window(SpecModel):
    """Days relative to the index (``anchor``); ``null`` means unbounded on that side."""

    start_days: int | None = Field(None, description="First day (e.g. -365); null: all before.")
    end_days: int | None = Field(0, description="Last day (0 = index day); null: all after.")
    start_inclusive: bool = Field(True, description="Whether start_days itself is in the window.")
    end_inclusive: bool = Field(True, description="Whether end_days itself is in the window.")
    anchor: Literal["index_start", "index_end"] = Field(
        "index_start", description="Count from the entry event's start or its end date.")
    event_date: Literal["start", "end"] = Field(
        "start", description="Which date of the counted event must fall in the window.")
    same_observation_period: bool = Field(
        True, description="Only events inside the index's observation period count.")


class Count(SpecModel):
    op: Literal["at_least", "at_most", "exactly"] = "at_least"
    n: int = Field(1, ge=0)


class Occurrence(Criterion):
    """At least / at most / exactly ``n`` events of a concept set within a window."""

    count: Count = Count()
    window: Window = Window()


class AgeRange(SpecModel):
    """Age at index in years (OHDSI: year of index minus year of birth), inclusive."""

    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)


class Washout(SpecModel):
    """New users: no event of the concept set in the ``days`` before the index day."""

    concept_set: str
    domain: Domain | None = None
    days: int | None = Field(365, ge=1, description="Days before index; null: all history.")


class RuleItem(SpecModel):
    """One criterion of a rule: exactly one of occurrence, age, sex, washout, pgx, group."""

    occurrence: Occurrence | None = None
    age: AgeRange | None = None
    sex: list[Literal["female", "male"] | int] | None = Field(
        None, description="female, male or gender concept ids.")
    washout: Washout | None = None
    pgx: PgxCriterion | None = Field(
        None, description="A pharmacogene phenotype called from the study's genotypes "
                          "(genomics:), e.g. {gene: CYP2C19, phenotype: [poor]}; persons "
                          "without genotypes do not match.")
    group: Group | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RuleItem:
        given = [k for k in ("occurrence", "age", "sex", "washout", "pgx", "group")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of occurrence, age, sex, washout, pgx, group "
                             f"(got {given or 'none'}), e.g. - age: {{min: 18}}")
        return self

    @model_serializer(mode="wrap")
    def _omit_no_pgx(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # left out of dumps when unused, so cohorts written before it keep their digests
        data: dict[str, Any] = handler(self)
        if data.get("pgx") is None:
            data.pop("pgx", None)
        return data


class Group(SpecModel):
    """Criteria combined with ALL, ANY, AT_MOST n or AT_LEAST n."""

    type: Literal["all", "any", "at_most", "at_least"] = "all"
    count: int | None = Field(None, ge=0, description="n for at_most / at_least.")
    criteria: list[RuleItem] = Field(min_length=1)

    @model_validator(mode="after")
    def _count_given(self) -> Group:
        if self.type in ("at_most", "at_least") and self.count is None:
            raise ValueError(f"type {self.type} needs a count, e.g. type: {self.type}, count: 1")
        return self


class InclusionRule(Group):
    """A named group; the attrition shows the persons left after it."""

    name: str = Field(min_length=1)


class Exit(SpecModel):
    """When an episode ends (capped at the end of its observation period), and collapsing."""

    strategy: Literal["observation_end", "date_offset", "continuous_exposure"] = Field(
        "observation_end", description="observation_end | date_offset | continuous_exposure")
    date_field: Literal["start", "end"] = Field(
        "start", description="date_offset: offset from the entry event's start or end date.")
    offset_days: int = Field(0, description="Days added to the exit date.")
    concept_set: str | None = Field(
        None, description="continuous_exposure: the drug concept set whose exposure ends it.")
    domain: Domain = Field("DRUG", description="continuous_exposure: domain of the exposures.")
    gap_days: int = Field(30, ge=0, description="Persistence window: allowed gap in days.")
    days_supply_override: int | None = Field(
        None, ge=1, description="Use this many days per exposure instead of its end date.")
    censoring: list[Criterion] = Field(
        default_factory=list, description="Events that end an episode early.")
    era_pad_days: int | None = Field(
        None, ge=0, description="Collapse episodes less than this many days apart; "
        "null: keep episodes as they are.")

    @model_validator(mode="after")
    def _needs_drug(self) -> Exit:
        if self.strategy == "continuous_exposure" and self.concept_set is None:
            raise ValueError("strategy continuous_exposure needs concept_set, e.g. "
                             "exit: {strategy: continuous_exposure, concept_set: nsaids}")
        return self


class Entry(SpecModel):
    """Cohort entry: events of a concept set (or several criteria, any of which enters)."""

    concept_set: str | None = Field(None, description="Name of a concept set in concept_sets.")
    domain: Domain | None = Field(None, description="Domain; default: the concept set's.")
    first_only: bool = Field(True, description="Keep only each person's first entry event.")
    criteria: list[Criterion] = Field(
        default_factory=list, description="Alternative entry criteria (instead of concept_set).")
    limit: Literal["all", "first", "last"] = Field(
        "all", description="After the observation window: all, first or last event per person.")

    @model_validator(mode="after")
    def _one_form(self) -> Entry:
        if (self.concept_set is None) == (not self.criteria):
            raise ValueError("give concept_set or criteria, not both, e.g. "
                             "entry: {concept_set: asthma}")
        return self

    def all_criteria(self) -> list[Criterion]:
        """The entry criteria, the ``concept_set`` shorthand included."""
        if self.concept_set is not None:
            return [Criterion(concept_set=self.concept_set, domain=self.domain,
                              first_occurrence=self.first_only)]
        return list(self.criteria)


class TimeAtRisk(SpecModel):
    """Days relative to the index date (or the exit), both ends inclusive."""

    start_days: int = Field(1, description="First day at risk (1 = day after index).")
    end_days: int = Field(365, description="Last day at risk.")
    start_anchor: Literal["index", "exit"] = "index"
    end_anchor: Literal["index", "exit"] = "index"

    @model_validator(mode="after")
    def _ordered(self) -> TimeAtRisk:
        if self.start_anchor == self.end_anchor and self.end_days < self.start_days:
            raise ValueError(
                f"end_days ({self.end_days}) is before start_days ({self.start_days}); "
                "fix: time_at_risk: {start_days: 1, end_days: 365}"
            )
        return self


class PopulationSettings(SpecModel):
    """Who is dropped before the labels are counted (PLP's ``createStudyPopulationSettings``):
    the settings that go with a time at risk."""

    exclude_prior_outcome: bool = Field(
        False, description="Drop episodes with an outcome before the time at risk.")
    prior_outcome_lookback_days: int | None = Field(
        None, ge=1, description="Days before index searched for a prior outcome; null: all.")
    min_days_at_risk: int = Field(
        0, ge=0, description="Drop episodes observed fewer days at risk (both ends counted).")
    keep_outcomes_under_min: bool = Field(
        True, description="Keep episodes with an outcome even if under min_days_at_risk.")

    def population(self) -> dict[str, object]:
        """These settings alone, by name."""
        return {name: getattr(self, name) for name in PopulationSettings.model_fields}


class RiskWindow(TimeAtRisk, PopulationSettings):
    """A time at risk with the population settings that go with it (PLP's
    ``createStudyPopulationSettings``): who is dropped before the labels are counted."""


class Outcome(Criterion, PopulationSettings):
    """The prediction outcome: an event of a concept set inside the time at risk."""

    time_at_risk: TimeAtRisk = TimeAtRisk()

    def risk_window(self) -> RiskWindow:
        """Its time at risk with its population settings (a single-form study's one time
        at risk)."""
        return RiskWindow(**self.time_at_risk.model_dump(), **self.population())


class Cohort(SpecModel):
    """A cohort (entry, observation, inclusion rules, exit); in the single-analysis form
    (``cohort:``) also the outcome label.  A cohort of the library (``cohorts:``) has no
    outcome: outcomes and times at risk are named on their own and crossed by analyses."""

    entry: Entry
    prior_observation_days: int = Field(
        365, ge=0, description="Days of observation required before the index date.")
    post_observation_days: int = Field(
        0, ge=0, description="Days of observation required after the index date.")
    require_observation: bool = Field(
        True, description="Entry events must lie in an observation period (OHDSI always does).")
    inclusion_rules: list[InclusionRule] = Field(default_factory=list)
    limit: Literal["all", "first", "last"] = Field(
        "all", description="After the inclusion rules: all, first or last episode per person.")
    exit: Exit = Exit()
    outcome: Outcome | None = Field(
        None, description="The outcome label (single-analysis form `cohort:` only).")

    @model_validator(mode="after")
    def _exit_needs_observation(self) -> Cohort:
        if not self.require_observation and self.exit.strategy == "observation_end":
            raise ValueError("exit strategy observation_end needs require_observation: true; "
                             "fix: exit: {strategy: date_offset, date_field: end}")
        return self

    def concept_set_refs(self, where: str = "cohort") -> Iterator[tuple[str, str]]:
        """(field, concept set name) of every concept set the cohort uses; ``where`` is the
        cohort's own field (``cohort``, ``cohorts.<name>``)."""
        if self.entry.concept_set is not None:
            yield f"{where}.entry.concept_set", self.entry.concept_set
        for i, c in enumerate(self.entry.criteria):
            if c.concept_set is not None:
                yield f"{where}.entry.criteria.{i}.concept_set", c.concept_set
        for i, rule in enumerate(self.inclusion_rules):
            yield from _group_refs(rule, f"{where}.inclusion_rules.{i}")
        if self.exit.concept_set is not None:
            yield f"{where}.exit.concept_set", self.exit.concept_set
        for i, c in enumerate(self.exit.censoring):
            if c.concept_set is not None:
                yield f"{where}.exit.censoring.{i}.concept_set", c.concept_set
        if self.outcome is not None and self.outcome.concept_set is not None:
            yield f"{where}.outcome.concept_set", self.outcome.concept_set

    def pgx_criteria(self) -> list[PgxCriterion]:
        """Every pharmacogene criterion of the inclusion rules (nested groups too)."""
        return [c for rule in self.inclusion_rules for c in _group_pgx(rule)]

    def without_outcome(self) -> Cohort:
        """The cohort alone, its outcome label left out (what a cohort step builds)."""
        return self.model_copy(update={"outcome": None})

    @classmethod
    def of_events(cls, criterion: Criterion) -> Cohort:
        """The cohort of every event matching ``criterion``, observed or not: a concept-set
        outcome as a cohort of the library (OHDSI outcomes are cohorts).  Its start dates
        are the outcome dates."""
        return cls(entry=Entry(criteria=[criterion], first_only=False),
                   require_observation=False, prior_observation_days=0,
                   exit=Exit(strategy="date_offset", date_field="end"))


def _group_refs(group: Group, where: str) -> Iterator[tuple[str, str]]:
    for i, item in enumerate(group.criteria):
        here = f"{where}.criteria.{i}"
        if item.occurrence is not None and item.occurrence.concept_set is not None:
            yield f"{here}.occurrence.concept_set", item.occurrence.concept_set
        if item.washout is not None:
            yield f"{here}.washout.concept_set", item.washout.concept_set
        if item.group is not None:
            yield from _group_refs(item.group, f"{here}.group")


def _group_pgx(group: Group) -> Iterator[PgxCriterion]:
    for item in group.criteria:
        if item.pgx is not None:
            yield item.pgx
        if item.group is not None:
            yield from _group_pgx(item.group)


def genotyped_first(group: Group) -> bool:
    """Whether every episode that passes ``group`` has genotypes: a group of type ALL with
    a pharmacogene criterion among its own criteria.  Its attrition then shows the persons
    with genotypes first, as a step of its own."""
    return group.type == "all" and any(item.pgx is not None for item in group.criteria)


RuleItem.model_rebuild()

_TRUE, _FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n", ""}


def seed_path(seed: str, folder: Path | None = None) -> Path:
    """The CSV of a concept-set seed: a path to a ``.csv`` file (a relative one from
    ``folder``, the study file's folder, like the source path), or a name looked up in the
    repository's ``seeds/concept_sets``.

    >>> seed_path("gi_bleed").name
    'gi_bleed.csv'
    >>> seed_path("sets/asthma.csv", Path("/studies")).as_posix()
    '/studies/sets/asthma.csv'
    """
    if seed.endswith(".csv"):
        path = Path(seed)
        return path if path.is_absolute() or folder is None else Path(folder) / path
    here = Path(str(resources.files("cohortflow")))
    for root in (here, *here.parents):
        candidate = root / "seeds" / "concept_sets" / f"{seed}.csv"
        if candidate.is_file():
            return candidate
    raise ValueError(f"seed '{seed}': no seeds/concept_sets/{seed}.csv above {here}; fix: "
                     "give the name of a CSV in seeds/concept_sets or a path ending in .csv")


def load_seed(seed: str, folder: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Read a dbt-style concept-set seed: columns ``concept_id`` or ``code``, optional
    ``concept_name``, ``descendants`` (default true) and ``exclude`` (default false).

    UTF-8, with or without the byte-order mark spreadsheets write; a bad row is refused
    naming the file, its line and the column.
    """
    path = seed_path(seed, folder)
    if not path.is_file():
        raise ValueError(f"seed '{seed}': {path} not found; fix: give an existing CSV file "
                         "(a relative path is read from the study file's folder)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return _seed_rows(csv.DictReader(handle), path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); fix: save the CSV as "
                         "UTF-8") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: unreadable CSV ({exc}); fix: one header row, comma "
                         "separated") from None


def _seed_rows(reader: csv.DictReader[str], path: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"include": [], "exclude": []}
    for row in reader:
        line = reader.line_num
        ref: dict[str, Any] = {}
        concept_id, code = (row.get("concept_id") or "").strip(), (row.get("code") or "").strip()
        if concept_id:
            try:
                ref["concept_id"] = int(concept_id)
            except ValueError:
                raise ValueError(f"{path}:{line}: column concept_id is {concept_id!r}, not an "
                                 "integer; fix: an OMOP concept id such as 317009") from None
        elif code:
            ref["code"] = code
        else:
            raise ValueError(f"{path}:{line}: columns concept_id and code are both empty; "
                             "fix: fill one (header: concept_id,concept_name,descendants,"
                             "exclude)")
        flags = {}
        for column, default in (("descendants", True), ("exclude", False)):
            text = (row.get(column) or "").strip().lower()
            if text not in _TRUE | _FALSE:
                raise ValueError(f"{path}:{line}: column {column} is {text!r}; fix: true or "
                                 "false")
            flags[column] = default if text == "" else text in _TRUE
        ref["descendants"] = flags["descendants"]
        out["exclude" if flags["exclude"] else "include"].append(ref)
    return out
