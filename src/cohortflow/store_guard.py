"""Writing an event store in place of a directory, safely: the mark of a store this tool
wrote, the checks made before any work, and the swap that only ever replaces a complete
store with another.  The OMOP ingest and the MEDS-source copy both write through here.

No command deletes or replaces a directory that it did not itself create as its output.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cohortflow import events
from cohortflow.errors import StoreError

#: ``etl_name`` in ``metadata/dataset.json`` of every event store this tool writes: the one
#: mark that lets a later ingest replace the directory.
STORE_ETL_NAME = "cohortflow.omop"
#: File in a half-written store; a stale working directory is removed only when it holds it.
WORK_MARKER = ".cohortflow-partial"


def is_event_store(path: Path) -> bool:
    """Whether ``path`` is an event store written by ``cohortflow ingest``: its
    ``metadata/dataset.json`` names :data:`STORE_ETL_NAME` as ``etl_name``.

    >>> is_event_store(Path("nowhere"))
    False
    """
    try:
        meta = json.loads(events.dataset_json_path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("etl_name") == STORE_ETL_NAME


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_output(out: Path, inputs: Iterable[Path]) -> None:
    """Refuse, before any work, an ``--out`` whose replacement could destroy data.

    ``out`` may be new, an empty directory, or an event store an earlier ingest wrote
    (:func:`is_event_store`); never a file, a symbolic link, any other directory, nor a
    path that holds, is, or lies inside one of the source's ``inputs``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "notes.txt").write_text("mine")
    ...     check_output(Path(tmp), [])
    Traceback (most recent call last):
    ...
    cohortflow.errors.StoreError: ...: directory exists and is not an event store ...
    """
    out = Path(out)
    where = out.resolve()
    for source in inputs:
        if _overlaps(where, Path(source).resolve()):
            raise StoreError(
                f"{out}: the event store would overlap the OMOP source {source} (an ingest "
                "replaces its whole output directory); fix: give --out (or results:) a new "
                "directory outside the source")
    if out.is_symlink():
        raise StoreError(f"{out}: is a symbolic link; fix: give --out (or results:) a real "
                         "directory path, or a new one")
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out}: exists and is not a directory; fix: give --out (or "
                         "results:) a new directory path, or move the file away")
    if out.is_dir() and any(out.iterdir()) and not is_event_store(out):
        raise StoreError(
            f"{out}: directory exists and is not an event store written by cohortflow (no "
            f"metadata/dataset.json with etl_name {STORE_ETL_NAME}), so it is left untouched; "
            "fix: give --out (or results:) a new or empty directory")
    blocked = next((p for p in out.absolute().parents if p.exists() or p.is_symlink()), None)
    if blocked is not None and not blocked.is_dir():
        raise StoreError(f"{out}: {blocked} is not a directory; fix: give --out (or results:) "
                         "a path inside a directory")
    for stale in (out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.old")):
        _check_stale(stale)


def replace_store(work: Path, out: Path) -> None:
    """Move the finished store ``work`` to ``out``, replacing only an empty directory or an
    event store (checked again here: the directory may have changed during the ingest).

    The old store is renamed away before it is deleted, so a kill never leaves a
    half-deleted store under the name ``out``.
    """
    check_output(out, [])
    (work / WORK_MARKER).unlink(missing_ok=True)
    trash = out.with_name(f".{out.name}.old")
    if out.exists():
        _remove_stale(trash)
        out.rename(trash)
    work.rename(out)
    if trash.exists():
        shutil.rmtree(trash)


def _remove_stale(path: Path) -> None:
    """Remove a leftover working directory of an earlier, killed run; refuse anything else."""
    if _check_stale(path):
        shutil.rmtree(path)


def _check_stale(path: Path) -> bool:
    """Whether ``path`` is a leftover of an earlier ingest, to be removed (False when there
    is nothing); refuse it when something else lies there."""
    if not path.exists() and not path.is_symlink():
        return False
    ours = path.is_dir() and not path.is_symlink() and (
        (path / WORK_MARKER).is_file() or is_event_store(path) or not any(path.iterdir()))
    if not ours:
        raise StoreError(
            f"{path}: in the way of the event store and not left by an earlier ingest (no "
            f"{WORK_MARKER} file), so it is left untouched; fix: move it away or give --out "
            "another name")
    return True


@contextmanager
def nothing_half_written(work: Path, out: Path) -> Iterator[None]:
    """Create the working directory ``work`` (replacing only a stale one an earlier run
    left), remove it if anything fails, and turn a full disk into a clear message; ``out``
    is only ever replaced by a complete store."""
    _remove_stale(work)
    try:
        work.mkdir(parents=True)
        (work / WORK_MARKER).write_text("a half-written cohortflow event store\n")
        yield
    except Exception as exc:  # Polars reports a full disk as ComputeError, Arrow as OSError
        shutil.rmtree(work, ignore_errors=True)
        if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
            raise StoreError(
                f"{out}: no space left on the device while writing the event store; the "
                "partial output was removed; fix: free space, or give --out (or results:) "
                "on a larger filesystem"
            ) from None
        raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
