"""Shared fixtures: tiny synthetic data, an event store, and the real SLURM test cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cohortflow import events, manifest, omop, steps, synth
from cohortflow.spec import Study, demo_study_path, load_study
from tests.harness.slurm import slurm_cluster  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parents[1]

# Every run exports pseudonymous predictions; the suite's runs (subprocesses included) share
# one key.  Tests of the missing-key message remove it themselves.
PSEUDONYM_KEY = "cohortflow-test-suite-key"
os.environ.setdefault("COHORTFLOW_PSEUDONYM_KEY", PSEUDONYM_KEY)


@pytest.fixture(scope="session")
def synth_omop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic OMOP CDM (Parquet directory)."""
    out = tmp_path_factory.mktemp("omop") / "cdm"
    synth.generate(2500, seed=3, out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def event_store(synth_omop: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The event store ingested from ``synth_omop`` in 3 shards."""
    out = tmp_path_factory.mktemp("store") / "events"
    omop.ingest(omop.open_source(synth_omop), out, shards=3)
    return out


def build_cohorts(study_path: Path, store: Path, cohort_dir: Path) -> Study:
    """Cohort tables of every shard of ``store`` for a study file; returns the study."""
    study = load_study(study_path)
    for shard in events.list_shards(store):
        steps.cohort_shard(study, store, shard, cohort_dir / "shards" / f"{shard}.parquet",
                           cohort_dir / "shards" / f"{shard}.attrition.json")
    return study


def write_study(path: Path, **changes: object) -> Path:
    """The demo study with top-level or dotted-key changes, written to ``path``."""
    raw = yaml.safe_load(demo_study_path().read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


PERSONS = 20_000  # enough held-out persons for a stable AUROC; about a minute per run


def digests(results: Path) -> dict[str, str]:
    """Checksums of the cohort tables and the feature tensor of a study's results."""
    return {
        **{f"cohort/{k}": v for k, v in manifest.tree_digests(results / "cohort").items()},
        **{f"features/{k}": v
           for k, v in manifest.tree_digests(results / "features" / "features.zarr").items()},
    }


@pytest.fixture(scope="session")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    return write_study(root / "study.yaml", source__synth__persons=PERSONS)


@pytest.fixture(scope="session")
def laptop_run(study_file: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The demo study at PERSONS persons through `cohortflow run` (laptop profile)."""
    workdir = study_file.parent / "laptop"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cohortflow", "run", str(study_file), "--results", "results"],
        cwd=workdir, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir / "results" / "demo", result
