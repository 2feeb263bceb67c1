"""Locating the workflow (Snakefile, profiles) and running it with Snakemake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cohortflow.errors import CohortflowError
from cohortflow.spec import demo_study_path, load_study


def workflow_root() -> Path:
    """The directory holding the Snakefile and profiles/: this checkout of cohortflow."""
    for root in Path(__file__).resolve().parents:
        if (root / "Snakefile").is_file() and (root / "profiles").is_dir():
            return root
    raise CohortflowError(
        "the cohortflow workflow (Snakefile, profiles/) was not found next to the package; "
        "fix: install cohortflow from its repository with `pip install -e .`"
    )


def snakemake_command(study: Path | None, profile: str, results: Path,
                      extra: list[str]) -> list[str]:
    """The Snakemake command line for a study under a profile."""
    root = workflow_root()
    profile_dir = root / "profiles" / profile
    if not (profile_dir / "config.yaml").is_file():
        known = sorted(p.name for p in (root / "profiles").iterdir() if p.is_dir())
        raise CohortflowError(
            f"profile '{profile}' not found in {root / 'profiles'}; fix: one of {', '.join(known)}"
        )
    study_path = (study or demo_study_path()).resolve()
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(root / "Snakefile"),
        "--workflow-profile", str(profile_dir),
        # --config replaces the profile's config list, so the profile name is repeated here.
        "--config", f"study={study_path}", f"results={results.resolve()}", f"profile={profile}",
        *extra,
    ]


def run_workflow(study: Path | None, profile: str, results: Path, extra: list[str]) -> int:
    """Validate the study, then run Snakemake; returns its exit status."""
    load_study(study)  # one clear message for a bad study, before Snakemake starts
    return subprocess.call(snakemake_command(study, profile, results, extra))
