"""``cohortflow verify``: a manifest's study rerun in a scratch directory, every output
compared with the recorded one."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from cohortflow import manifest
from cohortflow.errors import CohortflowError
from cohortflow.layout import Layout
from cohortflow.runner._command import snakemake_command, workflow_root
from cohortflow.study import load_study


def verify(manifest_path: Path, profile: str | None = None, scratch: Path | None = None,
           keep_scratch: bool = False
           ) -> tuple[list[manifest.OutputVerdict], list[str], Path | None]:
    """Rerun the study of a manifest into a scratch directory and compare every output.

    Returns the verdicts, the recorded causes of any difference, and the rerun's manifest
    (None once removed).  A temporary scratch directory, which this function creates, is
    removed after the comparison unless ``keep_scratch``; one named by ``scratch`` is the
    caller's and is kept, and so is any scratch of a rerun that failed (its log is there).
    """
    recorded = manifest.read(manifest_path)
    study = Path(recorded["study"]["path"])
    if not study.is_file():
        raise CohortflowError(
            f"{manifest_path}: the study file {study} it records no longer exists; fix: "
            "restore it at that path (its sha256 is in the manifest) and verify again"
        )
    profiles = workflow_root() / "profiles"
    chosen = profile or recorded.get("profile", "laptop")
    if not (profiles / chosen / "config.yaml").is_file():
        chosen = "laptop"
    own_scratch = scratch is None
    scratch = Path(scratch or tempfile.mkdtemp(prefix="cohortflow-verify-")).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    with (scratch / "verify.log").open("w") as log:
        code = subprocess.call(
            snakemake_command(study, chosen, scratch / "results", ["--directory", str(scratch)]),
            stdout=log, stderr=subprocess.STDOUT,
        )
    rerun_path = Layout.of(scratch / "results", load_study(study).name).manifest
    if code != 0 or not rerun_path.is_file():
        raise CohortflowError(
            f"{manifest_path}: the rerun in {scratch} failed (exit {code}); its log is "
            f"{scratch / 'verify.log'}"
        )
    findings, causes = manifest.compare(recorded, manifest.read(rerun_path))
    if own_scratch and not keep_scratch:
        shutil.rmtree(scratch)
        return findings, causes, None
    return findings, causes, rerun_path
