"""Profile invariance of the genotype steps and the genomic features: the pgx seed study's
conversion (bio2zarr's partitioned passes as separate jobs), linkage, phenotypes, dosages
and feature tensors are byte for byte the same whether the jobs run on the laptop profile
or as SLURM batch jobs (the test cluster of ``tests/harness``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cohortflow import manifest
from tests.helpers import REPO
from tests.test_e2e import snakemake_from_repo

PGX_STUDY = REPO / "seeds" / "studies" / "pgx.yaml"
TARGETS = ("escitalopram_starters", "cyp2c19_poor")
COMPARED = ("genomics/phenotypes.parquet", "genomics/variants.parquet",
            "genomics/linkage.parquet",
            *(f"features/{t}/features.zarr" for t in TARGETS),
            *(f"cohorts/{t}" for t in TARGETS))
"""Outputs compared across profiles (the genotype store itself holds bio2zarr's
provenance, its version and a timestamp-free but path-bearing metadata; its content is
what the phenotypes and dosages are read from)."""


def _study(folder: Path) -> Path:
    """The seed study at 2,000 persons in 2 shards, 3 conversion partitions."""
    raw = yaml.safe_load(PGX_STUDY.read_text())
    raw["source"]["synth"]["persons"] = 2000
    raw["source"]["synth"]["genotypes"]["background_variants"] = 100
    raw["shards"] = 2
    raw["genomics"]["partitions"] = 3
    folder.mkdir(parents=True)
    path = folder / "pgx.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _targets() -> tuple[str, ...]:
    """The features steps' outputs (each target's features folder, around its tensor), not
    the models: the study's small cohort is too small to fit one, and the models are
    compared elsewhere."""
    return tuple(f"results/pgx/features/{t}" for t in TARGETS)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.slurm
def test_genomic_features_are_byte_identical_on_laptop_and_slurm(
        slurm_cluster, tmp_path: Path) -> None:
    study = _study(tmp_path / "study")
    laptop = tmp_path / "laptop"
    snakemake_from_repo(laptop, study, ["--workflow-profile", "profiles/laptop"], {},
                        _targets())
    before = slurm_cluster.submission_count()
    slurm = tmp_path / "slurm"
    log = snakemake_from_repo(
        slurm, study,
        ["--workflow-profile", "profiles/slurm", "--profile", "tests/harness/slurm-test-profile"],
        slurm_cluster.env, _targets())
    jobs = len(re.findall(r"Job \S+ has been submitted with SLURM jobid \d+", log))
    assert jobs > 0 and slurm_cluster.submission_count() - before == jobs
    # the conversion's partitions ran as jobs of their own on the cluster too
    assert re.search(r"rule genomics_explode:", log) and re.search(r"rule genomics_encode:", log)
    for output in COMPARED:
        ours, theirs = slurm / "results" / "pgx" / output, laptop / "results" / "pgx" / output
        assert ours.exists(), output
        assert manifest.tree_digest(ours) == manifest.tree_digest(theirs), output
