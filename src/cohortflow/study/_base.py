"""Shared base of the study models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpecModel(BaseModel):
    """A frozen model that refuses unknown keys (so typos are caught, with a hint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
