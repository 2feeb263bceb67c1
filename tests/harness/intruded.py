"""The slurm-dask demo study run while a second user of the machine probes it (the
``intruded_run`` session fixture, made available to every test module by tests/conftest.py,
so the run happens once per session), and the probe's helpers."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from distributed import Client
from distributed.security import Security
from distributed.utils import get_ip

from cohortflow.privacy import PSEUDONYM_KEY_ENV
from tests.harness import slurm as slurm_harness
from tests.helpers import PERSONS, REPO, write_study


def modes(root: Path) -> dict[str, str]:
    """Permission bits of every file and folder under ``root`` (itself included)."""
    return {str(p.relative_to(root)): oct(stat.S_IMODE(p.lstat().st_mode))
            for p in [root, *sorted(root.rglob("*"))] if not p.is_symlink()}



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


def run_dirs(results: Path) -> list[Path]:
    """The private run folders of the features steps' Dask clusters (one per target)."""
    return sorted((results / "features").glob("*/.dask/dask-*"))


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
            dirs = [d for d in run_dirs(results) if (d / "scheduler.json").is_file()]
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
