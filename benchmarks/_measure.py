"""Shared by the benchmark scripts: time one command and read its peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple


def measure(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the largest process of a command's tree.

    ``os.wait4`` reports the child's own ``ru_maxrss``, which Linux raises to the largest
    of its waited-for descendants, so earlier commands of the benchmark do not leak in.
    """
    usage = measure_usage(cmd, cwd)
    return usage.wall, usage.rss


class Usage(NamedTuple):
    """What one command cost: wall seconds, peak RSS (MiB) and CPU seconds (user + system,
    of the command and the descendants it waited for).  On a shared machine the CPU seconds
    move less with the other users' load than the wall seconds do."""

    wall: float
    rss: float
    cpu: float


def measure_usage(cmd: list[str], cwd: Path) -> Usage:
    """:func:`measure`, with the CPU seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{stderr.decode()[-3000:]}")
    return Usage(wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def pin_cores(cores: int) -> str:
    """Run this process and the commands it starts on its first ``cores`` CPUs (0: all);
    returns a line saying which, and the load the machine had when the run began."""
    allowed = sorted(os.sched_getaffinity(0))
    if cores:
        os.sched_setaffinity(0, allowed[:cores])
    used = sorted(os.sched_getaffinity(0))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"CPUs {used} of {len(allowed)}; load average at start {load}"


SRC = Path(__file__).resolve().parents[1] / "src"


def run_child(code: str, *args: object) -> dict[str, float]:
    """Run ``python -c code args`` against this checkout's package; the JSON record its
    last line of output holds (the child measures itself)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)],
                          env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure_tree(cmd: list[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS (MiB), CPU seconds and stdout of a command, measured in a
    fresh helper process, so the RSS maximum (``ru_maxrss`` of the command and of every
    descendant it waited for) is this command's alone and not the benchmark's own.  CPU
    seconds (user + system of the whole tree) are the fairer figure on a shared machine,
    where wall time stretches with the other processes' load."""
    helper = (
        "import os, subprocess, sys, time, json, resource\n"
        "t = time.perf_counter()\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)\n"
        "out = p.stdout.read()\n"
        "_, status, ru = os.wait4(p.pid, 0)\n"
        "wall = time.perf_counter() - t\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "rss = max(ru.ru_maxrss, kids.ru_maxrss)\n"
        "print(json.dumps({'rc': os.waitstatus_to_exitcode(status), 'wall': wall,"
        " 'rss': rss / 1024, 'cpu': kids.ru_utime + kids.ru_stime,"
        " 'out': out.decode(errors='replace')}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", helper, *cmd], capture_output=True, text=True,
                          check=False, env=env, cwd=cwd)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    if proc.returncode or result.get("rc"):
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    return (float(result["wall"]), float(result["rss"]), float(result["cpu"]),
            str(result["out"]))


def peer_venv(name: str, requirements: list[str], probe: str) -> Path:
    """The ``bin`` folder of a peer tool's own virtual environment under
    ``~/.cache/cohortflow-peers/<name>`` (``$COHORTFLOW_PEERS`` overrides the folder),
    created and filled with ``pip install <requirements>`` when ``probe`` (an executable of
    the tool) is missing.  Peers pin older Polars than cohortflow, hence a venv each."""
    root = Path(os.environ.get("COHORTFLOW_PEERS", Path.home() / ".cache" / "cohortflow-peers"))
    venv = root / name
    if not (venv / "bin" / probe).is_file() or not _pins_met(venv, requirements):
        print(f"installing {' '.join(requirements)} into {venv} ...", flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *requirements], check=True)
    return venv / "bin"


def _pins_met(venv: Path, requirements: list[str]) -> bool:
    """Whether every ``name==version`` of ``requirements`` is what the venv has."""
    pins = [r.split("==") for r in requirements if "==" in r]
    code = ("import importlib.metadata as m, sys\n"
            "print(all(m.version(n) == v for n, v in zip(sys.argv[1::2], sys.argv[2::2])))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code,
                           *[x for pin in pins for x in pin]], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() == "True"
