"""The files of a model package and its checksums (the one place that names them)."""

from __future__ import annotations

import hashlib

FORMAT = 2
"""2: one analysis (target, outcome, time at risk) per package, its folder named by its id."""
META = "package.json"
STUDY = "study.json"
CHECKSUMS = "CHECKSUMS"
COLUMNS = "columns.json"
CALIBRATION = "calibration.json"
REFERENCE = "reference.json"
"""What the train rows looked like (:func:`cohortflow.scoring.reference_profile`), for drift
monitoring; a package made before it has none."""
ARRAYS = "model"
REMAKE = ("fix: copy the package again from where it was made, or make it anew with "
          "`cohortflow package results/<study> --out <new folder>`")


def analysis_dir(analysis: str) -> str:
    """The folder of one analysis (by its id) inside a package.

    >>> analysis_dir("cohort__asthma_exacerbation__tar")
    'analyses/cohort__asthma_exacerbation__tar'
    """
    return f"analyses/{analysis}"


def checksums_text(files: dict[str, bytes]) -> str:
    """CHECKSUMS: ``<sha256>  <path>`` per file but itself, sorted by path (the format of
    ``sha256sum``, so ``sha256sum -c CHECKSUMS`` checks a package too).

    >>> checksums_text({"b": b"", "a": b"a"}).splitlines()[0][:12], len(checksums_text({}))
    ('ca978112ca1b', 0)
    """
    return "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n"
                   for name in sorted(files) if name != CHECKSUMS)


def package_digest(checksums: bytes) -> str:
    """One digest of the whole package: the SHA-256 of its CHECKSUMS."""
    return hashlib.sha256(checksums).hexdigest()
