"""Shared by the benchmark scripts: time one command and read its peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def measure(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the largest process of a command's tree.

    ``os.wait4`` reports the child's own ``ru_maxrss``, which Linux raises to the largest
    of its waited-for descendants, so earlier commands of the benchmark do not leak in.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{stderr.decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


SRC = Path(__file__).resolve().parents[1] / "src"


def run_child(code: str, *args: object) -> dict[str, float]:
    """Run ``python -c code args`` against this checkout's package; the JSON record its
    last line of output holds (the child measures itself)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)],
                          env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
