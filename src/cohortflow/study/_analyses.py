"""Many questions over one warehouse: the cohort library, the outcomes, the times at risk
and the analyses that cross them (OHDSI PatientLevelPrediction's model designs).

A study names its cohorts once (``cohorts:``), its outcomes once (``outcomes:``: a concept
set, or a cohort of the library) and its times at risk once (``times_at_risk:``), then lists
``analyses:``, each a cross product of targets × outcomes × times at risk.  Every piece is
computed once and reused: a cohort by every analysis that uses it, as target or outcome; a
target's feature tensor by every outcome and time at risk.

>>> grid = AnalysisGrid.model_validate({"targets": ["a", "b"], "outcome": "x",
...                                     "times_at_risk": ["1y"]})
>>> [analysis_id(t, o, r) for t, o, r in grid.designs()]
['a__x__1y', 'b__x__1y']
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, model_validator

from cohortflow.study._base import SpecModel
from cohortflow.study._cohort import Criterion, RiskWindow

__all__ = ["RiskWindow"]  # defined beside the outcome it also describes

SEPARATOR = "__"
"""Joins an analysis id's parts: ``<target>__<outcome>__<time at risk>``."""

NAME_PART = r"[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*"
"""A :data:`Name` inside a longer string: the rules' wildcard constraint for a cohort."""
NAME = rf"^{NAME_PART}$"
"""The pattern of a :data:`Name`."""
ANALYSIS_ID = SEPARATOR.join([NAME_PART] * 3)
"""An analysis id inside a longer string: the rules' wildcard constraint for an analysis."""
Name = Annotated[str, Field(pattern=NAME,
                            description="Letters, digits, '-' and single '_' inside "
                                        "('__' joins analysis ids).")]
"""The name of a cohort, an outcome or a time at risk: a path part and part of an analysis
id, so letters, digits, ``-`` and single ``_``."""


def analysis_id(target: str, outcome: str, time_at_risk: str) -> str:
    """The id of one (target, outcome, time at risk): its folder and its wildcard.

    >>> analysis_id("asthma", "exacerbation", "1y")
    'asthma__exacerbation__1y'
    """
    return SEPARATOR.join((target, outcome, time_at_risk))


class OutcomeSpec(Criterion):
    """An outcome: events of a concept set (the ``Criterion`` fields), or a cohort of the
    library (``cohort: NAME``; its entry dates are the outcome dates)."""

    cohort: str | None = Field(None, description="A cohort of `cohorts:` whose start dates "
                                                 "are the outcome (instead of a concept set).")

    @model_validator(mode="before")
    @classmethod
    def _cohort_needs_no_concepts(cls, data: Any) -> Any:
        # a cohort outcome has no concept set; mark it so the Criterion check passes
        if isinstance(data, dict) and data.get("cohort") is not None:
            if data.get("concept_set") is not None:
                raise ValueError("give concept_set or cohort, not both, e.g. "
                                 "{cohort: er_visit}")
            return {**data, "domain": data.get("domain", "DEATH")}
        return data

    @model_validator(mode="after")
    def _cohort_alone(self) -> OutcomeSpec:
        if self.cohort is not None and (self.value is not None or self.units is not None
                                        or self.first_occurrence):
            raise ValueError("a cohort outcome takes no value, units or first_occurrence; "
                             "fix: put them in the cohort's entry")
        return self

    def criterion(self) -> Criterion:
        """The concept-set outcome as an event criterion."""
        return Criterion(concept_set=self.concept_set, domain=self.domain,
                         first_occurrence=self.first_occurrence, value=self.value,
                         units=self.units)


def _names(one: str | None, many: list[str]) -> list[str]:
    return ([one] if one is not None else []) + list(many)


