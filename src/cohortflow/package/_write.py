"""``cohortflow package``: a finished study's chosen model as a self-contained folder."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from cohortflow import __version__, features, manifest, models
from cohortflow.errors import PackageError
from cohortflow.layout import Layout
from cohortflow.package._estimators import export, predict_proba
from cohortflow.package._format import (
    ARRAYS,
    CALIBRATION,
    CHECKSUMS,
    COLUMNS,
    FORMAT,
    META,
    REFERENCE,
    STUDY,
    analysis_dir,
    checksums_text,
    package_digest,
)
from cohortflow.privacy import pool_bins
from cohortflow.study import Analysis, Study, load_study

DENSE_ROWS = 4096  # test rows of a sparse matrix densified at a time for the packaged arrays
REFIT_TOLERANCE = 1e-9  # the refit's predictions against the sweep's, as metrics compare
EXPORT_TOLERANCE = 1e-12  # the packaged arrays' predictions against scikit-learn's


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise PackageError(f"{path}: not found, so the study has no {what}; fix: run the study "
                           "to its end first (`cohortflow run <study.yaml>`)")
    return dict(json.loads(path.read_text()))


def _study(layout: Layout, recorded: dict[str, Any], study_path: Path | None) -> Study:
    path = Path(study_path) if study_path is not None else Path(recorded["study"]["path"])
    if not path.is_file():
        raise PackageError(f"{path}: the study file of {layout.root} is not there; fix: give "
                           "its path: `cohortflow package <results> --study <study.yaml>`")
    study = load_study(path)
    if study.digest() != recorded["study"]["digest"]:
        raise PackageError(
            f"{path}: the study changed since {layout.manifest} was written (digest "
            f"{study.digest()}, recorded {recorded['study']['digest']}); fix: rerun the study "
            "(`cohortflow run`), or give the study file it ran with (--study)")
    return study


def _pooled(bins: list[dict[str, Any]], min_cell_count: int) -> list[dict[str, Any]]:
    """The test calibration bins, adjacent bins pooled so none shows a small count."""
    groups = pool_bins([b["outcomes"] for b in bins], [b["persons"] for b in bins],
                       min_cell_count)
    return [{"persons": sum(bins[i]["persons"] for i in g),
             "outcomes": sum(bins[i]["outcomes"] for i in g),
             "predicted_sum": round(sum(bins[i]["predicted_sum"] for i in g), 10)}
            for g in groups]


def _columns(tensor: Path, selection: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    """The packaged columns' keys and fills (0, or NaN where an empty cell is missing)."""
    ds = features.open_features(tensor)
    keep = models.select_features(ds["code"].values, ds["window"].values,
                                  ds["aggregation"].values, selection)
    return ([str(f) for f in ds["feature"].values[keep]],
            features.fill_values(tensor)[keep])


