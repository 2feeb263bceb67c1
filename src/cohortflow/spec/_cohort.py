"""Concept sets, the target cohort and the outcome."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cohortflow.spec._base import SpecModel


class ConceptRef(SpecModel):
    """One concept of a concept set; descendants come from the vocabulary hierarchy."""

    concept_id: int = Field(description="OMOP concept_id, e.g. 317009 (Asthma).")
    descendants: bool = Field(True, description="Also match every descendant concept.")


class ConceptSet(SpecModel):
    """A named set of concepts, optionally restricted to one OMOP domain."""

    include: list[ConceptRef] = Field(min_length=1, description="Concepts in the set.")
    domain: Literal["CONDITION", "DRUG", "PROCEDURE", "MEASUREMENT", "OBSERVATION", "VISIT"] = (
        Field("CONDITION", description="OMOP domain the concepts are looked up in.")
    )


class Entry(SpecModel):
    """Cohort entry: an occurrence of a concept set."""

    concept_set: str = Field(description="Name of a concept set in concept_sets.")
    first_only: bool = Field(True, description="Keep only each person's first entry event.")


class TimeAtRisk(SpecModel):
    """Days relative to the index date, both ends inclusive."""

    start_days: int = Field(1, description="First day at risk (1 = day after index).")
    end_days: int = Field(365, description="Last day at risk.")

    @model_validator(mode="after")
    def _ordered(self) -> TimeAtRisk:
        if self.end_days < self.start_days:
            raise ValueError(
                f"end_days ({self.end_days}) is before start_days ({self.start_days}); "
                "fix: time_at_risk: {start_days: 1, end_days: 365}"
            )
        return self


class Outcome(SpecModel):
    """The prediction outcome: an occurrence of a concept set inside the time at risk."""

    concept_set: str = Field(description="Name of a concept set in concept_sets.")
    time_at_risk: TimeAtRisk = TimeAtRisk()


class Cohort(SpecModel):
    """Target cohort and outcome."""

    entry: Entry
    prior_observation_days: int = Field(
        365, ge=0, description="Days of observation required before the index date."
    )
    outcome: Outcome
