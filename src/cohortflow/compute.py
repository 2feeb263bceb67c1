"""The Dask client for the active profile.

* ``laptop``: a LocalCluster sized to this machine (or ``COHORTFLOW_WORKERS``).
* ``slurm``: inside a SLURM job, a LocalCluster sized to the job's allocation
  (``SLURM_CPUS_PER_TASK`` / ``SLURM_CPUS_ON_NODE`` and ``SLURM_MEM_PER_NODE``), so Dask never
  uses more than SLURM granted.

Results never depend on the number of workers: every task works on whole shards and the
blocks are stacked in shard order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from distributed import Client, LocalCluster


@dataclass(frozen=True)
class Allocation:
    """CPUs and memory this step may use."""

    workers: int
    threads_per_worker: int
    memory_limit_bytes: int | None

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> Allocation:
        """Size from SLURM's variables inside a job, else from this machine.

        >>> Allocation.from_environment({"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "4",
        ...                              "SLURM_MEM_PER_NODE": "8000"})
        Allocation(workers=4, threads_per_worker=1, memory_limit_bytes=2097152000)
        >>> Allocation.from_environment({"COHORTFLOW_WORKERS": "2"}).workers
        2
        """
        env = dict(os.environ) if env is None else env
        if "COHORTFLOW_WORKERS" in env:
            cpus = int(env["COHORTFLOW_WORKERS"])
        elif "SLURM_JOB_ID" in env:
            cpus = int(env.get("SLURM_CPUS_PER_TASK") or env.get("SLURM_CPUS_ON_NODE") or 1)
        else:
            cpus = len(os.sched_getaffinity(0))
        cpus = max(1, cpus)
        memory = None
        if "SLURM_MEM_PER_NODE" in env:
            memory = int(env["SLURM_MEM_PER_NODE"]) * 2**20 // cpus
        elif "SLURM_MEM_PER_CPU" in env:
            memory = int(env["SLURM_MEM_PER_CPU"]) * 2**20
        return cls(workers=cpus, threads_per_worker=1, memory_limit_bytes=memory)


@contextlib.contextmanager
def dask_client(max_workers: int | None = None) -> Iterator[Client]:
    """A distributed client sized to this step's allocation; closed (with its cluster) on exit.

    ``max_workers`` caps the workers at what the workflow granted the step (its threads).
    """
    alloc = Allocation.from_environment()
    n = min(alloc.workers, max_workers) if max_workers else alloc.workers
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=alloc.threads_per_worker,
        memory_limit=alloc.memory_limit_bytes or "auto",
        processes=True,
        dashboard_address=None,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