def _packaged(family: str, arrays: dict[str, np.ndarray], x: np.ndarray | sp.csr_matrix,
              fill: np.ndarray) -> np.ndarray:
    """The packaged arrays' predictions for the rows of ``x``; a sparse matrix is given to
    them as the dense cells a package user gives (``fill`` where nothing is stored: NaN
    for a missing value), :data:`DENSE_ROWS` rows at a time."""
    if not sp.issparse(x):
        return predict_proba(family, arrays, x)
    parts = [predict_proba(family, arrays, features.to_dense(
        sp.csr_matrix(x[i:i + DENSE_ROWS]), fill, np.float64))
        for i in range(0, x.shape[0], DENSE_ROWS)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _check_refit(layout: Layout, config_id: str, family: str, arrays: dict[str, np.ndarray],
                 fitted: Any, x: np.ndarray | sp.csr_matrix, is_test: np.ndarray,
                 fill: np.ndarray) -> None:
    recorded = pl.read_parquet(layout.config_file(config_id, "predictions"))["prediction"]
    refit = fitted.predict_proba(x)[:, 1]
    gap = np.abs(refit - recorded.to_numpy())
    if not gap.max() <= REFIT_TOLERANCE:
        raise PackageError(
            f"{layout.config_file(config_id, 'predictions')}: the refitted model {config_id} "
            f"predicts differently from the sweep on {int((gap > REFIT_TOLERANCE).sum())} "
            f"rows (at most {gap.max():.3g} apart; tolerance {REFIT_TOLERANCE}); fix: rerun "
            "the study with this cohortflow and its packages, then package it")
    packaged = _packaged(family, arrays, x[is_test], fill)
    worst = float(np.abs(packaged - refit[is_test]).max())
    if not worst <= EXPORT_TOLERANCE:
        raise PackageError(
            f"the packaged {family} model predicts up to {worst:.3g} away from scikit-learn "
            "on the test rows; fix: report this as a cohortflow bug")


def _reference(fitted: Any, x: np.ndarray, is_test: np.ndarray, columns: list[str],
               min_cell_count: int) -> dict[str, Any]:
    """The reference profile of the refit's train rows and its predictions on them."""
    from cohortflow.scoring._drift import reference_profile  # scoring imports package

    train = x[~is_test]
    return reference_profile(train, columns, fitted.predict_proba(train)[:, 1], min_cell_count)


def chosen_analysis(study: Study, analysis: str | None) -> str:
    """The analysis to package: ``analysis`` when given (one of the study's), else the
    study's only one; a study of several must name one."""
    ids = [a.id for a in study.analysis_list()]
    if analysis is None:
        if len(ids) == 1:
            return ids[0]
        raise PackageError(f"the study has {len(ids)} analyses ({', '.join(ids)}) and a package "
                           "holds one model; fix: name one with --analysis ID")
    if analysis not in ids:
        raise PackageError(f"unknown analysis '{analysis}'; this study's analyses: "
                           f"{', '.join(ids)}; fix: --analysis with one of them")
    return analysis


def _definitions(study: Study, analysis: Analysis) -> dict[str, Any]:
    """``study.json``: what an analysis's model was built from, enough to rebuild its
    features: the concept sets, the target cohort, the outcome and its time at risk, the
    features, and their digests."""
    return {
        "name": study.name, "digest": study.digest(),
        "analysis": {"id": analysis.id, "target": analysis.target,
                     "outcome": analysis.outcome, "time_at_risk": analysis.time_at_risk},
        "cohort_digest": study.cohort_digest(analysis.target),
        "features_digest": study.features_digest(analysis.target),
        "min_cell_count": study.min_cell_count,
        **study.model_dump(mode="json", include={"concept_sets", "features"}),
        "cohort": study.library()[analysis.target].model_dump(mode="json"),
        "outcome": study.outcome_specs()[analysis.outcome].model_dump(mode="json"),
        "time_at_risk": study.risk_windows()[analysis.time_at_risk].model_dump(mode="json"),
    }


def contents(results: Path, study_path: Path | None = None, threads: int = 1,
             analysis: str | None = None) -> dict[str, bytes]:
    """Every file of the package of one analysis (``analysis``; default: the study's only
    one) of the study at ``results`` (``results/<study>``), by relative path, CHECKSUMS
    included: a pure function of the study's files."""
    layout = Layout(Path(results))
    recorded = _read_json(layout.manifest, "run manifest (manifest.json)")
    study = _study(layout, recorded, study_path)
    chosen_id = chosen_analysis(study, analysis)
    spec = study.analysis(chosen_id)
    chosen = _read_json(layout.model_metrics(chosen_id),
                        f"chosen model of {chosen_id} ({layout.model_metrics(chosen_id)})")
    config_id = chosen["config_id"]
    config = models.configurations(study).get(config_id)
    params = _read_json(layout.config_file(config_id, "params"), "configuration parameters")
    if config is None or config.params() != params or config.analysis != chosen_id:
        raise PackageError(
            f"{layout.config_file(config_id, 'params')}: the chosen configuration {config_id} "
            f"is not one of the sweep of {chosen_id}; fix: rerun the study (`cohortflow run`)")
    tensor = layout.tensor(config.cohort)
    fitted, x, is_test = models.fit_configuration(
        study, config, layout.store, layout.model_rows(chosen_id, spec.matching is not None),
        tensor, threads=threads)
    arrays = export(config.family, fitted)
    columns, fill = _columns(tensor, config.selection)
    _check_refit(layout, config_id, config.family, arrays, fitted, x, is_test, fill)
    where = analysis_dir(chosen_id)
    files: dict[str, bytes] = {
        STUDY: _json(_definitions(study, spec)),
        f"{where}/{COLUMNS}": _json({"columns": columns}),
        f"{where}/{CALIBRATION}": _json({"test": _pooled(chosen["calibration"]["test"],
                                                         study.min_cell_count)}),
        f"{where}/{REFERENCE}": _json(_reference(fitted, x, is_test, columns,
                                                 study.min_cell_count)),
        **{f"{where}/{ARRAYS}/{name}.npy": _npy(a) for name, a in sorted(arrays.items())},
    }
    files[META] = _json({
        "format": FORMAT, "cohortflow_version": __version__,
        "study": {"name": study.name, "digest": study.digest()},
        "training_manifest_sha256": manifest.file_digest(layout.manifest),
        "analyses": {chosen_id: {
            "target": spec.target, "outcome": spec.outcome,
            "time_at_risk": spec.time_at_risk,
            "config_id": config_id, "family": config.family,
            "model": chosen["model"], "params": params, "n_features": len(columns),
            "arrays": sorted(arrays), "test_metrics": chosen["test"]}},
    })
    files[CHECKSUMS] = checksums_text(files).encode()
    return files


def write(results: Path, out: Path, study_path: Path | None = None, threads: int = 1,
          analysis: str | None = None) -> str:
    """Write the package of one analysis (default: the study's only one) of the study at
    ``results`` into the new folder ``out``; returns the package digest (the SHA-256 of its
    CHECKSUMS)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackageError(f"{out}: already exists and is not an empty folder; fix: give a "
                           "new folder (--out model-pkg-2) or remove this one yourself")
    files = contents(Path(results), study_path, threads, analysis)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return package_digest(files[CHECKSUMS])
