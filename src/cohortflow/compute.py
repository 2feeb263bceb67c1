"""The Dask scheduler for the active profile.

* ``laptop``: Dask's threaded scheduler in the step's own process, as many threads as the
  step's ``threads`` (:func:`local_scheduler`), capped by this machine (or
  ``COHORTFLOW_WORKERS``).
* ``slurm``: the same inside a SLURM job, capped by the job's allocation
  (``SLURM_CPUS_PER_TASK`` / ``SLURM_CPUS_ON_NODE``), so Dask never uses more than SLURM
  granted.  (:func:`dask_client` without a config gives a LocalCluster of worker processes
  sized the same way, memory limits included, for code that wants one.)
* ``slurm-dask``: the rule runs as a driver and its Dask workers are SLURM jobs launched by
  dask-jobqueue (:class:`JobqueueBackend`), selected by the ``dask_config`` resource.

Results never depend on the number of workers: every task works on whole shards and the
blocks are stacked in shard order.

Who may connect: the threaded scheduler listens on nothing; a LocalCluster listens on
loopback only, with no dashboard.  A
dask-jobqueue cluster listens on the cluster network, so it speaks mutual TLS with a key and
certificate made for that one cluster (:func:`tls_credentials`): only processes that can
read the run's owner-only credential files -- the driver and its worker jobs, which run as
the same user on the shared filesystem -- can connect, as client or as worker.  The files
(and the scheduler file beside them) live in a private directory that is removed when the
step ends; job scripts name the files, never their content.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.threaded
import yaml

from cohortflow.errors import CohortflowError
from cohortflow.privacy import PSEUDONYM_KEY_ENV

if TYPE_CHECKING:
    from distributed import Client, LocalCluster
    from distributed.security import Security


# distributed is imported where a cluster is made, never by a step on the threaded
# scheduler (the laptop and slurm profiles): its import is a few tenths of a second of every
# such step.  It leaves these unannotated; typed wrappers let mypy check the calls.
def _new_client(*args: Any, **kwargs: Any) -> Client:
    from distributed import Client

    make: Callable[..., Client] = Client
    return make(*args, **kwargs)


def _new_local_cluster(*args: Any, **kwargs: Any) -> LocalCluster:
    from distributed import LocalCluster

    make: Callable[..., LocalCluster] = LocalCluster
    return make(*args, **kwargs)


def _new_security(*args: Any, **kwargs: Any) -> Security:
    from distributed.security import Security

    make: Callable[..., Security] = Security
    return make(*args, **kwargs)


def _temporary_security() -> Any:
    """A Security with a temporary key (Any: its fields are __slots__ mypy cannot see)."""
    from distributed.security import Security

    make: Callable[[], Any] = Security.temporary
    return make()


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
        from dask_jobqueue.slurm import SLURMCluster
    finally:
        signal.signal = install
    return SLURMCluster


#: Environment variables that hold a secret.  A Dask worker job needs none of them, so
#: ``sbatch`` runs without them: it copies its whole environment into SLURM's record of
#: the job (``--export=ALL``), which outlives the run on the controller's disk.
SECRET_VARIABLES = (PSEUDONYM_KEY_ENV, "PGPASSWORD")


def _secretless(slurm_cluster: Any) -> Any:
    """The job class of ``slurm_cluster`` with ``sbatch`` run without the secrets.

    >>> class Job:
    ...     submit_command = "sbatch"
    >>> class Cluster:
    ...     job_cls = Job
    >>> _secretless(Cluster).submit_command
    'env -u COHORTFLOW_PSEUDONYM_KEY -u PGPASSWORD sbatch'
    """
    base = slurm_cluster.job_cls
    unset = [arg for name in SECRET_VARIABLES for arg in ("-u", name)]
    return type("SecretlessSLURMJob", (base,), {
        "submit_command": shlex.join(["env", *unset, *shlex.split(base.submit_command)])})


class DaskBackend:
    """How a step gets its Dask cluster.  Subclasses override :meth:`make_cluster`, or
    :meth:`cluster` where the cluster needs something removed after it closes."""

    kind = "abstract"

    def make_cluster(self, max_workers: int | None) -> Any:
        raise NotImplementedError

    @contextlib.contextmanager
    def cluster(self, max_workers: int | None) -> Iterator[Any]:
        """The step's cluster, closed on exit."""
        cluster = self.make_cluster(max_workers)
        try:
            yield cluster
        finally:
            cluster.close()


