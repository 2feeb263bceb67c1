"""Who may read what cohortflow writes: the results tree is person-level data.

Every process of a run (``cohortflow run``, the Snakemake head, every step, SLURM jobs
included, since each loads the workflow) calls :func:`protect` first.  It sets the
process's file-creation mask so that everything written afterwards is owner-only
(directories 0700, files 0600) or, when the study names ``share_with_group``, also
readable (never writable) by that group: the results directory then belongs to the group
and carries the set-group-id bit, so every file and folder made inside inherits the group.

A results directory that already lets anyone else in is refused, with the path and the
``chmod`` that fixes it, before anything is written: tightening the mask would not help
the files already there.
"""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

from cohortflow.errors import PermissionsError

#: Mask of a private run: nothing for the group or others.
PRIVATE_UMASK = 0o077
#: Mask of a run shared with a group: the group reads, nobody else.
GROUP_UMASK = 0o027


def umask_for(group: str | None) -> int:
    """The file-creation mask of a run.

    >>> oct(umask_for(None)), oct(umask_for("cohort-team"))
    ('0o77', '0o27')
    """
    return PRIVATE_UMASK if group is None else GROUP_UMASK


def allowed_mode(group: str | None) -> int:
    """Permission bits a results directory may have (beyond these, the run is refused).

    >>> oct(allowed_mode(None)), oct(allowed_mode("cohort-team"))
    ('0o700', '0o2750')
    """
    return 0o700 if group is None else 0o2750


def group_id(group: str) -> int:
    """The id of ``group``; a clear error when this machine does not know it."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise PermissionsError(
            f"share_with_group: no group '{group}' on this machine; fix: name a group "
            "you belong to (`id -Gn` lists them) or remove share_with_group"
        ) from None


def check_directory(path: Path, group: str | None) -> None:
    """Refuse an existing directory that users other than the owner (and the study's
    group, read-only) can read, enter or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    extra = mode & ~allowed_mode(group) & 0o777
    if group is not None and path.stat().st_gid != group_id(group):
        raise PermissionsError(
            f"{path}: results directory belongs to another group than share_with_group "
            f"'{group}'; fix: chgrp -R {group} {path} && chmod -R g-w,o-rwx {path}"
        )
    if extra:
        who = " and ".join(w for w, bits in (("its group", 0o070), ("other users", 0o007))
                           if extra & bits)
        fix = f"chmod -R go-rwx {path}" if group is None else f"chmod -R g-w,o-rwx {path}"
        raise PermissionsError(
            f"{path}: results directory is open to {who} (mode {mode:04o}); person-level "
            f"results must be readable by their owner only; fix: {fix}"
            + ("" if group is None else " (or remove share_with_group)")
        )


def protect(results: Path, group: str | None = None) -> None:
    """Set this process's mask for a run into ``results`` and make that directory
    (or check the existing one): owner-only, or shared read-only with ``group``.

    >>> import tempfile
    >>> old = os.umask(0o022)
    >>> root = Path(tempfile.mkdtemp())
    >>> protect(root / "study")
    >>> oct((root / "study").stat().st_mode & 0o777), oct(os.umask(old))
    ('0o700', '0o77')
    """
    results = Path(results)
    os.umask(umask_for(group))
    if results.is_dir():
        check_directory(results, group)
        return
    results.mkdir(parents=True, exist_ok=True)
    if group is not None:
        gid = group_id(group)
        try:
            os.chown(results, -1, gid)
        except PermissionError:
            raise PermissionsError(
                f"{results}: cannot give the results directory to group '{group}' "
                f"(share_with_group); fix: name a group you belong to (`id -Gn`)"
            ) from None
    results.chmod(allowed_mode(group))
