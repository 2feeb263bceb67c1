"""The one error of :mod:`cohortflow.genomics` (a :class:`CohortflowError`: the CLI prints
its message and exits with status 2; a failed workflow step's console line shows its
message alone).  It lives in :mod:`cohortflow.errors`, which ``cohortflow run`` reads to
tell cohortflow's errors from others without importing the genomics libraries."""

from cohortflow.errors import GenomicsError as GenomicsError  # re-exported