class Matching(SpecModel):
    """Matched case-control sampling of an analysis (a rare outcome): each case (a
    label-true row) gets up to ``controls`` label-false rows of the same analysis, each used
    at most once, that match it on every constraint given (``null``: not matched on it).

    Ages are in years of 365.25 days from the birth (``MEDS_BIRTH``) to the index; the index
    date is the episode's start day; the observation length is the days of observation
    before the index inside the observation period containing it (index day minus the
    period's start).  A row missing a value it is matched on has no match.  The draw is
    fixed by the study seed and the analysis id."""

    controls: int = Field(4, ge=1, description="Controls per case (1:k), at least 1.")
    sex: bool = Field(True, description="Match exactly on sex (the GENDER code).")
    age_years: float | None = Field(
        1.0, ge=0, description="Largest |age at index difference| in years (365.25 days); "
                               "null: not matched on age.")
    index_days: int | None = Field(
        90, ge=0, description="Largest |index date difference| in days; null: not matched "
                              "on the index date.")
    observation_days: int | None = Field(
        365, ge=0, description="Largest |difference| in days of prior observation at the "
                               "index (days of observation before the index inside the "
                               "observation period containing it); null: not matched on it.")


_ONE = {"targets": "target", "outcomes": "outcome", "times_at_risk": "time_at_risk"}
"""Each axis's one-name key."""


class AnalysisGrid(SpecModel):
    """Targets × outcomes × times at risk, each given as one name (``target: a``) or a list
    (``targets: [a, b]``); an explicit analysis is a grid of one."""

    target: str | None = None
    targets: list[str] = Field([], description="Target cohorts, by name in cohorts.")
    outcome: str | None = None
    outcomes: list[str] = Field([], description="Outcomes, by name in outcomes.")
    time_at_risk: str | None = None
    times_at_risk: list[str] = Field([], description="Times at risk, by name in "
                                                     "times_at_risk.")
    matching: Matching | None = Field(
        None, description="Matched case-control sampling of every analysis of this entry "
                          "(rare outcomes): the models, sweep and report use the matched "
                          "rows; none: every labelled row.")

    @model_validator(mode="after")
    def _each_axis_given(self) -> AnalysisGrid:
        for one, many in (("target", "targets"), ("outcome", "outcomes"),
                          ("time_at_risk", "times_at_risk")):
            if not _names(getattr(self, one), getattr(self, many)):
                raise ValueError(f"give {one} or {many}, e.g. {many}: [...]")
        return self

    def axes(self) -> dict[str, list[str]]:
        """Each axis's names, by the library it names (cohorts, outcomes, times_at_risk)."""
        return {"targets": _names(self.target, self.targets),
                "outcomes": _names(self.outcome, self.outcomes),
                "times_at_risk": _names(self.time_at_risk, self.times_at_risk)}

    def place(self, axis: str, index: int) -> tuple[str | int, ...]:
        """Where the ``index``-th name of ``axis`` (as :meth:`axes` lists them) is written:
        the one-name key comes first, then the list's items.

        >>> AnalysisGrid(target="a", targets=["b"], outcome="x", time_at_risk="r").place(
        ...     "targets", 1)
        ('targets', 0)
        """
        one = _ONE[axis]
        if getattr(self, one) is None:
            return (axis, index)
        return (one,) if index == 0 else (axis, index - 1)

    def designs(self) -> list[tuple[str, str, str]]:
        """(target, outcome, time at risk) of every point of the grid, in spec order."""
        axes = self.axes()
        return list(itertools.product(axes["targets"], axes["outcomes"],
                                      axes["times_at_risk"]))


@dataclass(frozen=True)
class Analysis:
    """One prediction question: a target cohort, an outcome, a time at risk.

    ``outcome_cohort`` is the library cohort whose rows are the outcome dates (a concept-set
    outcome is a cohort of its own, named after the outcome)."""

    id: str
    target: str
    outcome: str
    time_at_risk: str
    outcome_cohort: str
    matching: Matching | None = None
    """The grid's matched case-control sampling, or None (every labelled row)."""
