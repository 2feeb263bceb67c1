"""Stale-lock recovery.

A head process killed outright (SIGKILL, a lost login session) leaves Snakemake's directory
lock behind.  The head's host and pid are kept in ``.cohortflow/head.json`` while it runs,
so the next run can tell a stale lock (same host, process gone) from a live run, release the
stale one and resume without redoing finished steps.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
from pathlib import Path

log = logging.getLogger("cohortflow.runner")

HEAD_FILE = Path(".cohortflow") / "head.json"


def release_stale_lock(command: list[str]) -> None:
    """Release the lock of a killed head in this directory (``command``: the run's own
    Snakemake command line), so that this run resumes where that one stopped."""
    if _stale_head():
        log.warning("the previous run in %s was killed; releasing its lock and resuming",
                    Path.cwd())
        subprocess.call([*command, "--unlock"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)


def record_head(pid: int) -> None:
    """Keep the running head's host and pid, for the next run to tell if it was killed."""
    HEAD_FILE.parent.mkdir(exist_ok=True)
    HEAD_FILE.write_text(json.dumps({"host": socket.gethostname(), "pid": pid}))


def forget_head() -> None:
    """The head exited (not killed by a signal), so Snakemake released its lock itself."""
    HEAD_FILE.unlink(missing_ok=True)


def _stale_head() -> bool:
    """True when Snakemake's lock here belongs to a head on this host that no longer runs."""
    if not HEAD_FILE.is_file() or not any(Path(".snakemake/locks").glob("*")):
        return False
    try:
        head = json.loads(HEAD_FILE.read_text())
    except json.JSONDecodeError:
        return False
    if head.get("host") != socket.gethostname():
        return False  # another login node may still be running it: never steal its lock
    return not process_alive(int(head["pid"]))


def process_alive(pid: int) -> bool:
    """Whether a process runs on this host (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
