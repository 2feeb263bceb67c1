"""Content digests of the input files a rerun key covers (VCFs, linkage tables, stores),
computed once per file content, not once per process.

Every Snakemake process parses the workflow, each SLURM job too, and the genotype steps'
keys hash their input files: many-GB VCFs would be read again by every job.  So each
digest is kept twice: in this process, and in a small owner-only JSON file,
``file-digests.json`` in the user's cache folder (``$COHORTFLOW_CACHE_DIR``, else
``$XDG_CACHE_HOME/cohortflow``, else ``~/.cache/cohortflow``), by the file's resolved path
with its size, modification and change times (ns) and inode, or those of every file of a
folder.  A changed stat hashes the bytes again; the key stays a function of the content.

A file modified within :data:`RACY_NS` of being hashed is not written to the cache: a
rewrite in the same tick of the file system's clock, at the same size, could leave every
stat field as it was (git's "racily clean" entries), and another process would trust it.
The cache is written atomically (a temporary file renamed over it); one that cannot be
read or does not hold what this module writes is ignored and written anew, and one that
cannot be written is left alone: it only saves time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CACHE_FILE = "file-digests.json"
RACY_NS = 3 * 10**9
"""How recent a modification must be (ns before hashing began, or later) for its digest
not to be cached across processes: more than a coarse clock tick of any file system."""

_IN_PROCESS: dict[tuple[object, ...], str] = {}


def cache_folder(env: Mapping[str, str] = os.environ) -> Path:
    """Where the digests are kept across processes, by the environment ``env``.

    >>> cache_folder({"COHORTFLOW_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"})
    PosixPath('/c')
    >>> cache_folder({"XDG_CACHE_HOME": "/x"})
    PosixPath('/x/cohortflow')
    """
    if folder := env.get("COHORTFLOW_CACHE_DIR"):
        return Path(folder)
    base = env.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cohortflow"


def file_digest(path: Path) -> str:
    """SHA-256 (16 hex digits) of a file's bytes (a folder: of its files' relative paths
    and bytes, in sorted order); ``missing`` for nothing there (the step that reads it says
    so).  Read from this process's memory or the cache file while the stats are those it
    was computed under (see the module's docstring)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(f, f.stat()) for f in files]
    resolved = str(path.resolve())
    listing = [[f.relative_to(path).as_posix() if f != path else "", s.st_size,
                s.st_mtime_ns, s.st_ino, s.st_ctime_ns] for f, s in stats]
    key = (resolved, *(tuple(entry) for entry in listing))
    if key in _IN_PROCESS:
        return _IN_PROCESS[key]
    stamp = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    cached = _read_cache().get(resolved)
    if cached is not None and cached["stat"] == stamp:
        _IN_PROCESS[key] = cached["digest"]
        return cached["digest"]
    started = time.time_ns()
    digest = hash_files(path, files)
    _IN_PROCESS[key] = digest
    if all(s.st_mtime_ns < started - RACY_NS for _, s in stats):
        _write_entry(resolved, {"stat": stamp, "digest": digest})
    return digest


def hash_files(root: Path, files: list[Path]) -> str:
    """The digest of ``files`` under ``root`` (``root`` itself: a single file)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() if f != root else b"")
        with f.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


def _read_cache() -> dict[str, dict[str, str]]:
    """The cache file's entries; none when it is missing, unreadable or not of this form."""
    try:
        data: Any = json.loads((cache_folder() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items()
            if isinstance(v, dict) and set(v) == {"stat", "digest"}
            and all(isinstance(x, str) for x in v.values())}


def _write_entry(resolved: str, entry: dict[str, str]) -> None:
    """Add one entry to the cache file, atomically and owner-only (another process may
    write at the same time: the last rename wins, and an entry lost costs one re-hash)."""
    folder = cache_folder()
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        entries = _read_cache()
        entries[resolved] = entry
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{CACHE_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp: mode 0600
                json.dump(entries, out, sort_keys=True)
            Path(tmp).replace(folder / CACHE_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
