"""A real, throwaway, multi-node SLURM cluster on one machine, for the test suite.

What it adds to the single-node cluster of :mod:`tests.harness.slurm`
---------------------------------------------------------------------
The same private ``munged`` (its socket is a file: every node reaches it), the same
``slurmctld`` in this machine's own network namespace, and ``nodes`` (default 3)
``slurmd``\\ s, each a host of its own:

* its own network namespace (``ip netns add``) with one interface (``cfnet0``, a veth whose
  other end is on a Linux bridge in the host namespace) and its own address on a private
  subnet ``10.213.<k>.0/24`` (``k`` from the base directory, so two harness directories
  never share a network): the controller at ``.1`` (the bridge), ``cfnode1`` at ``.11``,
  ``cfnode2`` at ``.12`` ...; the node's default route goes through the bridge, so a node
  reaches every address of this machine (the submit host), as a compute node reaches its
  login node;
* its own UTS namespace (``unshare --uts``) and hostname (``cfnode1`` ...), so
  ``socket.gethostname()`` in a job names the node it runs on;
* its own ``/etc/hosts`` (``<base_dir>/etc/hosts`` bound over it in a mount namespace of
  its own): every node name and the controller's name resolve to their cluster addresses,
  as DNS does on a real cluster;
* the filesystem is shared (the whole machine's, as NFS would share it): job outputs, the
  munge socket, ``/run/slurm/conf``.

``slurm.conf`` names every node with ``NodeAddr=`` (no DNS needed by SLURM itself) and the
controller as ``SlurmctldHost=<this host>(10.213.<k>.1)``; per-node spool, pid and log files
use ``%n`` (``log/slurmd-cfnode1.log`` ...).  Each node gets 2 CPUs (the slurm profile's
``cores: 2`` is the widest job) and a third of this machine's memory, at least 8000 MiB
(ingest's retry asks for 8000): on a 2-core, 24 GB machine the CPUs are oversubscribed
three times over (SLURM counts them, the kernel shares the 2 real cores), the memory is
not.  ``SlurmdParameters=config_overrides`` makes each slurmd trust these numbers.

What a test can do with it: :meth:`MultiNodeSlurmCluster.job_nodes` (``squeue
--states=all -o %N``: there is no ``sacct``), :meth:`~MultiNodeSlurmCluster.crash_node`
(every process of the node killed and its link cut, as a power loss, then the controller
told) and :meth:`~MultiNodeSlurmCluster.restore_node`.

Each slurmd starts as ``nsenter --net=/run/netns/<ns> unshare --uts --mount sh -c
'mount --bind <hosts> /etc/hosts && hostname <node> && exec slurmd -D -N <node> ...'``
(not ``ip netns exec``: that remounts ``/sys`` without ``/sys/fs/cgroup``, and slurmd 22.05
will not start without it).  Needs root, iproute2 (``ip``) and util-linux (``nsenter``,
``unshare``); :func:`namespaces_usable` says whether this machine allows them.  ``stop()``
(and the next ``start()``, for a run that died) removes every namespace, veth and bridge it
made: their names are recorded in ``<base_dir>/network.json`` before any is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from cohortflow.runner import process_alive
from tests.harness.slurm import (
    SlurmCluster,
    SlurmHarnessError,
    _listed_pids,
    _tail,
    _which,
)

#: Name of every node's one network interface (the same on every node, like ``ib0``).
NODE_INTERFACE = "cfnet0"
#: Where ``ip netns add`` mounts the namespaces it makes.
NETNS_DIR = Path("/run/netns")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([_which("ip"), *args], capture_output=True, text=True, check=False,
                         timeout=30)
    if check and res.returncode != 0:
        raise SlurmHarnessError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def namespaces_usable() -> str | None:
    """None when this process can make network and UTS namespaces (root, ``ip``,
    ``unshare``), else why not -- checked by making and removing a throwaway namespace."""
    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_SYS_ADMIN)"
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"),
                          ("nsenter", "util-linux"), ("hostname", "hostname")):
        if shutil.which(tool, path=path) is None:
            return f"{tool} not found (apt-get install {package})"
    probe = f"cfprobe{os.getpid()}"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"ip netns add failed: {made.stderr.strip()}"
        uts = subprocess.run(
            [_which("nsenter"), f"--net={NETNS_DIR / probe}", _which("unshare"), "--uts",
             "--mount", "sh", "-c", "mount --bind /etc/hostname /etc/hostname && "
             "hostname cfprobe && hostname"],
            capture_output=True, text=True, check=False, timeout=30)
        if uts.returncode != 0 or uts.stdout.strip() != "cfprobe":
            return f"unshare --uts in a network namespace failed: {uts.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


class MultiNodeSlurmCluster(SlurmCluster):
    """slurmctld here and ``nodes`` slurmds, each in its own network and UTS namespace.

    >>> c = MultiNodeSlurmCluster(base_dir="/tmp/cf-doc", nodes=3)
    >>> c.node_names
    ['cfnode1', 'cfnode2', 'cfnode3']
    >>> c.node_address("cfnode2") == str(c.network.network_address + 12)
    True
    >>> str(c.controller_address).startswith("10.213."), c.network.prefixlen
    (True, 24)
    """

    per_node_files = True

    def __init__(self, base_dir: str | os.PathLike[str] | None = None, *, nodes: int = 3,
                 **kwargs: object) -> None:
        super().__init__(base_dir, **kwargs)  # type: ignore[arg-type]
        if not 1 <= nodes <= 9:
            raise ValueError(f"nodes={nodes}: between 1 and 9")
        self.node_names = [f"cfnode{i}" for i in range(1, nodes + 1)]
        tag = hashlib.sha256(str(self.base_dir.resolve()).encode()).hexdigest()[:4]
        self.tag = f"cf{tag}"
        octet = int(tag, 16) % 200 + 20
        self.network = ipaddress.ip_network(f"10.213.{octet}.0/24")
        self.controller_address = self.network.network_address + 1
        self.bridge = f"{self.tag}br"
        self._network_file = self.base_dir / "network.json"
        self.hosts_file = self.etc_dir / "hosts"

    # ------------------------------------------------------------------ names
    def node_address(self, node: str) -> str:
        """The node's address on the cluster network (``.11`` for cfnode1 ...)."""
        return str(self.network.network_address + 10 + self.node_names.index(node) + 1)

    def namespace(self, node: str) -> str:
        return f"{self.tag}-{node}"

    def host_veth(self, node: str) -> str:
        return f"{self.tag}v{self.node_names.index(node) + 1}"

    def node_log(self, node: str) -> Path:
        return self.log_dir / f"slurmd-{node}.log"

    # ---------------------------------------------------------------- start / stop
    def start(self) -> MultiNodeSlurmCluster:
        super().start()
        return self

    def _start_daemons(self) -> None:
        self._start_munged()
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-f", str(self.conf_path)])
        for node in self.node_names:
            self._spawn_node(node)

    def _spawn_node(self, node: str) -> None:
        # nsenter: the node's network; unshare: its hostname and its /etc/hosts.  Each
        # execs the next, so the pid Popen reports ends up being slurmd's.
        (self.spool_dir / f"slurmd-{node}").mkdir(parents=True, exist_ok=True)
        script = f'mount --bind {self.hosts_file} /etc/hosts && hostname {node} && exec "$0" "$@"'
        self._spawn(f"slurmd-{node}", [
            _which("nsenter"), f"--net={NETNS_DIR / self.namespace(node)}",
            _which("unshare"), "--uts", "--mount", "sh", "-c", script,
            _which("slurmd"), "-D", "-N", node, "-f", str(self.conf_path)])

    def _prepare(self) -> None:
        """Bridge, namespaces, veths, the nodes' /etc/hosts (after removing stale ones)."""
        self.teardown_network()
        names = {"bridge": self.bridge,
                 "namespaces": [self.namespace(n) for n in self.node_names],
                 "veths": [self.host_veth(n) for n in self.node_names]}
        self._network_file.write_text(json.dumps(names, indent=2))  # before making any
        prefix = self.network.prefixlen
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.controller_address}/{prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self.hosts_file.write_text(
            "127.0.0.1 localhost\n" + f"{self.controller_address} {self.hostname}\n"
            + "".join(f"{self.node_address(n)} {n}\n" for n in self.node_names))
        for node in self.node_names:
            ns, veth = self.namespace(node), self.host_veth(node)
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", NODE_INTERFACE,
                "netns", ns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.node_address(node)}/{prefix}",
                "dev", NODE_INTERFACE)
            _ip("-n", ns, "link", "set", NODE_INTERFACE, "up")
            _ip("-n", ns, "route", "add", "default", "via", str(self.controller_address))

    def teardown_network(self) -> None:
        """Remove the namespaces, veths, bridge and /etc/netns folders recorded in
        ``network.json`` (this cluster's, or a dead run's in the same directory), and
        those this cluster's names would have (a run killed while writing it)."""
        super().teardown_network()
        teardown_network({"bridge": self.bridge,
                          "namespaces": [self.namespace(n) for n in self.node_names],
                          "veths": [self.host_veth(n) for n in self.node_names]})

    def kill_stale(self) -> list[int]:
        """Every process left in this cluster's namespaces (jobs included), then the
        daemons the single-node harness finds."""
        killed = []
        for node in self.node_names:
            killed += self._kill_namespace(node)
        return sorted(set(killed + super().kill_stale()))

    def _kill_namespace(self, node: str) -> list[int]:
        res = _ip("netns", "pids", self.namespace(node), check=False)
        pids = [int(p) for p in res.stdout.split() if p.isdigit() and int(p) != os.getpid()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(process_alive(p) for p in pids):
            time.sleep(0.1)
        return pids

    # ---------------------------------------------------------------------- queries
    def node_states(self) -> dict[str, str]:
        """``{node: compact state}`` from ``sinfo`` (``idle``, ``mix``, ``down*`` ...)."""
        res = self.run(["sinfo", "-h", "-N", "-p", self.partition, "-o", "%N %t"],
                       check=False)
        if res.returncode != 0:
            return {}
        return {parts[0]: parts[1] for parts in map(str.split, res.stdout.splitlines())
                if len(parts) == 2 and parts[0] in self.node_names}

    def node_state(self) -> str | None:
        """``idle`` only when every node is idle, else the first node's other state."""
        states = self.node_states()
        if len(states) != len(self.node_names):
            return None
        others = [s for s in states.values() if s != "idle"]
        return others[0] if others else "idle"

    def job_nodes(self, job_id: int | str) -> list[str]:
        """The nodes a job ran (or runs) on, from ``squeue --states=all -o %N`` (expanded
        with ``scontrol show hostnames``)."""
        res = self.run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%N"],
                       check=False)
        names = res.stdout.strip()
        if res.returncode != 0 or not names:
            return []
        expanded = self.run(["scontrol", "show", "hostnames", names.splitlines()[0]])
        return expanded.stdout.split()

    def job_pids(self, job_id: int | str) -> list[int]:
        """Pids of a running job's processes on every node it runs on: ``scontrol
        listpids`` asks the slurmd of the host it runs on, so it runs inside each node's
        namespaces (``nsenter`` into its slurmd's)."""
        pids: list[int] = []
        for node in self.job_nodes(job_id):
            try:  # written by _spawn for this process and any other
                slurmd = int((self.run_dir / f"harness-slurmd-{node}.pid").read_text())
            except (OSError, ValueError):
                continue
            if not process_alive(slurmd):
                continue
            pids += _listed_pids(self.run(
                [_which("nsenter"), "-t", str(slurmd), "--uts", "--net", "--mount",
                 "scontrol", "listpids", str(job_id)], check=False))
        return pids

    def log_tails(self, lines: int = 30) -> str:
        parts = [super().log_tails(lines)]
        for node in self.node_names:
            for log in (self.node_log(node), self.log_dir / f"slurmd-{node}.out"):
                if log.exists() and log.stat().st_size:
                    parts.append(f"--- {log} (last {lines} lines)\n{_tail(log, lines)}")
        return "\n".join(parts)

    # ------------------------------------------------------------------- faults
    def crash_node(self, node: str, reason: str = "crashed by a test") -> list[int]:
        """Take ``node`` down as a power loss would: its link cut, every process on it
        (slurmd, job steps, the jobs' own processes) killed at once, and the controller
        told (``scontrol update State=DOWN``), as its health check would after
        ``SlurmdTimeout``.  Returns the killed pids."""
        _ip("link", "set", self.host_veth(node), "down")
        killed = self._kill_namespace(node)
        proc = self._procs.pop(f"slurmd-{node}", None)
        if proc is not None:
            proc.wait(timeout=30)
        self.run(["scontrol", "update", f"NodeName={node}", "State=DOWN",
                  f"Reason={reason}"])
        return killed

    def restore_node(self, node: str) -> None:
        """Bring a crashed node back: link up, slurmd started, node resumed; block until
        it is idle again."""
        _ip("link", "set", self.host_veth(node), "up")
        self._spawn_node(node)
        self._write_state()
        self.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.node_states().get(node) == "idle":
                return
            time.sleep(0.3)
        raise SlurmHarnessError(f"{node} not idle after restore\n" + self.log_tails())

    # --------------------------------------------------------------------- internals
    def _node_lines(self) -> str:
        total = int(self._hardware().get("RealMemory", "24000"))
        memory = max(total // len(self.node_names), 8000)
        return "".join(
            f"NodeName={n} NodeAddr={self.node_address(n)} NodeHostname={n} CPUs=2 "
            f"RealMemory={memory} State=UNKNOWN\n" for n in self.node_names) + (
            f"PartitionName={self.partition} Nodes={','.join(self.node_names)} "
            "Default=YES MaxTime=INFINITE State=UP\n")

    def _controller(self) -> str:
        return f"{self.hostname}({self.controller_address})"

    def _adoptable(self) -> bool:
        return self._network_file.exists() and super()._adoptable()


def teardown_network(names: dict) -> None:
    """Delete the namespaces (their veth ends go with them), host veths and the bridge
    named in ``names`` (as written to ``network.json``); missing ones are fine."""
    for ns in names.get("namespaces", []):
        if (NETNS_DIR / ns).exists():
            _ip("netns", "del", ns, check=False)
    links = _ip("-o", "link", "show", check=False).stdout
    for link in [*names.get("veths", []), names.get("bridge", "")]:
        if link and re.search(rf"^\d+: {re.escape(link)}[@:]", links, re.M):
            _ip("link", "del", link, check=False)