#: Prefix of the private per-cluster directory (credentials and scheduler file).
RUN_DIR_PREFIX = "dask-"


def _write_private(path: Path, text: str) -> Path:
    """Write ``text`` to a new file that only its owner can read, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def _remove_abandoned(parent: Path) -> None:
    """Remove the private directories of this host's drivers that were killed before they
    could (their pid is gone); directories of live drivers and other hosts stay."""
    host = socket.gethostname()
    for old in parent.glob(f"{RUN_DIR_PREFIX}{host}-*-*"):
        pid = old.name[len(RUN_DIR_PREFIX) + len(host) + 1:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def private_run_dir(parent: Path) -> Iterator[Path]:
    """A new directory only its owner can enter, under ``parent``; removed with everything
    in it on exit.

    >>> import tempfile
    >>> with private_run_dir(Path(tempfile.mkdtemp())) as run:
    ...     oct(run.stat().st_mode & 0o777), run.name.startswith("dask-")
    ('0o700', True)
    >>> run.exists()
    False
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(parent)
    run = Path(tempfile.mkdtemp(  # mode 0700, a name no one else can take first
        prefix=f"{RUN_DIR_PREFIX}{socket.gethostname()}-{os.getpid()}-", dir=parent))
    try:
        yield run
    finally:
        shutil.rmtree(run, ignore_errors=True)


def tls_credentials(directory: Path) -> Security:
    """Mutual-TLS credentials made for one cluster, written to owner-only files in
    ``directory`` (a :func:`private_run_dir`): the scheduler, its workers and the client
    all present the one certificate and trust nothing else.  The returned
    :class:`~distributed.security.Security` holds file paths only, so nothing that copies it
    (a job script, a log line) copies the key.

    >>> import tempfile
    >>> with private_run_dir(Path(tempfile.mkdtemp())) as run:
    ...     security = tls_credentials(run)
    ...     sorted(p.name for p in run.iterdir()), oct((run / "key.pem").stat().st_mode)
    (['cert.pem', 'key.pem'], '0o100600')
    >>> security.require_encryption, security.tls_worker_key.endswith("key.pem")
    (True, True)
    """
    made = _temporary_security()
    cert = str(_write_private(Path(directory) / "cert.pem", made.tls_ca_file))
    key = str(_write_private(Path(directory) / "key.pem", made.tls_scheduler_key))
    del made
    return _new_security(
        require_encryption=True, tls_ca_file=cert,
        tls_scheduler_cert=cert, tls_scheduler_key=key,
        tls_worker_cert=cert, tls_worker_key=key,
        tls_client_cert=cert, tls_client_key=key,
    )


class LocalBackend(DaskBackend):
    """A LocalCluster on this machine or inside this SLURM job, sized to its allocation."""

    kind = "local"

    def make_cluster(self, max_workers: int | None) -> Any:
        alloc = Allocation.from_environment()
        n = min(alloc.workers, max_workers) if max_workers else alloc.workers
        return _new_local_cluster(
            n_workers=n,
            threads_per_worker=alloc.threads_per_worker,
            memory_limit=alloc.memory_limit_bytes or "auto",
            processes=True,
            host="127.0.0.1",  # loopback only, whatever the Dask config says
            dashboard_address=None,
        )


