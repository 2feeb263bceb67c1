"""The one error family cohortflow raises for bad input.

Every message names what was received, what was expected and how to fix it, so the
CLI can print it as-is and exit non-zero instead of showing a traceback.
"""

from __future__ import annotations


class CohortflowError(ValueError):
    """Base class of every error caused by input the user can fix.

    >>> str(CohortflowError("study.yaml: field 'seed' must be an integer; fix: seed: 42"))
    "study.yaml: field 'seed' must be an integer; fix: seed: 42"
    """


class StudySpecError(CohortflowError):
    """The study file does not parse or does not validate."""


class SourceError(CohortflowError):
    """An OMOP CDM or MEDS source is missing a table, a column, or holds bad values."""


class StoreError(CohortflowError):
    """An event store or feature store is missing, corrupt, or half-written."""


class GenomicsError(CohortflowError):
    """Genotype input (VCF, VCF Zarr store, omics matrix or linkage table) that cannot be
    used (raised by :mod:`cohortflow.genomics`; defined here so that a workflow step's
    genomics error is shown as its message alone, like every error of this module)."""
