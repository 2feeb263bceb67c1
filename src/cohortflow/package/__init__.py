"""Model packages: one analysis's chosen model, ready to score data outside the study.

``cohortflow package results/<study> --out model-pkg/ [--analysis ID]`` (:func:`write`)
refits the analysis's chosen configuration (``analyses/<ID>/model/metrics.json``'s
``config_id``) exactly as the sweep fitted it, refuses unless it predicts what the sweep
predicted, and writes::

    package.json        format, cohortflow version, study name and digest, the training
                        manifest's SHA-256, the analysis (target, outcome, time at risk):
                        configuration, family, parameters
    study.json          the study's concept_sets and features, the analysis's target cohort,
                        outcome and time at risk, their digests
    analyses/<ID>/columns.json      the feature columns (tensor feature index), in order
    analyses/<ID>/calibration.json  test calibration bins, pooled to min_cell_count
    analyses/<ID>/reference.json    the train rows' feature and score bins, pooled to
                                    min_cell_count, and codes, for drift monitoring
    analyses/<ID>/model/*.npy       the fitted model as plain arrays (no pickle)
    CHECKSUMS           sha256sum lines of every other file; its SHA-256 is the digest

``--analysis`` may be left out when the study has one analysis.  No file holds a subject
id, a date or a row per person.  :func:`load` verifies every checksum and refuses a changed,
missing or added file naming it; the returned :class:`ModelPackage` predicts from a feature
matrix in the packaged column order.
"""

from cohortflow.errors import PackageError
from cohortflow.package._estimators import SUPPORTED, export, predict_proba
from cohortflow.package._format import CHECKSUMS, META, package_digest
from cohortflow.package._load import ModelPackage, load, verify
from cohortflow.package._write import chosen_analysis, contents, write

__all__ = [
    "CHECKSUMS",
    "META",
    "SUPPORTED",
    "ModelPackage",
    "PackageError",
    "chosen_analysis",
    "contents",
    "export",
    "load",
    "package_digest",
    "predict_proba",
    "verify",
    "write",
]
