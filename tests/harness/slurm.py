"""A real, throwaway SLURM cluster for the test suite: single-node here, multi-node in
:mod:`tests.harness.slurm_multinode` (a subclass: every node a network and UTS namespace of
its own).  The ``slurm_cluster`` fixture takes the multi-node one (3 nodes, or
``$COHORTFLOW_SLURM_NODES``) where this machine allows network namespaces (root, iproute2),
else this one -- except under ``CI=true``, where no namespaces is a failure.
``COHORTFLOW_SLURM_NODES=1`` asks for the single-node cluster (for debugging).  What
follows describes the single-node cluster; the multi-node one differs only in its nodes.

What it starts
--------------
Everything lives in one directory (``$COHORTFLOW_SLURM_DIR``, default
``/tmp/cohortflow-slurm-<uid>``) and nothing outside it is touched:

* a private ``munged`` on a private socket (``<dir>/munge/munge.socket``) with a
  freshly generated key (``<dir>/munge/munge.key``); ``slurm.conf`` points every
  SLURM component at that socket with ``AuthInfo=socket=...``, so neither
  ``/etc/munge/munge.key`` nor a system-wide munged is needed or disturbed;
* ``slurmctld`` and ``slurmd`` in the foreground (``-D``) with ``-f <dir>/slurm.conf``
  and ``SLURM_CONF`` in their environment;
* one node (this host, CPUs/memory taken from ``slurmd -C``) in one partition
  ``debug`` (Default, MaxTime=INFINITE), ``select/cons_tres`` + ``CR_Core_Memory``,
  ``proctrack/linuxproc`` + ``task/none`` (no cgroups needed: works in containers),
  no accounting database (``accounting_storage/none``) and ``MinJobAge=3600`` so
  finished jobs stay visible to ``squeue --states=all`` for an hour -- which is what the
  Snakemake SLURM executor's ``squeue`` status command needs when there is no
  ``sacct``/slurmdbd;
* memory limits enforced without cgroups, like a production cluster's: slurmstepd samples
  every step's processes each second (``jobacct_gather/linux``,
  ``JobAcctGatherFrequency=task=1``) and kills a step whose summed RSS passes the job's
  ``--mem`` (``JobAcctGatherParams=OverMemoryKill``). Each step is held to the whole
  ``--mem`` on its own: the batch step (for Snakemake jobs: the ``slurm-jobstep``
  Snakemake, ~200 MB) and the ``srun`` step that runs the rule. Observed with SLURM
  22.05.8: the job log says ``StepId=7.batch exceeded memory limit (220766208 >
  157286400), being killed`` / ``Exceeded job memory limit``, and the job ends
  ``FAILED`` (batch step killed; ExitCode 0:9) -- never ``OUT_OF_MEMORY``, which only
  cgroup OOM events produce. A killed ``srun`` step alone leaves the batch script
  running (srun exits 137); the Snakemake jobstep then fails, so the job is ``FAILED``
  too. Time limits: a ``--time=1`` job ends ``TIMEOUT`` about a minute after it starts
  (slurmctld checks limits every ~30 s; ``KillWait=5``), its log says ``CANCELLED AT ...
  DUE TO TIME LIMIT``.

Clients (``sbatch``, ``squeue``, ``srun`` inside jobs, Snakemake) find the cluster
through ``SLURM_CONF`` only: see :attr:`SlurmCluster.env`. The ``slurm_cluster``
fixture exports it into ``os.environ`` for the whole session.

``start()`` first kills daemons left over by an earlier run that used the same
directory (found through the pid files and by scanning ``/proc`` for
munged/slurmctld/slurmd/slurmstepd processes that reference the directory), then
wipes state, spool and logs, so every session starts with job id 1 and empty logs.
If the cluster in that directory was started by *this* process and is healthy, it is
adopted instead (so two fixture definitions in one pytest process cannot kill each
other's cluster).

Use it
------
In tests (the lead may move the import into ``tests/conftest.py`` so that every test
module shares one fixture definition)::

    from tests.harness.slurm import slurm_cluster  # noqa: F401  (pytest fixture)

    @pytest.mark.slurm
    def test_x(slurm_cluster):
        before = slurm_cluster.submission_count()
        ...  # sbatch / snakemake --executor slurm
        assert slurm_cluster.submission_count() - before == n_jobs

By hand (daemons keep running after the command returns)::

    python -m tests.harness.slurm start     # prints `export SLURM_CONF=...`
    python -m tests.harness.slurm status
    python -m tests.harness.slurm stop

Running Snakemake against it
----------------------------
Snakemake 9 takes ONE ``--workflow-profile`` and (any number of) ``--profile``.
Precedence, checked on this machine with snakemake 9.27.1: ``--profile`` < the
``--workflow-profile`` (it wins *per top-level key*: a key it sets replaces the
``--profile`` value wholesale) < explicit command-line flags (same wholesale rule). So::

    python -m snakemake --executor slurm \\
        --workflow-profile <repo>/profiles/slurm \\
        --profile <repo>/tests/harness/slurm-test-profile \\
        --snakefile ... --directory ...

works only because the test profile sets nothing but keys that ``profiles/slurm``
leaves unset (the polling intervals); ``tests/test_slurm_harness.py`` asserts the two
key sets stay disjoint. An override of a key the production profile does set must go on
the command line. Caveat of the same rule: ``--config k=v`` on the command line drops
the profile's ``config: ["profile=slurm"]`` entirely (``config["profile"]`` becomes
unset); ``--configfile`` does not (profile ``config:`` values win over it).

Facts observed with snakemake-executor-plugin-slurm 2.8.0 / -jobstep 0.6.1 / SLURM 22.05:

* ``slurm-status-command: squeue`` is required without accounting. The default is
  ``sacct`` whenever the binary exists; it exits 1 ("accounting storage is disabled")
  and Snakemake does not notice jobs finishing (a 5 s job still "running" after 90 s;
  SIGTERM only made it "exit after finishing currently running jobs").
  With ``squeue`` the plugin insists on ``MinJobAge >= 3 * init-seconds`` or silently
  reverts to sacct.
* No account is needed: the plugin's account guess (``sacct``) fails, it logs
  "Unable to guess SLURM account. Trying to proceed without." and submits without
  ``-A``. ``--slurm-no-account`` is accepted but not read by 2.8.0.
* Every job is ``sbatch --export=ALL ... --wrap="<sys.executable> -m snakemake ...
  --executor slurm-jobstep"``, which then runs the rule with ``srun``: jobs use the
  submitting interpreter (the venv) even though the venv is not on ``PATH``, and the
  submitter's environment propagates -- but a bare ``python`` in a rule's ``shell:``
  resolves through ``PATH``, not the venv (use ``{sys.executable}``).
* The jobstep plugin removes ``SLURM_CONF`` (all ``SLURM_*`` but the job ids) from the
  environment of that inner ``srun``; ``srun`` then falls back to
  ``/etc/slurm/slurm.conf`` and ``/run/slurm/conf/slurm.conf``. The harness therefore
  points the ``/run/slurm/conf`` symlink at its ``etc`` dir (what a configless slurmd
  does) and removes it in ``stop()``. Without it every job fails with
  "srun: fatal: Could not establish a configuration source".
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from cohortflow.runner import process_alive

#: Binaries the harness needs. Missing ones make the fixture skip (fail under CI=true).
REQUIRED_BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol")
#: Line slurmctld logs (at ``info`` level) for every accepted ``sbatch`` submission.
SUBMIT_MARKER = "_slurm_rpc_submit_batch_job"
_SUBMIT_RE = re.compile(SUBMIT_MARKER + r": JobId=(\d+)")
#: Where SLURM clients look for slurm.conf when SLURM_CONF is unset and
#: /etc/slurm/slurm.conf is missing (a configless slurmd's cache lives there).
RUN_CONF_LINK = Path("/run/slurm/conf")
_DAEMONS = ("munged", "slurmctld", "slurmd", "slurmstepd")
_TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


class SlurmHarnessError(RuntimeError):
    """The test cluster could not be started or queried."""


def missing_binaries() -> list[str]:
    """Names from :data:`REQUIRED_BINARIES` that are not on ``PATH`` (or in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [b for b in REQUIRED_BINARIES if shutil.which(b, path=path) is None]


def default_base_dir() -> Path:
    """``$COHORTFLOW_SLURM_DIR`` or ``/tmp/cohortflow-slurm-<uid>`` (short: the munge
    socket path must stay under the 108-byte AF_UNIX limit)."""
    env = os.environ.get("COHORTFLOW_SLURM_DIR")
    return Path(env) if env else Path(f"/tmp/cohortflow-slurm-{os.getuid()}")


def _which(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise SlurmHarnessError(f"{name} not found on PATH")
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _listed_pids(res: subprocess.CompletedProcess[str]) -> list[int]:
    """The pids of ``scontrol listpids`` output (none when it failed)."""
    if res.returncode != 0:
        return []
    return [int(line.split()[0]) for line in res.stdout.splitlines()[1:]
            if line.split() and line.split()[0].isdigit()]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"  ({path}: not written)"
    return "\n".join(f"  {line}" for line in text[-lines:]) or f"  ({path}: empty)"


def _node_hardware() -> dict[str, str]:
    """CPUs/Boards/Sockets/Cores/Threads/RealMemory as ``slurmd -C`` reports them."""
    out = subprocess.run(
        [_which("slurmd"), "-C"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    hw: dict[str, str] = {}
    for tok in out.split():
        key, _, value = tok.partition("=")
        if key in {
            "CPUs",
            "Boards",
            "SocketsPerBoard",
            "CoresPerSocket",
            "ThreadsPerCore",
            "RealMemory",
        }:
            hw[key] = value
    if "CPUs" not in hw:  # fall back to Python's view of the machine
        hw = {"CPUs": str(os.cpu_count() or 1)}
    if "RealMemory" not in hw:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        hw["RealMemory"] = str(pages // (1024 * 1024))
    return hw


class SlurmCluster:
    """A single-node SLURM cluster living in ``base_dir``.

    >>> c = SlurmCluster(base_dir="/tmp/cf-doc", partition="debug")
    >>> c.env["SLURM_CONF"]
    '/tmp/cf-doc/etc/slurm.conf'
    >>> c.slurmctld_log.name
    'slurmctld.log'
    """

    #: Per-node slurmd pid and log files (``%n``): several slurmds share ``base_dir``.
    per_node_files = False

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        cluster_name: str = "cohortflow",
        partition: str = "debug",
        start_timeout: float = 60.0,
        ctld_port: int = 6817,
        slurmd_port: int = 6818,
    ) -> None:
        self.base_dir = Path(base_dir) if base_dir is not None else default_base_dir()
        self.cluster_name = cluster_name
        self.partition = partition
        self.start_timeout = start_timeout
        self.ctld_port = ctld_port
        self.slurmd_port = slurmd_port
        self.hostname = socket.gethostname().split(".")[0]
        self.etc_dir = self.base_dir / "etc"
        self.log_dir = self.base_dir / "log"
        self.run_dir = self.base_dir / "run"
        self.state_dir = self.base_dir / "state"
        self.spool_dir = self.base_dir / "spool"
        self.munge_dir = self.base_dir / "munge"
        self.conf_path = self.etc_dir / "slurm.conf"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.munge_key = self.munge_dir / "munge.key"
        self.slurmctld_log = self.log_dir / "slurmctld.log"
        self.slurmd_log = self.log_dir / "slurmd.log"
        self.munged_log = self.log_dir / "munged.log"
        self._state_file = self.base_dir / "harness.json"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.adopted = False
        self.running = False

    # ------------------------------------------------------------------ environment
    @property
    def env(self) -> dict[str, str]:
        """Variables a SLURM client needs on top of the ambient environment."""
        return {"SLURM_CONF": str(self.conf_path)}

    def client_env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` + :attr:`env` + ``extra``: pass as ``env=`` to subprocess."""
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra)
        return env

    # ---------------------------------------------------------------- start / stop
    def start(self) -> SlurmCluster:
        """Start munged, slurmctld and slurmd; block until the node is idle."""
        missing = missing_binaries()
        if missing:
            raise SlurmHarnessError(f"SLURM binaries missing: {', '.join(missing)}")
        if self._adoptable():
            self.adopted = True
            self.running = True
            return self
        self.kill_stale()
        for d in (self.state_dir, self.spool_dir, self.log_dir, self.run_dir, self.munge_dir):
            shutil.rmtree(d, ignore_errors=True)
        for d in (
            self.base_dir,
            self.etc_dir,
            self.log_dir,
            self.run_dir,
            self.state_dir,
            self.spool_dir,
            self.munge_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755 if d != self.munge_dir else 0o700)
        if not _port_free(self.ctld_port):
            self.ctld_port = _free_port()
        if not _port_free(self.slurmd_port) or self.slurmd_port == self.ctld_port:
            self.slurmd_port = _free_port()
        self._write_munge_key()
        self._write_conf()
        self._link_run_conf()
        try:
            self._prepare()
            self._start_daemons()
            self._write_state()
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        self.running = True
        return self

    def _prepare(self) -> None:
        """What the daemons need besides files (the multi-node cluster: its network);
        a single-node cluster only removes what a multi-node run in the same directory
        may have left."""
        self.teardown_network()

    def teardown_network(self) -> None:
        """Remove the namespaces, veths, bridge and /etc/netns folders that a multi-node
        cluster in ``base_dir`` recorded in ``network.json`` (none: nothing to do)."""
        from tests.harness.slurm_multinode import teardown_network

        recorded = self.base_dir / "network.json"
        with contextlib.suppress(OSError, ValueError):
            teardown_network(json.loads(recorded.read_text()))
        with contextlib.suppress(OSError):
            recorded.unlink()

    def _start_daemons(self) -> None:
        self._start_munged()
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-f", str(self.conf_path)])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf_path)])

    def stop(self) -> None:
        """Stop the daemons this object started (and any job steps); keep the logs."""
        if self.adopted:
            self.running = False
            return
        procs = list(self._procs.items())
        self._procs.clear()
        # slurmd(s) first (they take job steps with them), then the controller, then munge
        for name in ("slurmd", "slurmctld", "munged"):
            for pname, proc in procs:
                if pname.split("-")[0] == name and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
        self.kill_stale()  # stray slurmstepd / daemons from pid files
        self.teardown_network()
        self._unlink_run_conf()
        with contextlib.suppress(OSError):
            self._state_file.unlink()
        self.running = False

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill_stale(self) -> list[int]:
        """Kill daemons (and job steps) that belong to ``base_dir``; return their pids."""
        me = os.getpid()
        victims: set[int] = set()
        # 1. pid files written by us / by the daemons
        for pidfile in (self.run_dir).glob("*.pid") if self.run_dir.exists() else []:
            with contextlib.suppress(OSError, ValueError):
                victims.add(int(pidfile.read_text().split()[0]))
        with contextlib.suppress(OSError, ValueError):
            victims.update(json.loads(self._state_file.read_text())["pids"].values())
        victims = {p for p in victims if self._is_ours(p)}
        # 2. /proc scan: anything of ours that referenced the directory
        victims |= set(self._scan_proc())
        victims.discard(me)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(process_alive(p) for p in victims):
            time.sleep(0.2)
        for pid in victims:
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        return sorted(victims)

    # ---------------------------------------------------------------------- queries
    def is_up(self) -> bool:
        """True when ``sinfo`` answers and shows our node."""
        try:
            return self.node_state() is not None
        except SlurmHarnessError:
            return False

    def node_state(self) -> str | None:
        """Compact node state (``idle``, ``mix``, ``alloc``, ``down*`` ...) or None."""
        res = self.run(["sinfo", "-h", "-N", "-p", self.partition, "-o", "%N %t"], check=False)
        if res.returncode != 0:
            return None
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == self.hostname:
                return parts[1]
        return None

    def run(
        self, args: list[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster."""
        try:
            res = subprocess.run(
                args,
                env=self.client_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmHarnessError(f"{args[0]} failed: {exc}") from exc
        if check and res.returncode != 0:
            raise SlurmHarnessError(
                f"{' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
            )
        return res

    def sbatch(self, *args: str, cwd: str | os.PathLike[str] | None = None) -> int:
        """``sbatch --parsable *args``; return the job id."""
        res = subprocess.run(
            ["sbatch", "--parsable", *args],
            env=self.client_env(),
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=60,
            check=False,
        )
        if res.returncode != 0:
            raise SlurmHarnessError(f"sbatch {' '.join(args)} failed: {res.stderr}")
        return int(res.stdout.strip().split(";")[0])

    def job_state(self, job_id: int) -> str | None:
        """State of a job from ``squeue --states=all`` (works without accounting
        because finished jobs stay in slurmctld for ``MinJobAge`` seconds)."""
        res = self.run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T"], check=False)
        out = res.stdout.strip()
        return out.splitlines()[0].strip() if res.returncode == 0 and out else None

    def wait_job(self, job_id: int, timeout: float = 60.0) -> str:
        """Poll until the job reaches a terminal state; return it."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in _TERMINAL_STATES:
                return state
            time.sleep(0.25)
        raise SlurmHarnessError(
            f"job {job_id} still {state!r} after {timeout}s\n" + self.log_tails()
        )

    def job_pids(self, job_id: int | str) -> list[int]:
        """Pids of a running job's processes (``scontrol listpids``, which asks the
        slurmd of the node it runs on: here, this host)."""
        return _listed_pids(self.run(["scontrol", "listpids", str(job_id)], check=False))

    def submitted_job_ids(self) -> list[int]:
        """Job ids of every accepted batch submission, from the slurmctld log."""
        try:
            text = self.slurmctld_log.read_text(errors="replace")
        except OSError:
            return []
        return [int(m.group(1)) for m in _SUBMIT_RE.finditer(text)]

    def submission_count(self) -> int:
        """Number of ``_slurm_rpc_submit_batch_job: JobId=`` lines in the slurmctld log."""
        return len(self.submitted_job_ids())

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for log in (
            self.slurmctld_log,
            self.slurmd_log,
            self.munged_log,
            self.log_dir / "slurmctld.out",
            self.log_dir / "slurmd.out",
            self.log_dir / "munged.out",
        ):
            if log.exists() and log.stat().st_size:
                parts.append(f"--- {log} (last {lines} lines)\n{_tail(log, lines)}")
        return "\n".join(parts) or f"(no daemon logs under {self.log_dir})"

    # --------------------------------------------------------------------- internals
    def _is_ours(self, pid: int) -> bool:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            return False
        return Path(argv0).name in _DAEMONS

    def _scan_proc(self) -> Iterator[int]:
        marker = str(self.base_dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            argv0 = Path(cmdline.split(b"\0")[0].decode(errors="replace")).name
            if argv0 not in _DAEMONS:
                continue
            if marker in cmdline:
                yield int(entry.name)
                continue
            with contextlib.suppress(OSError):
                if b"SLURM_CONF=" + marker in (entry / "environ").read_bytes():
                    yield int(entry.name)

    def _adoptable(self) -> bool:
        try:
            state = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return False
        if state.get("owner_pid") != os.getpid():
            return False
        if not all(process_alive(p) for p in state.get("pids", {}).values()):
            return False
        self.ctld_port = state.get("ctld_port", self.ctld_port)
        self.slurmd_port = state.get("slurmd_port", self.slurmd_port)
        return self.node_state() in {"idle", "mix", "alloc"}

    def _write_state(self) -> None:
        state = {
            "owner_pid": os.getpid(),
            "pids": {name: p.pid for name, p in self._procs.items()},
            "ctld_port": self.ctld_port,
            "slurmd_port": self.slurmd_port,
            "conf": str(self.conf_path),
        }
        self._state_file.write_text(json.dumps(state, indent=2))

    def _write_munge_key(self) -> None:
        # A private key for a private munged: /etc/munge is neither read nor written.
        fd = os.open(self.munge_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(1024))
        self.munge_key.chmod(0o600)

    def _hardware(self) -> dict[str, str]:
        return _node_hardware()

    def _controller(self) -> str:
        """``SlurmctldHost=``: this host."""
        return self.hostname

    def _node_lines(self) -> str:
        """The ``NodeName=`` and ``PartitionName=`` lines: this host, all of it."""
        node_hw = " ".join(f"{k}={v}" for k, v in self._hardware().items())
        return (f"NodeName={self.hostname} {node_hw} State=UNKNOWN\n"
                f"PartitionName={self.partition} Nodes={self.hostname} Default=YES "
                "MaxTime=INFINITE State=UP\n")

    def _write_conf(self) -> None:
        user = getpass.getuser()
        # one slurmd: plain file names; several: one per node (%n, the node's name)
        node = "-%n" if self.per_node_files else ""
        conf = f"""\
# Generated by {type(self).__module__.replace('.', '/')}.py -- throwaway test cluster.
ClusterName={self.cluster_name}
SlurmctldHost={self._controller()}
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.state_dir}
SlurmdSpoolDir={self.spool_dir}/slurmd-%n
SlurmctldPidFile={self.run_dir}/slurmctld.pid
SlurmdPidFile={self.run_dir}/slurmd{node}.pid
SlurmctldLogFile={self.slurmctld_log}
SlurmdLogFile={self.log_dir}/slurmd{node}.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={self.etc_dir}/plugstack.conf
# no cgroups: works in containers / gVisor
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# trust slurm.conf for the node's hardware instead of draining on a mismatch
SlurmdParameters=config_overrides
ReturnToService=2
# no accounting database: finished jobs are only visible while slurmctld keeps them,
# so keep them for an hour (squeue --states=all is the status command then)
MinJobAge=3600
AccountingStorageType=accounting_storage/none
# enforce --mem without cgroups: sample each step's processes every second and kill a
# step over its limit (tests of out-of-memory jobs need a cluster that kills them)
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/none
# fast turnaround for tests
InactiveLimit=0
KillWait=5
Waittime=0
MessageTimeout=30
SlurmdTimeout=300
SlurmctldTimeout=120
"""
        self.conf_path.write_text(conf + self._node_lines())
        (self.etc_dir / "plugstack.conf").write_text("")

    def _link_run_conf(self) -> None:
        """Point ``/run/slurm/conf`` at our ``etc`` dir.

        Needed because snakemake-executor-plugin-slurm-jobstep (0.6.1) strips every
        ``SLURM_*`` variable except the job-identity ones -- SLURM_CONF included --
        from the environment of the ``srun`` it runs inside the job. That ``srun``
        then looks for ``/etc/slurm/slurm.conf``, then ``/run/slurm/conf/slurm.conf``
        (where a configless slurmd keeps its cache), then DNS SRV records. We provide
        the second, exactly like a configless slurmd would.
        """
        etc_default = Path("/etc/slurm/slurm.conf")
        if etc_default.exists():
            warnings.warn(
                f"{etc_default} exists: srun inside Snakemake SLURM jobs will use it "
                f"instead of the test cluster's {self.conf_path}",
                stacklevel=2,
            )
        if not RUN_CONF_LINK.parent.is_dir():
            try:
                RUN_CONF_LINK.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                warnings.warn(
                    f"cannot create {RUN_CONF_LINK.parent} ({exc}): srun inside "
                    "Snakemake SLURM jobs will not find the test cluster",
                    stacklevel=2,
                )
                return
        if RUN_CONF_LINK.is_symlink():
            RUN_CONF_LINK.unlink()
        elif RUN_CONF_LINK.exists():
            raise SlurmHarnessError(
                f"{RUN_CONF_LINK} exists and is not a symlink (a configless slurmd of "
                "another cluster?); refusing to replace it"
            )
        RUN_CONF_LINK.symlink_to(self.etc_dir, target_is_directory=True)

    def _unlink_run_conf(self) -> None:
        with contextlib.suppress(OSError):
            if RUN_CONF_LINK.is_symlink() and RUN_CONF_LINK.readlink() == self.etc_dir:
                RUN_CONF_LINK.unlink()

    def _daemon_env(self) -> dict[str, str]:
        return self.client_env()

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = (self.log_dir / f"{name}.out").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._daemon_env(),
            cwd=self.base_dir,
            start_new_session=True,  # survives Ctrl-C in pytest; we stop it explicitly
        )
        out.close()
        self._procs[name] = proc
        (self.run_dir / f"harness-{name}.pid").write_text(f"{proc.pid}\n")

    def _start_munged(self) -> None:
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={self.munge_key}",
                f"--pid-file={self.run_dir}/munged.pid",
                f"--seed-file={self.munge_dir}/munged.seed",
                f"--log-file={self.munged_log}",
                "--num-threads=4",
            ],
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.munge_socket.exists():
                return
            if self._procs["munged"].poll() is not None:
                break
            time.sleep(0.1)
        raise SlurmHarnessError("munged did not come up\n" + self.log_tails())

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        state = None
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmHarnessError(
                        f"{name} exited with {proc.returncode} during start-up "
                        f"(conf: {self.conf_path})\n" + self.log_tails()
                    )
            state = self.node_state()
            if state == "idle":
                return
            time.sleep(0.3)
        raise SlurmHarnessError(
            f"node {self.hostname} not idle after {self.start_timeout}s "
            f"(last sinfo state: {state!r}; conf: {self.conf_path})\n" + self.log_tails()
        )


# ------------------------------------------------------------------ a second user
#: The unprivileged local account that plays another user of the shared cluster.
INTRUDER = "cfintruder"


def ensure_user(name: str = INTRUDER) -> str:
    """Create the unprivileged local user ``name`` (no home, no login shell, its own group)
    unless it exists; returns its name.  Needs root, as on CI."""
    import pwd

    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        return name
    if os.geteuid() != 0:
        raise SlurmHarnessError(f"creating the test user {name!r} needs root")
    res = subprocess.run(
        [_which("useradd"), "--system", "--no-create-home", "--user-group",
         "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, check=False, timeout=60)
    if res.returncode not in (0, 9):  # 9: created meanwhile by another session
        raise SlurmHarnessError(f"useradd {name} failed: {res.stderr}")
    return name


def python_for_others() -> tuple[str, dict[str, str]]:
    """An interpreter another user can run with this venv's packages: ``(path, env)``.

    The venv's interpreter often lives under root's home (0700), so the system Python of
    the same version is used with the venv's ``site-packages`` on ``PYTHONPATH``."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        real = Path(candidate).resolve()
        if real.is_file() and all(p.stat().st_mode & 0o005 == 0o005
                                  for p in [real, *real.parents] if p != Path("/")):
            site = next(p for p in sys.path if p.endswith("site-packages")
                        and p.startswith(sys.prefix))
            repo = str(Path(__file__).resolve().parents[2])
            return str(real), {"PYTHONPATH": os.pathsep.join([repo, site]),
                               "PYTHONNOUSERSITE": "1"}
    raise SlurmHarnessError(f"no {version} that other users can run")


def _as_user(user: str, argv: list[str], env: dict[str, str] | None) -> tuple[list[str], dict]:
    return ([_which("runuser"), "-u", user, "--", *argv],
            {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8", **(env or {})})


def run_as(user: str, argv: list[str], *, timeout: float = 120, stdin: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` with none of root's groups or capabilities (``runuser``),
    from ``/`` with a minimal environment (plus ``env``), and return what it printed."""
    command, full_env = _as_user(user, argv, env)
    return subprocess.run(command, cwd="/", input=stdin, env=full_env, capture_output=True,
                          text=True, check=False, timeout=timeout)


def start_as(user: str, argv: list[str], *,
             env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Like :func:`run_as`, but running on: text pipes to its stdin and stdout."""
    command, full_env = _as_user(user, argv, env)
    return subprocess.Popen(command, cwd="/", env=full_env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def listening_tcp(pid_of: str | None = None) -> list[tuple[str, int, int]]:
    """``(address, port, pid)`` of every listening TCP socket of this machine, from
    ``ss -ltnpH`` (pids are shown for root); ``pid_of`` keeps those of processes whose
    command line contains it."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        host, _, port = fields[3].rpartition(":")
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            if pid_of is not None:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if pid_of.encode() not in cmdline:
                    continue
            found.append((host.strip("[]"), int(port), pid))
    return sorted(set(found))


# ---------------------------------------------------------------------------- pytest
def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def make_cluster() -> tuple[SlurmCluster, str]:
    """The cluster the suite runs on, and why: the multi-node cluster
    (:mod:`tests.harness.slurm_multinode`, ``$COHORTFLOW_SLURM_NODES`` nodes, default 3)
    where this machine allows network namespaces, else this single-node one.
    ``COHORTFLOW_SLURM_NODES=1`` asks for the single-node cluster (for debugging); under
    ``CI=true`` a machine without namespaces is an error, not a fallback.
    """
    from tests.harness.slurm_multinode import MultiNodeSlurmCluster, namespaces_usable

    wanted = os.environ.get("COHORTFLOW_SLURM_NODES", "3").strip() or "3"
    if not wanted.isdigit() or not 1 <= int(wanted) <= 9:
        raise SlurmHarnessError(
            f"COHORTFLOW_SLURM_NODES={wanted!r}: a number of nodes from 1 to 9; fix: unset "
            "it (3 nodes) or set 1 for the single-node cluster")
    if int(wanted) == 1:
        return SlurmCluster(), "single node (COHORTFLOW_SLURM_NODES=1)"
    why_not = namespaces_usable()
    if why_not is None:
        return MultiNodeSlurmCluster(nodes=int(wanted)), f"{wanted} nodes"
    if _on_ci():
        raise SlurmHarnessError(
            f"the multi-node SLURM test cluster needs network namespaces: {why_not}; fix: "
            "run CI as root with iproute2 and util-linux, or set COHORTFLOW_SLURM_NODES=1")
    warnings.warn(f"SLURM tests run on a single node: {why_not}", stacklevel=2)
    return SlurmCluster(), f"single node ({why_not})"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Session-wide SLURM cluster (:func:`make_cluster`: several nodes where namespaces
    work); exports ``SLURM_CONF``.

    Skips when the SLURM binaries are missing -- except under ``CI=true``, where a
    SLURM test must never silently skip, so it fails instead (and so it does when the
    multi-node cluster cannot be made).
    """
    missing = missing_binaries()
    if missing:
        msg = (
            f"SLURM test cluster unavailable: missing {', '.join(missing)} "
            "(apt-get install slurm-wlm munge)"
        )
        if _on_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    try:
        cluster, _ = make_cluster()
    except SlurmHarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cluster.start()
    except SlurmHarnessError as exc:
        pytest.fail(f"could not start the SLURM test cluster: {exc}", pytrace=False)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf_path)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()


# ------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m tests.harness.slurm {start,stop,status,env}``."""
    args = sys.argv[1:] if argv is None else argv
    cmd = args[0] if args else "status"
    cluster, how = make_cluster()
    if cmd == "start":
        cluster.start()
        print(f"SLURM test cluster ({how}) up in {cluster.base_dir}")
        print(f"export SLURM_CONF={cluster.conf_path}")
        return 0
    if cmd == "stop":
        killed = cluster.kill_stale()
        cluster.stop()
        print(f"stopped {len(killed)} process(es)")
        return 0
    if cmd == "env":
        print(f"export SLURM_CONF={cluster.conf_path}")
        return 0
    if cmd == "status":
        state = cluster.node_state() if cluster.conf_path.exists() else None
        print(f"{cluster.hostname}: {state or 'down'} (conf: {cluster.conf_path})")
        return 0 if state else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
