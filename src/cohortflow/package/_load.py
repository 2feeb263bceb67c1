"""Opening a model package: every checksum verified before anything is trusted."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cohortflow import __version__
from cohortflow.errors import PackageError
from cohortflow.package._estimators import predict_proba
from cohortflow.package._format import (
    ARRAYS,
    CALIBRATION,
    CHECKSUMS,
    COLUMNS,
    FORMAT,
    META,
    REFERENCE,
    REMAKE,
    STUDY,
    analysis_dir,
    package_digest,
)


@dataclass(frozen=True)
class ModelPackage:
    """A verified model package: its chosen model, feature columns, definitions and
    calibration.  :meth:`predict_proba` scores a feature matrix in :attr:`columns` order."""

    path: Path
    digest: str
    meta: dict[str, Any]
    study: dict[str, Any]
    analysis: str
    outcome: str
    family: str
    columns: list[str]
    calibration: list[dict[str, Any]]
    arrays: dict[str, np.ndarray]
    reference: dict[str, Any] | None = None
    """The training reference profile for drift monitoring (``reference.json``); None in a
    package made before cohortflow wrote one."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The probability of the outcome for each row of ``x`` (one column per entry of
        :attr:`columns`, in that order; NaN where a value is missing)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            raise PackageError(
                f"{self.path}: the feature matrix has shape {x.shape}, the model needs "
                f"{len(self.columns)} columns in the order of {self.folder}/{COLUMNS}; "
                "fix: build the features with the packaged definitions and select those "
                "columns")
        return predict_proba(self.family, self.arrays, x)

    @property
    def folder(self) -> str:
        """The package's folder of its analysis (columns, calibration, arrays)."""
        return analysis_dir(self.analysis)


def verify(path: Path) -> str:
    """Check every file of the package at ``path`` against its CHECKSUMS (none missing,
    none changed, none added); returns the package digest."""
    path = Path(path)
    listing = path / CHECKSUMS
    if not listing.is_file():
        raise PackageError(f"{listing}: missing, so {path} is not a whole model package; "
                           f"{REMAKE}")
    raw = listing.read_bytes()
    expected: dict[str, str] = {}
    for number, line in enumerate(raw.decode(errors="replace").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or ".." in Path(name).parts:
            raise PackageError(f"{listing}: line {number} is not '<sha256>  <path>'; {REMAKE}")
        expected[name] = digest
    for name, digest in expected.items():
        file = path / name
        if not file.is_file():
            raise PackageError(f"{file}: missing from the model package ({CHECKSUMS} lists "
                               f"it); {REMAKE}")
        if hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            raise PackageError(f"{file}: changed since the package was made (its SHA-256 "
                               f"differs from the one {CHECKSUMS} lists); {REMAKE}")
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    for name in sorted(present - set(expected) - {CHECKSUMS}):
        raise PackageError(f"{path / name}: not part of the model package (not in "
                           f"{CHECKSUMS}); fix: remove it, or copy the package again")
    return package_digest(raw)


def load(path: Path) -> ModelPackage:
    """Verify and open the model package at ``path`` (see :func:`verify`); refuses a
    package of another cohortflow major version or package format."""
    path = Path(path)
    if not path.is_dir():
        raise PackageError(f"{path}: not a folder; fix: give the folder `cohortflow package` "
                           "wrote (--out)")
    digest = verify(path)
    meta = json.loads((path / META).read_text())
    made_by = str(meta.get("cohortflow_version", "?"))
    if meta.get("format") != FORMAT or made_by.split(".")[0] != __version__.split(".")[0]:
        raise PackageError(
            f"{path / META}: made by cohortflow {made_by} (package format "
            f"{meta.get('format')}); this is cohortflow {__version__} (format {FORMAT}); "
            f"fix: load it with cohortflow {made_by.split('.')[0]}.x, or package the study "
            "again with this version")
    (analysis_id, analysis), = meta["analyses"].items()
    where = path / analysis_dir(analysis_id)
    arrays = {name: np.load(where / ARRAYS / f"{name}.npy", allow_pickle=False)
              for name in analysis["arrays"]}
    return ModelPackage(
        path=path, digest=digest, meta=meta, study=json.loads((path / STUDY).read_text()),
        analysis=analysis_id, outcome=analysis["outcome"], family=analysis["family"],
        columns=json.loads((where / COLUMNS).read_text())["columns"],
        calibration=json.loads((where / CALIBRATION).read_text())["test"], arrays=arrays,
        reference=json.loads((where / REFERENCE).read_text())
        if (where / REFERENCE).is_file() else None)
