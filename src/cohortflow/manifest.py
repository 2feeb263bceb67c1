"""Checksums of outputs, the raw material of run manifests and byte-identity checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files a tool adds beside the data that say nothing about the content.
IGNORED_NAMES = frozenset({".snakemake_timestamp"})


def file_digest(path: Path) -> str:
    """SHA-256 of one file, streamed."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (or of ``root`` itself), keyed by relative path.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "a.txt").write_text("a")
    ...     tree_digests(Path(tmp))["a.txt"][:12]
    'ca978112ca1b'
    """
    root = Path(root)
    if root.is_file():
        return {root.name: file_digest(root)}
    return {
        path.relative_to(root).as_posix(): file_digest(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in IGNORED_NAMES
    }
