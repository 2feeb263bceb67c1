"""Shared by the benchmark scripts: time one command and read its peak RSS."""

from __future__ import annotations

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
