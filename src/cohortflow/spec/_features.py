"""The features of a study."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from cohortflow.spec._base import SpecModel

FeatureDomain = Literal["CONDITION", "DRUG", "PROCEDURE", "MEASUREMENT", "VISIT"]
Demographic = Literal["age", "sex"]
_DEFAULT_DOMAINS: list[FeatureDomain] = ["CONDITION", "DRUG", "PROCEDURE", "MEASUREMENT"]
_DEFAULT_DEMOGRAPHICS: list[Demographic] = ["age", "sex"]


class Features(SpecModel):
    """Per-code aggregates in lookback windows, plus demographics."""

    windows_days: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [30, 365],
        min_length=1,
        description="Lookback windows in days; a window of d days covers [index - d, index].",
    )
    domains: list[FeatureDomain] = Field(
        default_factory=lambda: list(_DEFAULT_DOMAINS),
        min_length=1,
        description="Domains whose codes become features.",
    )
    demographics: list[Demographic] = Field(
        default_factory=lambda: list(_DEFAULT_DEMOGRAPHICS), description="Demographic features."
    )
