"""The de-identification policy of a study's data mart (``cohortflow export-mart``).

The defaults are the safe choice: year-only births, ages over 89 top-coded, dates shifted
per person by up to a year, every free-text and ``*_source_value`` column dropped, ZIP
codes cut to three digits, and k-anonymity (k = the study's ``min_cell_count``) over the
usual quasi-identifiers.  A policy that would leave one of the HIPAA Safe Harbor
identifiers untouched is refused, naming it.

>>> MartPolicy().date_shift_days, MartPolicy().birth, MartPolicy().max_suppression
(365, 'year', 0.05)
>>> MartPolicy.model_validate({"keep_columns": ["person.person_source_value"]})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for MartPolicy
...
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from cohortflow.study._base import SpecModel

QUASI_IDENTIFIERS = ("year_of_birth", "gender_concept_id", "race_concept_id",
                     "ethnicity_concept_id", "zip3", "state", "month_of_birth")
"""The person attributes a k-anonymity step may treat as quasi-identifiers (``zip3`` and
``state`` are the person's generalised location)."""

DEFAULT_QUASI_IDENTIFIERS = ("year_of_birth", "gender_concept_id", "race_concept_id",
                             "ethnicity_concept_id", "zip3")

MART_TABLES = ("person", "observation_period", "visit_occurrence", "condition_occurrence",
               "drug_exposure", "procedure_occurrence", "measurement", "observation", "death",
               "location", "concept", "concept_ancestor")
"""The tables a mart holds (those the source has)."""

# Columns whose content is a Safe Harbor identifier whatever the data: keeping one is refused.
SAFE_HARBOR_COLUMNS = {
    "person.person_source_value": "medical record numbers (the source's person identifier)",
    "person.birth_datetime": "all elements of dates except the year (the birth date)",
    "person.day_of_birth": "all elements of dates except the year (the birth day)",
    "person.month_of_birth": "all elements of dates except the year (the birth month; use "
                             "birth: year_month to keep it, shifted)",
    "location.zip": "geographic subdivisions smaller than a state (the full ZIP code; the "
                    "mart keeps its first three digits as zip3)",
    "location.address_1": "geographic subdivisions smaller than a state (street address)",
    "location.address_2": "geographic subdivisions smaller than a state (street address)",
    "location.city": "geographic subdivisions smaller than a state (city)",
    "location.county": "geographic subdivisions smaller than a state (county)",
    "location.latitude": "geographic subdivisions smaller than a state (geocode)",
    "location.longitude": "geographic subdivisions smaller than a state (geocode)",
    "location.location_source_value": "geographic subdivisions smaller than a state (the "
                                       "source's address text)",
}
MAX_TOP_CODE_AGE = 89
"""Safe Harbor aggregates every age over 89 into one category."""


def _refused(message: str) -> PydanticCustomError:
    """A policy refused, in the check's own words (no "Value error" prefix)."""
    return PydanticCustomError("mart_policy", message.replace("{", "(").replace("}", ")"))


class MartPolicy(SpecModel):
    """How ``cohortflow export-mart`` de-identifies a cohort's OMOP CDM subset.

    Validated once, with the study; the export refuses to run without a pseudonym key or
    with ``min_cell_count`` below 2 (its k).
    """

    quasi_identifiers: list[str] = Field(
        list(DEFAULT_QUASI_IDENTIFIERS),
        description="Person attributes an outsider may know and link on; the mart is "
                    "k-anonymous over them (k = min_cell_count). One of: "
                    + ", ".join(QUASI_IDENTIFIERS) + ".")
    date_shift_days: int = Field(
        365, description="Largest shift, in days, of a person's dates (each person gets one "
                         "keyed, non-zero shift in [-d, d]; intervals are kept). At least 1.")
    birth: str = Field(
        "year", description="What is kept of the birth date: year (month and day dropped) or "
                            "year_month (the shifted month kept too).")
    keep_columns: list[str] = Field(
        [], description="Free-text or *_source_value columns to keep, as table.column "
                        "(e.g. condition_occurrence.condition_source_value); dropped otherwise.")
    max_suppression: float = Field(
        0.05, ge=0.0, le=1.0,
        description="Largest share of persons whose quasi-identifiers may be suppressed; the "
                    "least generalisation that needs no more is chosen.")
    top_code_age: int = Field(
        MAX_TOP_CODE_AGE, ge=0,
        description="Ages above this are top-coded: year_of_birth is raised so that nobody "
                    "appears older than top_code_age + 1 at their last date. At most 89.")

    @field_validator("quasi_identifiers")
    @classmethod
    def _known_quasi_identifiers(cls, value: list[str]) -> list[str]:
        unknown = [q for q in value if q not in QUASI_IDENTIFIERS]
        if unknown:
            raise _refused(
                f"unknown quasi-identifier column(s) {', '.join(unknown)}; known: "
                f"{', '.join(QUASI_IDENTIFIERS)}; fix: remove {', '.join(unknown)} from "
                "quasi_identifiers, or name a known column")
        if len(set(value)) != len(value):
            raise _refused("a quasi-identifier is listed twice; fix: list each once")
        return value

    @field_validator("date_shift_days")
    @classmethod
    def _shifted(cls, value: int) -> int:
        if value < 1:
            raise _refused(
                "Safe Harbor identifier 'all elements of dates (except year)' left untouched: "
                f"date_shift_days is {value}, so dates would keep their day; fix: "
                "date_shift_days: 365")
        return value

    @field_validator("birth")
    @classmethod
    def _birth(cls, value: str) -> str:
        if value not in ("year", "year_month"):
            raise _refused(
                f"birth: {value!r} would keep the birth date (Safe Harbor identifier 'all "
                "elements of dates (except year)'); fix: birth: year (or year_month, the "
                "shifted month kept too)" if value == "full" else
                f"birth: {value!r} is not one of year, year_month; fix: birth: year")
        return value

    @field_validator("keep_columns")
    @classmethod
    def _no_identifier_kept(cls, value: list[str]) -> list[str]:
        for column in value:
            table, dot, name = column.partition(".")
            if not dot or not table or not name:
                raise _refused(f"keep_columns entry {column!r} is not table.column; fix: "
                                 "e.g. condition_occurrence.condition_source_value")
            if table not in MART_TABLES:
                raise _refused(f"keep_columns entry {column!r}: no table {table} in a mart; fix: "
                               "name one of its tables "
                               f"({', '.join(MART_TABLES)})")
            what = SAFE_HARBOR_COLUMNS.get(column.lower())
            if what is not None:
                raise _refused(
                    f"keep_columns entry {column!r} would leave a Safe Harbor identifier "
                    f"untouched: {what}; fix: remove it from keep_columns")
            if name.endswith("_id") and not name.endswith("concept_id"):
                raise _refused(
                    f"keep_columns entry {column!r} is an id, which the mart pseudonymises, "
                    "renumbers or nulls (Safe Harbor identifier 'any other unique identifying "
                    "number'); fix: remove it from keep_columns")
        return value

    @field_validator("top_code_age")
    @classmethod
    def _top_coded(cls, value: int) -> int:
        if value > MAX_TOP_CODE_AGE:
            raise _refused(
                f"top_code_age {value} would show ages over {MAX_TOP_CODE_AGE} (Safe Harbor "
                f"identifier 'ages over 89'); fix: top_code_age: {MAX_TOP_CODE_AGE}")
        return value
