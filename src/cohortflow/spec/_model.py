"""The prediction model of a study."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cohortflow.spec._base import SpecModel


class Model(SpecModel):
    """The prediction model."""

    family: Literal["logistic_l2"] = Field("logistic_l2", description="Model family.")
    C: float = Field(1.0, gt=0, description="Inverse regularisation strength.")
