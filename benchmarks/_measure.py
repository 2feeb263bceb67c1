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
