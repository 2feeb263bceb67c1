"""Safe on a shared cluster: person-level results readable by their owner only, Dask
clusters that admit only holders of the run's own TLS credentials, and another user of the
machine who tries to get in while a slurm-dask study runs, and after.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from distributed import Client
from distributed.security import Security
from distributed.utils import get_ip

from cohortflow import compute, private
from cohortflow.privacy import PSEUDONYM_KEY_ENV
from tests.conftest import PERSONS, REPO, digests, write_study
from tests.harness import slurm as slurm_harness

JOBQUEUE_CONFIG = REPO / "profiles" / "slurm-dask" / "jobqueue.yaml"


def modes(root: Path) -> dict[str, str]:
    """Permission bits of every file and folder under ``root`` (itself included)."""
    return {str(p.relative_to(root)): oct(stat.S_IMODE(p.lstat().st_mode))
            for p in [root, *sorted(root.rglob("*"))] if not p.is_symlink()}


def open_to_others(root: Path, allowed_dir: int = 0o700, allowed_file: int = 0o600) -> dict:
    """Files and folders under ``root`` with any permission bit beyond the allowed ones."""
    found = {}
    for p in [root, *sorted(root.rglob("*"))]:
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.lstat().st_mode)
        if mode & ~(allowed_dir if p.is_dir() else allowed_file):
            found[str(p.relative_to(root))] = oct(mode)
    return found


# ----------------------------------------------------------------- private results
@pytest.fixture
def umask_restored() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_protect_makes_an_owner_only_tree(tmp_path: Path, umask_restored: None) -> None:
    results = tmp_path / "results" / "demo"
    private.protect(results)
    (results / "cohort").mkdir()
    (results / "cohort" / "0.parquet").write_bytes(b"person-level")
    assert modes(results) == {".": "0o700", "cohort": "0o700", "cohort/0.parquet": "0o600"}
    private.protect(results)  # a rerun into its own tree is fine


def test_protect_refuses_a_results_directory_others_can_read(
    tmp_path: Path, umask_restored: None
) -> None:
    results = tmp_path / "results" / "demo"
    results.mkdir(parents=True, mode=0o755)
    results.chmod(0o755)
    with pytest.raises(private.PermissionsError) as refused:
        private.protect(results)
    message = str(refused.value)
    assert str(results) in message and "other users" in message and "0755" in message
    assert f"fix: chmod -R go-rwx {results}" in message
    results.chmod(0o770)
    with pytest.raises(private.PermissionsError, match="open to its group"):
        private.protect(results)


def test_share_with_group_gives_the_group_read_only(tmp_path: Path,
                                                    umask_restored: None) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    results = tmp_path / "results" / "demo"
    private.protect(results, group)
    (results / "model").mkdir()
    (results / "model" / "metrics.json").write_text("{}")
    assert modes(results) == {".": "0o2750", "model": "0o2750", "model/metrics.json": "0o640"}
    assert {p.stat().st_gid for p in [results, *results.rglob("*")]} == {os.getgid()}
    results.chmod(0o2770)  # group-writable: refused even when shared
    with pytest.raises(private.PermissionsError, match=r"fix: chmod -R g-w,o-rwx"):
        private.protect(results, group)
    with pytest.raises(private.PermissionsError, match="no group 'no-such-group-x'"):
        private.protect(tmp_path / "other", "no-such-group-x")


def test_cohortflow_run_refuses_an_open_results_directory(tmp_path: Path) -> None:
    study = write_study(tmp_path / "study.yaml")
    results = tmp_path / "results" / "demo"
    results.mkdir(parents=True)
    results.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-m", "cohortflow", "run", str(study), "--results", "results"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join((done.stdout + done.stderr).split())
    assert (f"{results}: results directory is open to its group and other users "
            "(mode 0755)") in message
    assert f"fix: chmod -R go-rwx {results}" in message
    assert list(results.iterdir()) == []  # nothing written into it
    assert not (tmp_path / ".snakemake").exists()


@pytest.mark.e2e
def test_a_laptop_run_leaves_every_result_owner_only(laptop_run: tuple) -> None:
    results, _ = laptop_run
    assert len(modes(results)) > 50
    assert open_to_others(results) == {}


# -------------------------------------------------------------------- TLS for Dask
def test_a_jobqueue_cluster_admits_only_holders_of_its_run_credentials(
    tmp_path: Path, umask_restored: None
) -> None:
    """No worker job is submitted (adaptive minimum 0): the scheduler alone is tried."""
    scheduler_dir = tmp_path / ".dask"
    chosen = compute.backend(JOBQUEUE_CONFIG, scheduler_dir)
    with chosen.cluster(None) as cluster:
        (run,) = scheduler_dir.iterdir()
        key = (run / "key.pem").read_text()
        assert cluster.scheduler_address.startswith("tls://")
        assert modes(run) == {".": "0o700", "cert.pem": "0o600", "key.pem": "0o600",
                              "scheduler.json": "0o600"}
        script = cluster.job_script()
        assert f"--tls-key {run / 'key.pem'}" in script
        assert "PRIVATE KEY" not in script
        assert not [line for line in key.splitlines()[1:-1] if line in script]
        # no dashboard; the scheduler's HTTP endpoint stays on loopback
        assert cluster.scheduler.http_server.address == "127.0.0.1"
        port = cluster.scheduler.http_server.port
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10)
        address = cluster.scheduler_address
        with Client(address, security=cluster.security, timeout=10) as client:
            assert client.scheduler_info()["address"] == address
        with pytest.raises(OSError):
            Client(address.replace("tls://", "tcp://"), timeout=5)
        made = Security.temporary()
        for name, text in (("cert.pem", made.tls_ca_file), ("key.pem", made.tls_client_key)):
            (tmp_path / name).write_text(text)
        self_made = Security(require_encryption=True, tls_ca_file=str(tmp_path / "cert.pem"),
                             tls_client_cert=str(tmp_path / "cert.pem"),
                             tls_client_key=str(tmp_path / "key.pem"))
        with pytest.raises(OSError):
            Client(address, security=self_made, timeout=5)
    assert list(scheduler_dir.iterdir()) == []  # credentials removed with the cluster


def test_worker_jobs_are_submitted_without_the_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_restored: None
) -> None:
    """sbatch copies its environment into SLURM's record of the job: a stand-in sbatch
    records what it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\nenv > {tmp_path}/sbatch.env\ncp "$1" {tmp_path}/job.sh\necho 4242\n')
    (bin_dir / "scancel").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    key, password = "pk-" + secrets.token_hex(16), "pw-" + secrets.token_hex(16)
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, key)
    monkeypatch.setenv("PGPASSWORD", password)
    monkeypatch.setenv("COHORTFLOW_TEST_VISIBLE", "yes")  # ordinary variables still pass
    with compute.backend(JOBQUEUE_CONFIG, tmp_path / ".dask").cluster(None) as cluster:
        tls_key = next((tmp_path / ".dask").glob("*/key.pem")).read_text()
        cluster.scale(1)
        for _ in range(300):
            if (tmp_path / "job.sh").is_file():
                break
            time.sleep(0.1)
    submitted = (tmp_path / "sbatch.env").read_text()
    assert "COHORTFLOW_TEST_VISIBLE=yes" in submitted
    assert key not in submitted and password not in submitted
    script = (tmp_path / "job.sh").read_text()
    assert "--tls-key" in script and "PRIVATE KEY" not in script
    assert not [line for line in tls_key.splitlines()[1:-1] if line in script + submitted]


