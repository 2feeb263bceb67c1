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
from cohortflow.scoring._monitor_html import render as monitor_page

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PSI_EPSILON",
    "DriftError",
    "Thresholds",
    "drift",
    "monitor_page",
    "persons_with_codes",
    "prospective",
    "psi",
    "reference_profile",
]
