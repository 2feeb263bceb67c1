"""Planning a study imports no step code: every Snakemake process parses the workflow (each
SLURM job too), so what a parse imports is paid by every job.  The steps' libraries load in
the job that runs a step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cohortflow import runner

# Libraries only a step needs: model training and metrics, the feature tensor, figures.
STEP_LIBRARIES = ["sklearn", "scipy", "dask", "distributed", "xarray", "zarr", "matplotlib",
                  "duckdb", "lightgbm"]

# Runs Snakemake's command line in this process, then prints which step libraries it loaded.
PROBE = """
import json, runpy, sys
sys.argv = ["snakemake", *sys.argv[1:]]
try:
    runpy.run_module("snakemake", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps([m for m in {libraries} if m in sys.modules]))
"""


def test_a_dry_run_of_the_demo_imports_no_step_library(tmp_path: Path) -> None:
    command = runner.snakemake_command(None, "laptop", tmp_path / "results",
                                       ["--dry-run", "--quiet", "all"])
    probe = PROBE.format(libraries=STEP_LIBRARIES)
    done = subprocess.run([sys.executable, "-c", probe, *command[3:]], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_models_package_loads_its_training_code_on_first_use() -> None:
    code = ("import sys; from cohortflow import models; "
            "before = 'sklearn' in sys.modules; models.train; "
            "print(before, 'sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["False", "True"]
