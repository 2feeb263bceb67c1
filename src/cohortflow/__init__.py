"""cohortflow: cohort studies on OMOP CDM warehouses, on a laptop or a SLURM cluster."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
