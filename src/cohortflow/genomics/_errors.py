"""The one error of :mod:`cohortflow.genomics` (a :class:`CohortflowError`: the CLI prints
its message and exits with status 2)."""

from cohortflow.errors import CohortflowError


class GenomicsError(CohortflowError):
    """Genotype input (VCF, VCF Zarr store, omics matrix or linkage table) that cannot be
    used."""
