"""The SLURM test cluster works (multi-node or single-node), and so does profiles/slurm on it.

These run against real slurmctld/slurmd/munged daemons started by
``tests/harness/slurm.py`` (see its docstring). Without the SLURM binaries they skip,
except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.slurm import SlurmCluster

# The `slurm_cluster` fixture comes from tests/conftest.py (tests.harness.slurm).

REPO = Path(__file__).resolve().parents[1]
PROD_PROFILE = REPO / "profiles" / "slurm"
TEST_PROFILE = REPO / "tests" / "harness" / "slurm-test-profile"


def _profile_keys(profile_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((profile_dir / "config.yaml").read_text()) or {}


def test_slurm_profiles_compose() -> None:
    """The test profile can only add keys: the workflow profile wins per key."""
    prod = _profile_keys(PROD_PROFILE)
    test = _profile_keys(TEST_PROFILE)
    assert prod["executor"] == "slurm"
    assert prod["config"] == ["profile=slurm"]
    assert prod["slurm-status-command"] == "squeue"
    assert prod["default-resources"]["slurm_partition"] == "debug"
    overlap = set(prod) & set(test)
    assert not overlap, (
        f"{sorted(overlap)} set in both profiles: --workflow-profile {PROD_PROFILE} would "
        f"silently win over --profile {TEST_PROFILE}; pass such overrides on the command line"
    )


@pytest.mark.slurm
def test_sbatch_wrap_runs_and_is_logged(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    before = slurm_cluster.submission_count()
    job_id = slurm_cluster.sbatch(
        "--job-name",
        "harness-smoke",
        "--output",
        str(tmp_path / "out-%j.txt"),
        "--wrap",
        "echo hello-from-slurm; srun --ntasks=1 echo step-ok",
        cwd=tmp_path,
    )
    state = slurm_cluster.wait_job(job_id, timeout=60)
    assert state == "COMPLETED", slurm_cluster.log_tails()
    out = (tmp_path / f"out-{job_id}.txt").read_text()
    assert "hello-from-slurm" in out
    assert "step-ok" in out  # srun inside the allocation works too
    # without accounting the finished job is still visible thanks to MinJobAge
    assert slurm_cluster.job_state(job_id) == "COMPLETED"
    assert slurm_cluster.submission_count() == before + 1
    assert slurm_cluster.submitted_job_ids()[-1] == job_id


@pytest.mark.slurm
def test_a_job_over_its_memory_is_killed(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """Memory is enforced like on a production cluster (jobacct_gather OverMemoryKill)."""
    grow = "x = bytearray(500_000_000); import time; time.sleep(30)"
    job_id = slurm_cluster.sbatch(
        "--mem", "20M", "--output", str(tmp_path / "out-%j.txt"),
        "--wrap", f"{sys.executable} -c '{grow}'", cwd=tmp_path,
    )
    state = slurm_cluster.wait_job(job_id, timeout=60)
    # without cgroups SLURM reports FAILED (the batch step was killed), not OUT_OF_MEMORY
    assert state == "FAILED", slurm_cluster.log_tails()
    out = (tmp_path / f"out-{job_id}.txt").read_text()
    assert f"StepId={job_id}.batch exceeded memory limit" in out
    assert "Exceeded job memory limit" in out


SNAKEFILE = """\
import sys

rule all:
    input: "c.txt"

rule a:
    output: "a.txt"
    shell:
        "echo job=$SLURM_JOB_ID > {output}; "
        "echo python={sys.executable} >> {output}; "
        "echo profile={config[profile]} >> {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "cat {input} > {output}; echo job=$SLURM_JOB_ID >> {output}"

rule c:
    input: "b.txt"
    output: "c.txt"
    shell: "cat {input} > {output}; echo job=$SLURM_JOB_ID >> {output}"
"""


@pytest.mark.slurm
def test_snakemake_slurm_profile_submits_every_job(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(textwrap.dedent(SNAKEFILE))
    before = slurm_cluster.submitted_job_ids()
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--executor",
        "slurm",
        "--workflow-profile",
        str(PROD_PROFILE),
        "--profile",
        str(TEST_PROFILE),
        "--snakefile",
        str(snakefile),
        "--directory",
        str(tmp_path),
        "--jobs",
        "2",
    ]
    t0 = time.monotonic()
    res = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=slurm_cluster.client_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, (
        f"snakemake failed after {elapsed:.0f}s:\n{res.stderr[-6000:]}\n"
        + slurm_cluster.log_tails()
    )
    print(f"3-job Snakemake run on the SLURM test cluster: {elapsed:.1f}s")

    lines = (tmp_path / "c.txt").read_text().splitlines()
    new_ids = slurm_cluster.submitted_job_ids()[len(before) :]
    assert len(new_ids) == 3, (new_ids, res.stderr[-3000:])  # one sbatch per rule a, b, c
    job_lines = [int(line.split("=", 1)[1]) for line in lines if line.startswith("job=")]
    assert job_lines == new_ids  # each rule ran inside its own SLURM job, in DAG order
    # the job re-ran Snakemake with the submitting interpreter (the venv), and the
    # profile's `config: ["profile=slurm"]` reached the rules
    assert f"python={sys.executable}" in lines
    assert "profile=slurm" in lines
    for jid in new_ids:
        assert slurm_cluster.job_state(jid) == "COMPLETED"


def test_the_fixture_takes_several_nodes_where_namespaces_work_and_fails_on_ci_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.harness import slurm_multinode
    from tests.harness.slurm import SlurmHarnessError, make_cluster
    from tests.harness.slurm_multinode import MultiNodeSlurmCluster

    monkeypatch.delenv("COHORTFLOW_SLURM_NODES", raising=False)
    monkeypatch.setattr(slurm_multinode, "namespaces_usable", lambda: None)
    cluster, _ = make_cluster()
    assert isinstance(cluster, MultiNodeSlurmCluster) and len(cluster.node_names) == 3
    monkeypatch.setenv("COHORTFLOW_SLURM_NODES", "1")
    cluster, how = make_cluster()
    assert type(cluster) is SlurmCluster and "COHORTFLOW_SLURM_NODES=1" in how
    monkeypatch.setenv("COHORTFLOW_SLURM_NODES", "three")
    with pytest.raises(SlurmHarnessError, match="COHORTFLOW_SLURM_NODES='three'"):
        make_cluster()
    monkeypatch.delenv("COHORTFLOW_SLURM_NODES")
    monkeypatch.setattr(slurm_multinode, "namespaces_usable", lambda: "not root")
    monkeypatch.setenv("CI", "false")
    with pytest.warns(UserWarning, match="single node: not root"):
        cluster, _ = make_cluster()
    assert type(cluster) is SlurmCluster
    monkeypatch.setenv("CI", "true")
    with pytest.raises(SlurmHarnessError, match="needs network namespaces: not root"):
        make_cluster()
