"""Model packages: a study's chosen model, ready to score data outside the study.

``cohortflow package results/<study> --out model-pkg/`` (:func:`write`) refits the chosen
configuration (``model/metrics.json``'s ``config_id``) exactly as the sweep fitted it,
refuses unless it predicts what the sweep predicted, and writes::

    package.json        format, cohortflow version, study name and digest, the training
                        manifest's SHA-256, per analysis: configuration, family, parameters
    study.json          the study's concept_sets, cohort and features sections, its digests
    analyses/<outcome>/columns.json      the feature columns (tensor feature index), in order
    analyses/<outcome>/calibration.json  test calibration bins, pooled to min_cell_count
    analyses/<outcome>/model/*.npy       the fitted model as plain arrays (no pickle)
    CHECKSUMS           sha256sum lines of every other file; its SHA-256 is the digest

No file holds a subject id, a date or a row per person.  :func:`load` verifies every
checksum and refuses a changed, missing or added file naming it; the returned
:class:`ModelPackage` predicts from a feature matrix in the packaged column order.
"""

from cohortflow.package._estimators import SUPPORTED, export, predict_proba
from cohortflow.package._format import CHECKSUMS, META, PackageError, package_digest
from cohortflow.package._load import ModelPackage, load, verify
from cohortflow.package._write import contents, write

__all__ = [
    "CHECKSUMS",
    "META",
    "SUPPORTED",
    "ModelPackage",
    "PackageError",
    "contents",
    "export",
    "load",
    "package_digest",
    "predict_proba",
    "verify",
    "write",
]
