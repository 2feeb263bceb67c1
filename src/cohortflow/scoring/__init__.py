"""Scoring with a model package, and monitoring its scoring runs for drift."""

from cohortflow.scoring._drift import (
    DEFAULT_THRESHOLDS,
    PSI_EPSILON,
    DriftError,
    Thresholds,
    drift,
    persons_with_codes,
    prospective,
    psi,
    reference_profile,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PSI_EPSILON",
    "DriftError",
    "Thresholds",
    "drift",
    "persons_with_codes",
    "prospective",
    "psi",
    "reference_profile",
]
