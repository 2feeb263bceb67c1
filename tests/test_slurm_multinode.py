"""The multi-node SLURM test cluster (tests/harness/slurm_multinode.py): jobs spread over
its nodes, Dask workers on different nodes talk over the cluster network, and a node lost
in the middle of a study loses no output.

Marked ``slurm``; they skip on the single-node cluster (``COHORTFLOW_SLURM_NODES=1``, or a
machine without network namespaces outside CI).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cohortflow import compute, manifest
from tests.harness.slurm_multinode import MultiNodeSlurmCluster
from tests.helpers import REPO, make_omop_study

pytestmark = pytest.mark.slurm


@pytest.fixture
def cluster(slurm_cluster) -> MultiNodeSlurmCluster:
    if not isinstance(slurm_cluster, MultiNodeSlurmCluster):
        pytest.skip("the SLURM test cluster has a single node here")
    return slurm_cluster


def test_jobs_land_on_every_node_and_see_their_own_host(cluster: MultiNodeSlurmCluster,
                                                         tmp_path: Path) -> None:
    # Three jobs that each take a whole node (2 CPUs), submitted together: one per node.
    script = "hostname > host-$SLURM_JOB_ID.txt; sleep 3"
    jobs = [cluster.sbatch("--cpus-per-task=2", "--output", "/dev/null", "--wrap", script,
                           cwd=tmp_path) for _ in cluster.node_names]
    # And one job across all of them, a task on each: every node answers from its address.
    wide = cluster.sbatch("-N", str(len(cluster.node_names)), "--output",
                          str(tmp_path / "wide.txt"), "--wrap",
                          "srun -l sh -c 'echo $(hostname) $(getent hosts $(hostname))'",
                          cwd=tmp_path)
    for job in [*jobs, wide]:
        assert cluster.wait_job(job, timeout=300) == "COMPLETED", cluster.log_tails()
    placed = {job: cluster.job_nodes(job) for job in jobs}
    assert sorted(n for nodes in placed.values() for n in nodes) == cluster.node_names, placed
    for job, (node,) in placed.items():
        assert (tmp_path / f"host-{job}.txt").read_text().strip() == node  # its own hostname
    assert cluster.job_nodes(wide) == cluster.node_names
    answers = sorted(line.split(":", 1)[1].split()
                     for line in (tmp_path / "wide.txt").read_text().splitlines())
    assert answers == [[n, cluster.node_address(n), n] for n in cluster.node_names]


def test_dask_workers_on_different_nodes_exchange_data_over_node_addresses(
        cluster: MultiNodeSlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # profiles/slurm-dask as it is, sized so that each worker job takes a whole node
    config = yaml.safe_load((REPO / "profiles" / "slurm-dask" / "jobqueue.yaml").read_text())
    config["jobqueue"]["slurm"].update(cores=2, memory="1GiB", walltime="00:15:00",
                                       **{"log-directory": str(tmp_path / "logs")})
    config["cohortflow"]["adapt"] = {"minimum": 3, "maximum": 3}
    (tmp_path / "jobqueue.yaml").write_text(yaml.safe_dump(config))
    for name in [v for v in os.environ if v.startswith("DASK_JOBQUEUE__")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    with compute.dask_client(dask_config=tmp_path / "jobqueue.yaml",
                             scheduler_dir=tmp_path / "dask", as_default=False) as client:
        client.wait_for_workers(3, timeout=600)
        workers = client.scheduler_info()["workers"]
        hosts = client.run(socket.gethostname)
        network = cluster.network
        assert sorted(hosts.values()) == cluster.node_names, hosts  # one worker per node
        for address, node in hosts.items():
            host = workers[address]["host"]
            assert address.startswith("tls://"), address
            assert ipaddress.ip_address(host) in network, (address, network)
            assert host == cluster.node_address(node), (address, node)
        # one block made on each of two nodes, added on the third: both must cross over
        first, second, third = sorted(hosts, key=hosts.get)
        a = client.submit(np.arange, 2_000_000, workers=[first], pure=False)
        b = client.submit(np.ones, 2_000_000, workers=[second], pure=False)
        total = client.submit(lambda x, y: float((x + y).sum()), a, b, workers=[third],
                              allow_other_workers=False)
        assert total.result(timeout=300) == float(np.arange(2_000_000).sum() + 2_000_000)
        def transfers(dask_worker) -> list[str]:  # runs on the worker (pickled by value)
            return sorted({str(entry["who"]) for entry in dask_worker.transfer_incoming_log})

        received = client.run(transfers, workers=[third])[third]
        assert received == sorted([first, second]), received


def test_a_node_lost_mid_study_loses_no_output_and_the_result_is_identical(
        cluster: MultiNodeSlurmCluster, synth_omop: Path, omop_run: tuple[Path, Path],
        tmp_path: Path) -> None:
    study = make_omop_study(synth_omop, tmp_path / "study")
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = {**os.environ, **cluster.env}
    head = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--workflow-profile", str(REPO / "profiles" / "slurm"),
         "--profile", str(REPO / "tests" / "harness" / "slurm-test-profile"),
         "--config", f"study={study}", "results=results", "profile=slurm"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )
    assert head.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(head.stdout or []), daemon=True)
    reader.start()
    results = workdir / "results" / "demo"
    crashed: tuple[str, str] | None = None
    finished: dict[Path, int] = {}
    try:
        while crashed is None and head.poll() is None:
            queue = subprocess.run(["squeue", "-h", "-o", "%i %k %T %N"], capture_output=True,
                                   text=True, env=env, check=False).stdout
            for job_id, comment, state, *nodes in map(str.split, queue.splitlines()):
                # the SLURM executor's comment: rule_<rule>_wildcards_<values>
                if comment == "rule_features_wildcards_cohort" and state == "RUNNING":
                    time.sleep(2)  # well inside the step
                    finished = {p: p.stat().st_mtime_ns for p in sorted(
                        results.glob("*/**/*.parquet"))}
                    cluster.crash_node(nodes[0])
                    crashed = (job_id, nodes[0])
                    break
            time.sleep(0.2)
        head.wait(timeout=1200)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, 9)
            head.wait()
        if crashed is not None:
            cluster.restore_node(crashed[1])
    reader.join(timeout=10)
    log = "".join(lines)
    assert crashed is not None, log[-4000:]
    assert head.returncode == 0, log[-6000:]
    job_id, node = crashed
    # SLURM requeues a batch job whose node failed (JobRequeue=1, its default; the job
    # waits about 2 minutes, until its old credential expires, then starts on another
    # node), or the job ends NODE_FAIL and the profile's retries submit it again: either
    # way it ran again, elsewhere.
    requeued = cluster.job_nodes(job_id) not in ([], [node])
    retried = bool(re.search(rf"SLURM-job '{job_id}' failed due to a node failure", log)) \
        and "Trying to restart job" in log
    assert requeued or retried, log[-4000:]
    print(f"features job {job_id} lost with {node}: "
          f"{'requeued by SLURM' if requeued else 'retried by Snakemake'}")
    # Outputs finished before the crash were kept as they were; the rest is the same as
    # the laptop run's, byte for byte.
    assert finished and {p: p.stat().st_mtime_ns for p in finished} == finished
    reference = omop_run[1]
    for output in ("cohorts", "features/cohort/features.zarr"):
        assert manifest.tree_digest(results / output) == manifest.tree_digest(
            reference / output), output
    assert not list((results / "features").glob(".*partial*")), "a half-written store remains"
