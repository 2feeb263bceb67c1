"""The one error family cohortflow raises for bad input.

Every message names what was received, what was expected and how to fix it, so the
CLI can print it as-is and exit non-zero instead of showing a traceback.  Every class lives
here, each module re-exporting its own: ``cohortflow run`` tells a step that refused its input
from one that crashed by the error's name, and prints the message alone (exit 2).
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


class PermissionsError(CohortflowError):
    """A results directory is open to more users than the study allows."""


class CirceError(StudySpecError):
    """A Circe cohort definition uses a construct cohortflow does not translate."""


class PackageError(CohortflowError):
    """A model package cannot be made from a study, or is tampered with or incomplete."""


class ScoringError(CohortflowError):
    """An extract cannot be scored with a package, or a scoring run's input is wrong."""


class DriftError(CohortflowError):
    """A scoring run cannot be compared with its model's reference profile."""


class PgxSeedError(CohortflowError):
    """A pharmacogene seed file is missing, or one of its rows is malformed.

    >>> str(PgxSeedError("alleles.csv:3: field 'function' ..."))
    "alleles.csv:3: field 'function' ..."
    """


class PgxGenotypeError(CohortflowError):
    """The genotype dataset lacks a VCF Zarr variable or has an unexpected shape."""
