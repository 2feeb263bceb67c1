"""A module imported on the first use of one of its names: how the workflow's rule files
bind the step modules.

The steps' code (scikit-learn, Dask, xarray, matplotlib behind it) is needed only by the job
that runs a step, yet every Snakemake process parses the workflow, every SLURM job included;
a parse should import only what planning the DAG needs.  Binding ``cohorts =
LazyModule("cohortflow.cohorts")`` instead of importing it keeps the rules' ``run:`` blocks
word for word (Snakemake's ``code`` rerun trigger compares their text).
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Module ``name``, imported when one of its attributes is first read.

    importlib's module locks make a first use from several job threads at once safe.

    >>> json = LazyModule("json")
    >>> json.dumps([1])
    '[1]'
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.name), attr)

    def __repr__(self) -> str:
        return f"LazyModule({self.name!r})"