def test_a_local_cluster_listens_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHORTFLOW_WORKERS", "1")
    with compute.dask_client() as client:
        cluster = client.cluster
        addresses = [cluster.scheduler_address,
                     *client.scheduler_info()["workers"]]
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
        assert cluster.scheduler.http_server.address == "127.0.0.1"
        port = cluster.scheduler.http_server.port
        with pytest.raises(urllib.error.HTTPError, match="404"):  # no dashboard
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10)


def test_the_private_run_dir_of_a_killed_driver_is_removed_by_the_next(tmp_path: Path) -> None:
    host = socket.gethostname()
    gone = tmp_path / f"dask-{host}-999999999-abc"
    other_host = tmp_path / "dask-elsewhere-1-abc"
    for folder in (gone, other_host):
        folder.mkdir()
        (folder / "key.pem").write_text("x")
    with compute.private_run_dir(tmp_path) as run:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other_host.name, run.name])
    assert [p.name for p in tmp_path.iterdir()] == [other_host.name]


# --------------------------------------------------------- the intruder, on SLURM
#: Worker jobs sized for the one small test node, as in tests/test_e2e.py.
SIZING = {"DASK_JOBQUEUE__SLURM__CORES": "1", "DASK_JOBQUEUE__SLURM__MEMORY": "1GiB",
          "DASK_COHORTFLOW__ADAPT__MAXIMUM": "2"}


