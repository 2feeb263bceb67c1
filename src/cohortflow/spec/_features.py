"""The features of a study: windows, aggregations, demographics, sequences."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from cohortflow.spec._base import SpecModel

ALL_CODES = "*"
"""In ``domains``: every code of the event store."""
Demographic = Literal["age", "sex", "race", "ethnicity"]
Aggregation = Literal[
    "count", "present", "days_since_last", "first", "last", "min", "max", "mean", "sum",
    "value_count",
]
VALUE_AGGREGATIONS: tuple[Aggregation, ...] = (
    "first", "last", "min", "max", "mean", "sum", "value_count"
)
"""Aggregations of numeric values; only codes that carry a value get them."""
AGGREGATION_ORDER: tuple[Aggregation, ...] = (
    "count", "present", "days_since_last", "first", "last", "min", "max", "mean", "sum",
    "value_count",
)
"""The order of the aggregations along the feature axis, whatever the study lists."""

_DEFAULT_DOMAINS: list[str] = ["CONDITION", "DRUG", "PROCEDURE", "MEASUREMENT"]
_DEFAULT_DEMOGRAPHICS: list[Demographic] = ["age", "sex"]
_DEFAULT_AGGREGATIONS: list[Aggregation] = ["count", "mean"]
_SEQUENCE_AGGREGATIONS: list[Aggregation] = ["count"]


class Window(SpecModel):
    """Days relative to the index date, both ends inclusive, in whole calendar days.

    ``{start_days: -365, end_days: -31}`` covers the year before index except its last month;
    ``start_days`` left out means all history.  Windows never reach past the index day.
    """

    start_days: int | None = Field(
        None, le=0, description="First day (e.g. -365); left out = all history."
    )
    end_days: int = Field(0, le=0, description="Last day; 0 is the index day.")

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start_days is not None and self.start_days > self.end_days:
            raise ValueError(
                f"start_days ({self.start_days}) is after end_days ({self.end_days}); "
                "fix: windows: [{start_days: -365, end_days: -31}]"
            )
        return self

    @property
    def label(self) -> str:
        """The window's name on the feature axis: ``30d``, ``all`` or ``-365d..-31d``.

        >>> Window(start_days=-30).label, Window().label, Window(start_days=-9, end_days=-2).label
        ('30d', 'all', '-9d..-2d')
        """
        if self.end_days == 0:
            return "all" if self.start_days is None else f"{-self.start_days}d"
        start = "all" if self.start_days is None else f"{self.start_days}d"
        return f"{start}..{self.end_days}d"


class Sequence(SpecModel):
    """A time-binned tensor, subject × time_bin × feature, for sequence models.

    Bins are ``bin_days`` whole days each, oldest first; the last bin ends on the index day.
    """

    bins: int = Field(12, ge=1, le=1000, description="Number of time bins.")
    bin_days: int = Field(30, ge=1, description="Days per bin (30 ≈ monthly).")
    aggregations: list[Aggregation] = Field(
        default_factory=lambda: list(_SEQUENCE_AGGREGATIONS), min_length=1,
        description="Aggregations per (code, bin).",
    )


class Features(SpecModel):
    """Per-code aggregates in lookback windows, plus demographics."""

    windows_days: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [30, 365],
        description="Lookback windows in days; a window of d days covers [index - d, index].",
    )
    windows: list[Window] = Field(
        default_factory=list,
        description="More windows as [start_days, end_days] relative to the index "
        "(start_days left out = all history).",
    )
    aggregations: list[Aggregation] = Field(
        default_factory=lambda: list(_DEFAULT_AGGREGATIONS), min_length=1,
        description="Aggregations per (code, window); value aggregations apply to codes with "
        "numeric values.",
    )
    domains: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_DOMAINS),
        description="Code prefixes whose codes become features: an entry takes every code "
        "equal to it or starting with it and a '/' (CONDITION takes CONDITION//201826, SNOMED "
        "takes SNOMED/74474003, LAB//50912 takes LAB//50912//mg/dL, MEDS_DEATH takes "
        "MEDS_DEATH); any prefix of the event store works (OBSERVATION_PERIOD, DRUG_ERA, "
        "ICD10CM...); '*' = every code.",
    )
    codes: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="More event-store codes that become features, each by its exact code, "
        "e.g. [MEDS_DEATH, LAB//potassium].",
    )
    concept_sets: list[str] = Field(
        default_factory=list,
        description="Concept sets (names in concept_sets) that each become one feature code "
        "CONCEPT_SET//<name>.",
    )
    rollup: Literal["none", "ancestors"] = Field(
        "none", description="'ancestors': an event also counts for every ancestor of its code "
        "(codes.parquet parent_codes).",
    )
    min_code_subjects: int = Field(
        0, ge=0, description="Keep a code only if at least this many training-split subjects "
        "have it in a window (counted on the train split only, so nothing leaks).",
    )
    demographics: list[Demographic] = Field(
        default_factory=lambda: list(_DEFAULT_DEMOGRAPHICS), description="Demographic features."
    )
    sequence: Sequence | None = Field(None, description="Also build a time-binned tensor.")
    window_end: Literal["index_day", "before_index_time"] = Field(
        "index_day",
        description="Where windows reaching the index day end (and the last sequence bin): "
        "index_day = the whole index day counts, any hour (OHDSI); before_index_time = only "
        "events strictly before index_time count.",
    )

    @field_validator("domains")
    @classmethod
    def _domain_form(cls, domains: list[str]) -> list[str]:
        for domain in domains:
            if domain != ALL_CODES and (not domain.strip() or domain != domain.strip()
                                        or domain.endswith("/")):
                raise ValueError(
                    f"{domain!r} is not a code prefix: give the leading part of codes up to "
                    f"(not including) a '/', e.g. CONDITION, SNOMED or LAB//50912, a whole "
                    f"code such as MEDS_DEATH, or '{ALL_CODES}' for every code; fix: "
                    "domains: [CONDITION, MEDS_DEATH]"
                )
        return domains

    @model_validator(mode="after")
    def _something_to_compute(self) -> Features:
        labels = [w.label for w in self.all_windows()]
        if not labels and (self.domains or self.codes or self.concept_sets):
            raise ValueError(
                "no window: give windows_days or windows; fix: windows_days: [30, 365]"
            )
        if len(set(labels)) != len(labels):
            raise ValueError(f"windows repeat: {labels}; fix: list each window once")
        return self

    def all_windows(self) -> list[Window]:
        """``windows_days`` (shortest first) as windows, then ``windows`` in study order.

        >>> [w.label for w in Features(windows_days=[365, 7], windows=[{}]).all_windows()]
        ['7d', '365d', 'all']
        """
        days = [Window(start_days=-d) for d in sorted(self.windows_days)]
        return days + list(self.windows)