class JobqueueBackend(DaskBackend):
    """Dask workers as SLURM jobs (dask-jobqueue ``SLURMCluster``), scaled adaptively.

    Settings come from a Dask YAML file (``jobqueue.slurm.*`` as documented by
    dask-jobqueue, plus ``cohortflow.adapt.{minimum,maximum}``), loaded as defaults so that
    ``DASK_JOBQUEUE__SLURM__*`` environment variables still override them.  Workers find
    the scheduler through a scheduler file on the shared filesystem.  Every connection is
    mutual TLS with credentials made for this cluster (:func:`tls_credentials`); the
    scheduler file and the credentials share one private directory under
    ``scheduler_dir``, removed when the cluster closes.  The scheduler serves no dashboard
    unless ``scheduler-options`` asks for one (``dashboard_address``).
    """

    kind = "jobqueue"

    def __init__(self, config_file: Path, scheduler_dir: Path) -> None:
        self.config_file = Path(config_file)
        self.scheduler_dir = Path(scheduler_dir)

    @contextlib.contextmanager
    def cluster(self, max_workers: int | None) -> Iterator[Any]:
        with private_run_dir(self.scheduler_dir) as run_dir:
            cluster = self.make_cluster(max_workers, run_dir)
            try:
                yield cluster
            finally:
                cluster.close()

    def make_cluster(self, max_workers: int | None, run_dir: Path | None = None) -> Any:
        """The cluster, its scheduler file and credentials in ``run_dir`` (a
        :func:`private_run_dir`; it must outlive the cluster: use :meth:`cluster`)."""
        if run_dir is None:
            raise ValueError("JobqueueBackend.make_cluster needs its private run_dir; "
                             "use JobqueueBackend.cluster()")
        SLURMCluster = _import_slurm_cluster()  # noqa: N806

        # The profile's file, then DASK_* environment variables on top (tests and sites
        # override single keys that way, e.g. DASK_JOBQUEUE__SLURM__CORES=1).  They are
        # passed as arguments: dask-jobqueue reads its config again for every new job.
        file_settings = yaml.safe_load(self.config_file.read_text()) or {}
        settings = dask.config.merge(file_settings, dask.config.collect_env())
        job = {_ARGUMENT_OF.get(key, key.replace("-", "_")): value
               for key, value in settings.get("jobqueue", {}).get("slurm", {}).items()
               if value is not None}
        scheduler_file = run_dir / "scheduler.json"
        asked = dict(job.get("scheduler_options", {}))
        quiet = {} if "dashboard_address" in asked else {
            "dashboard": False, "dashboard_address": "127.0.0.1:0"}
        job["scheduler_options"] = {**quiet, **asked, "scheduler_file": str(scheduler_file)}
        job["worker_extra_args"] = [*job.get("worker_extra_args", []),
                                    "--scheduler-file", str(scheduler_file)]
        job["security"] = tls_credentials(run_dir)
        job["protocol"] = "tls://"
        cluster = SLURMCluster(python=sys.executable, job_cls=_secretless(SLURMCluster), **job)
        with contextlib.suppress(FileNotFoundError):  # owner-only whatever the umask
            scheduler_file.chmod(0o600)
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


def local_scheduler(max_workers: int | None = None) -> Callable[..., Any]:
    """Dask's threaded scheduler with as many threads as the step was granted (its
    ``threads``, capped by the allocation like :class:`LocalBackend`'s workers).

    A step whose data fits one process computes with it: no cluster to start (worker
    processes importing the stack, seconds) or to stop, and nothing listening on a port.
    Polars and NumPy release the GIL, so the threads run in parallel.  Each call gets its
    own pool: two steps in threads of one process never share it.
    """
    alloc = Allocation.from_environment()
    n = min(alloc.workers, max_workers) if max_workers else alloc.workers
    return functools.partial(dask.threaded.get, num_workers=n)


@contextlib.contextmanager
def dask_client(max_workers: int | None = None, dask_config: Path | None = None,
                scheduler_dir: Path | None = None, *, as_default: bool = True
                ) -> Iterator[Client]:
    """A distributed client for one step; closed (with its cluster) on exit.

    ``max_workers`` caps the workers at what the workflow granted the step (its threads);
    ``dask_config`` selects dask-jobqueue workers (see :class:`JobqueueBackend`).
    ``as_default``: the client becomes the process's default Dask scheduler while it is
    open (what a plain ``dask.compute`` uses).  A workflow step passes False and hands the
    client to its computations: Snakemake may run several steps as threads of one process,
    and a process-wide default would send one step's work to another step's cluster.
    """
    from distributed import LocalCluster

    with backend(dask_config, scheduler_dir).cluster(max_workers) as cluster:
        client = _new_client(cluster, security=getattr(cluster, "security", None),
                             set_as_default=as_default)
        close: Callable[[], object] = client.close  # unannotated in distributed
        try:
            if isinstance(cluster, LocalCluster):
                client.wait_for_workers(len(cluster.workers))
            yield client
        finally:
            close()