@dataclass
class IntrudedRun:
    """A slurm-dask demo study run while another user tried to get in."""

    workdir: Path
    results: Path
    env: dict[str, str]
    stdout: bytes
    stderr: bytes
    returncode: int
    elapsed: float
    credentials: dict[str, str] = field(default_factory=dict)   # file name -> content
    scheduler_address: str = ""
    head_listeners: list[tuple[str, int, int]] = field(default_factory=list)
    during: list[dict] = field(default_factory=list)   # the intruder's outcomes
    owner_control: list[str] = field(default_factory=list)
    modes_seen: dict[str, str] = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    submissions: int = 0   # SLURM jobs submitted during the run (the Dask workers)


class Intruder:
    """The second user's long-running probe process (tests/harness/intruder.py)."""

    def __init__(self, user: str) -> None:
        python, env = slurm_harness.python_for_others()
        self.proc = slurm_harness.start_as(
            user, [python, str(REPO / "tests" / "harness" / "intruder.py")], env=env)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        assert json.loads(ready or "{}").get("ready"), self.proc.stderr.read()  # type: ignore[union-attr]

    def attempt(self, **request: list[str]) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def owner_can_connect(address: str, credentials: dict[str, str], folder: Path) -> str:
    """The positive control: the run's own credentials do connect to ``address``."""
    for name, text in credentials.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o600)
    security = Security(require_encryption=True, tls_ca_file=str(folder / "cert.pem"),
                        tls_client_cert=str(folder / "cert.pem"),
                        tls_client_key=str(folder / "key.pem"))
    try:
        with Client(address, security=security, timeout=10) as client:
            return f"CONNECTED ({len(client.scheduler_info()['workers'])} workers)"
    except OSError as exc:
        return f"failed: {exc}"


def network_targets(listeners: list[tuple[str, int, int]]) -> list[str]:
    """``host:port`` to try for each listening socket: one bound to every interface is
    tried at this machine's own address, as another node of the cluster would reach it.

    >>> network_targets([("0.0.0.0", 7, 1), ("::", 7, 1), ("10.0.0.5", 8, 1)]) == sorted(
    ...     ["10.0.0.5:8", f"{get_ip()}:7"])
    True
    """
    machine = get_ip()  # the address other nodes use (as Dask itself finds it)
    targets = set()
    for host, port, _ in listeners:
        if host in ("0.0.0.0", "::", "*"):
            host = machine
        targets.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return sorted(targets)


def _run_dirs(results: Path) -> list[Path]:
    return sorted((results / "features" / ".dask").glob("dask-*"))


