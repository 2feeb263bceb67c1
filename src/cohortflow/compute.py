"""The Dask client for the active profile.

* ``laptop``: a LocalCluster sized to this machine (or ``COHORTFLOW_WORKERS``).
* ``slurm``: inside a SLURM job, a LocalCluster sized to the job's allocation
  (``SLURM_CPUS_PER_TASK`` / ``SLURM_CPUS_ON_NODE`` and ``SLURM_MEM_PER_NODE``), so Dask never
  uses more than SLURM granted.
* ``slurm-dask``: the rule runs as a driver and its Dask workers are SLURM jobs launched by
  dask-jobqueue (:class:`JobqueueBackend`), selected by the ``dask_config`` resource.

Results never depend on the number of workers: every task works on whole shards and the
blocks are stacked in shard order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import yaml
from distributed import Client, LocalCluster

from cohortflow.errors import CohortflowError


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


# dask-jobqueue config keys whose argument has another name.
_ARGUMENT_OF = {"name": "job_name"}


def _import_slurm_cluster() -> Any:
    """dask_jobqueue's SLURMCluster, imported without its import-time side effect.

    dask_jobqueue 0.9 installs a SIGINT handler (``sys.exit``) when imported: that would
    replace Snakemake's own Ctrl-C handling, and it raises outside the main thread, where
    Snakemake runs ``run:`` blocks.  The import runs with ``signal.signal`` disabled.
    """
    install = signal.signal
    signal.signal = lambda *args: None
    try:
        from dask_jobqueue import SLURMCluster
    finally:
        signal.signal = install
    return SLURMCluster


class DaskBackend:
    """How a step gets its Dask cluster.  Subclasses override :meth:`make_cluster`."""

    kind = "abstract"

    def make_cluster(self, max_workers: int | None) -> Any:
        raise NotImplementedError


class LocalBackend(DaskBackend):
    """A LocalCluster on this machine or inside this SLURM job, sized to its allocation."""

    kind = "local"

    def make_cluster(self, max_workers: int | None) -> Any:
        alloc = Allocation.from_environment()
        n = min(alloc.workers, max_workers) if max_workers else alloc.workers
        return LocalCluster(
            n_workers=n,
            threads_per_worker=alloc.threads_per_worker,
            memory_limit=alloc.memory_limit_bytes or "auto",
            processes=True,
            dashboard_address=None,
        )


class JobqueueBackend(DaskBackend):
    """Dask workers as SLURM jobs (dask-jobqueue ``SLURMCluster``), scaled adaptively.

    Settings come from a Dask YAML file (``jobqueue.slurm.*`` as documented by
    dask-jobqueue, plus ``cohortflow.adapt.{minimum,maximum}``), loaded as defaults so that
    ``DASK_JOBQUEUE__SLURM__*`` environment variables still override them.  Workers find
    the scheduler through a scheduler file on the shared filesystem.
    """

    kind = "jobqueue"

    def __init__(self, config_file: Path, scheduler_dir: Path) -> None:
        self.config_file = Path(config_file)
        self.scheduler_dir = Path(scheduler_dir)

    def make_cluster(self, max_workers: int | None) -> Any:
        SLURMCluster = _import_slurm_cluster()  # noqa: N806

        # The profile's file, then DASK_* environment variables on top (tests and sites
        # override single keys that way, e.g. DASK_JOBQUEUE__SLURM__CORES=1).  They are
        # passed as arguments: dask-jobqueue reads its config again for every new job.
        file_settings = yaml.safe_load(self.config_file.read_text()) or {}
        settings = dask.config.merge(file_settings, dask.config.collect_env())
        job = {_ARGUMENT_OF.get(key, key.replace("-", "_")): value
               for key, value in settings.get("jobqueue", {}).get("slurm", {}).items()
               if value is not None}
        self.scheduler_dir.mkdir(parents=True, exist_ok=True)
        scheduler_file = self.scheduler_dir / f"scheduler-{os.getpid()}.json"
        scheduler_file.unlink(missing_ok=True)
        job["scheduler_options"] = {**job.get("scheduler_options", {}),
                                    "scheduler_file": str(scheduler_file)}
        job["worker_extra_args"] = [*job.get("worker_extra_args", []),
                                    "--scheduler-file", str(scheduler_file)]
        cluster = SLURMCluster(python=sys.executable, **job)
        adapt = settings.get("cohortflow", {}).get("adapt", {})
        minimum, maximum = int(adapt.get("minimum", 0)), int(adapt.get("maximum", 4))
        del max_workers  # the driver's threads say nothing about how many jobs to hold
        cluster.adapt(minimum=minimum, maximum=max(maximum, 1))
        return cluster


def backend(dask_config: Path | None, scheduler_dir: Path | None = None) -> DaskBackend:
    """The backend a step uses: jobqueue when a Dask config file is given, else local."""
    if dask_config is None:
        return LocalBackend()
    if not Path(dask_config).is_file():
        raise CohortflowError(
            f"{dask_config}: Dask cluster config not found; fix: set the `dask_config` "
            "resource of the profile to a YAML file relative to the workflow root"
        )
    return JobqueueBackend(Path(dask_config), scheduler_dir or Path(".cohortflow") / "dask")


@contextlib.contextmanager
def dask_client(max_workers: int | None = None, dask_config: Path | None = None,
                scheduler_dir: Path | None = None) -> Iterator[Client]:
    """A distributed client for one step; closed (with its cluster) on exit.

    ``max_workers`` caps the workers at what the workflow granted the step (its threads);
    ``dask_config`` selects dask-jobqueue workers (see :class:`JobqueueBackend`).
    """
    cluster = backend(dask_config, scheduler_dir).make_cluster(max_workers)
    client = Client(cluster)
    try:
        if isinstance(cluster, LocalCluster):
            client.wait_for_workers(len(cluster.workers))
        yield client
    finally:
        client.close()
        cluster.close()
