"""Safe on a shared cluster: person-level results readable by their owner only, Dask
clusters that admit only holders of the run's own TLS credentials, and another user of the
machine who tries to get in while a slurm-dask study runs, and after.
"""

from __future__ import annotations

import grp
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client
from distributed.security import Security
from distributed.utils import get_ip

from cohortflow import compute, private
from cohortflow.privacy import PSEUDONYM_KEY_ENV
from tests.conftest import REPO, digests, write_study
from tests.harness import slurm as slurm_harness
from tests.harness.intruded import IntrudedRun, modes, run_dirs

JOBQUEUE_CONFIG = REPO / "profiles" / "slurm-dask" / "jobqueue.yaml"


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
    assert run_dirs(run.results) == []  # credentials and scheduler file removed


def slurm_records(cluster: slurm_harness.SlurmCluster) -> Iterator[Path]:
    """SLURM's own copies of the job scripts and environments, and the daemons' logs."""
    for folder in (cluster.state_dir, cluster.spool_dir, cluster.log_dir):
        yield from (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def job_scripts(cluster: slurm_harness.SlurmCluster) -> list[Path]:
    return [p for p in cluster.state_dir.rglob("script") if re.match(r"job\.\d+", p.parent.name)]