@pytest.fixture(scope="session")
def intruded_run(slurm_cluster: slurm_harness.SlurmCluster, tmp_path_factory:
                 pytest.TempPathFactory) -> Iterator[IntrudedRun]:
    """The demo study (as in ``laptop_run``) under slurm-dask, in a project folder other
    users may enter (0755, as on a shared filesystem), while the second user probes it."""
    user = slurm_harness.ensure_user()
    private_dir = tmp_path_factory.mktemp("intruded")
    workdir = Path(tempfile.mkdtemp(prefix="cf-shared-", dir="/tmp"))
    workdir.chmod(0o755)
    study = write_study(workdir / "study.yaml", source__synth__persons=PERSONS)
    study.chmod(0o644)  # the control: a file of the project others may read
    env = {**os.environ, **slurm_cluster.env, **SIZING,
           PSEUDONYM_KEY_ENV: "pk-" + secrets.token_hex(16), "TMPDIR": str(workdir / "tmp")}
    (workdir / "tmp").mkdir()
    results = workdir / "results" / "demo"
    intruder = Intruder(user)
    out, err = (private_dir / "stdout").open("wb"), (private_dir / "stderr").open("wb")
    started, submitted = time.monotonic(), slurm_cluster.submission_count()
    head = subprocess.Popen(
        [sys.executable, "-m", "cohortflow", "run", str(study), "--profile", "slurm-dask",
         "--results", "results"], cwd=workdir, stdout=out, stderr=err, env=env)
    run = IntrudedRun(workdir, results, env, b"", b"", 0, 0.0)
    try:
        while head.poll() is None and not run.during:
            dirs = [d for d in _run_dirs(results) if (d / "scheduler.json").is_file()]
            if not dirs:
                time.sleep(0.2)
                continue
            live = dirs[0]
            with contextlib.suppress(OSError, ValueError):
                run.credentials = {n: (live / n).read_text() for n in ("cert.pem", "key.pem")}
                run.scheduler_address = json.loads((live / "scheduler.json").read_text())[
                    "address"]
                run.modes_seen = modes(live)
            if not run.scheduler_address:
                continue
            # The scheduler's address as another user finds it: the port list.
            run.head_listeners = [entry for entry in slurm_harness.listening_tcp(str(study))
                                  if not entry[0].startswith("127.")]
            targets = network_targets(run.head_listeners)
            paths = sorted(str(p) for p in [*results.rglob("*"), *live.iterdir()]
                           if p.is_file())
            run.owner_control.append(owner_can_connect(run.scheduler_address,
                                                       run.credentials, private_dir))
            run.during.append(intruder.attempt(
                read=[*paths, str(study)], connect=targets,
                list=[str(results), str(live), str(live.parent)]))
            run.owner_control.append(owner_can_connect(run.scheduler_address,
                                                       run.credentials, private_dir))
        head.wait(timeout=1800)
    finally:
        if head.poll() is None:
            head.kill()
        out.close()
        err.close()
    run.elapsed = time.monotonic() - started
    run.submissions = slurm_cluster.submission_count() - submitted
    run.returncode = head.returncode
    run.stdout = (private_dir / "stdout").read_bytes()
    run.stderr = (private_dir / "stderr").read_bytes()
    finished = sorted(str(p) for p in results.rglob("*") if p.is_file())
    run.after = intruder.attempt(read=finished, list=[str(results)])
    intruder.close()
    try:
        yield run
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.e2e
@pytest.mark.slurm
def test_another_user_gets_nothing_from_a_slurm_dask_run(
    intruded_run: IntrudedRun, laptop_run: tuple
) -> None:
    run = intruded_run
    assert run.returncode == 0, (run.stdout + run.stderr).decode()[-5000:]
    print(f"slurm-dask demo with TLS and an intruder: {run.elapsed:.0f} s")
    assert run.during, "the Dask scheduler was never seen running"
    (during,) = run.during
    print(f"intruder: {len(during['read'])} reads, {len(during['list'])} listings, "
          f"connections {during['connect']}")
    # The attempts reached the live scheduler: the owner's credentials connected before
    # and after them, at the address the port list gave.
    assert [c.startswith("CONNECTED") for c in run.owner_control] == [True, True], \
        run.owner_control
    host, port = run.scheduler_address.removeprefix("tls://").rsplit(":", 1)
    assert f"{host}:{port}" in {f"{h}:{p}" for h, p, _ in run.head_listeners} or \
        int(port) in {p for h, p, _ in run.head_listeners if h in ("0.0.0.0", "*")}
    assert run.modes_seen == {".": "0o700", "cert.pem": "0o600", "key.pem": "0o600",
                              "scheduler.json": "0o600"}
    # Every attempt failed: no file read, no folder listed, no client connected.
    study = str(run.workdir / "study.yaml")
    assert during["read"].pop(study).startswith("READ")  # the control: the folder is open
    assert len(during["read"]) > 20
    assert {path: outcome for path, outcome in during["read"].items()
            if not outcome.startswith("denied")} == {}
    assert all(o.startswith("denied") for o in during["list"].values()), during["list"]
    machine = get_ip()
    assert not machine.startswith("127.")  # the cluster network, not loopback
    assert f"tcp {machine}:{port}" in during["connect"]
    assert f"tls-self-made {machine}:{port}" in during["connect"]
    assert {how: o for how, o in during["connect"].items() if not o.startswith("failed")} == {}
    # The same results as a run with nobody prying, and still closed after the run.
    assert digests(run.results) == digests(laptop_run[0])
    assert len(run.after["read"]) > 50
    assert {p: o for p, o in run.after["read"].items() if not o.startswith("denied")} == {}
    assert open_to_others(run.results) == {}
    assert _run_dirs(run.results) == []  # credentials and scheduler file removed


def slurm_records(cluster: slurm_harness.SlurmCluster) -> Iterator[Path]:
    """SLURM's own copies of the job scripts and environments, and the daemons' logs."""
    for folder in (cluster.state_dir, cluster.spool_dir, cluster.log_dir):
        yield from (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def job_scripts(cluster: slurm_harness.SlurmCluster) -> list[Path]:
    return [p for p in cluster.state_dir.rglob("script") if re.match(r"job\.\d+", p.parent.name)]
