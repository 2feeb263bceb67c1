"""Model packages: safe arrays that predict as scikit-learn does, made from a finished study
(the session's demo run), verified on load, refused when changed, free of person data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cohortflow import models, package
from cohortflow.layout import Layout
from cohortflow.study import demo_study_path, load_study
from tests.helpers import DEMO_ANALYSIS, MANY_STUDY, cohortflow


@pytest.mark.parametrize(("family", "hp"), [
    ("logistic", {"penalty": "l1", "C": 0.1}),
    ("logistic", {"penalty": "l2", "C": 1.0}),
    ("gradient_boosting", {"max_iter": 30, "max_leaf_nodes": 7}),
    ("random_forest", {"n_estimators": 20, "max_depth": 6}),
])
def test_packaged_arrays_predict_as_sklearn(family: str, hp: dict[str, object]) -> None:
    rng = np.random.default_rng(5)
    x = rng.poisson(1.0, size=(1200, 12)).astype(np.float64)
    x[:, 3] = rng.normal(size=len(x))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the learnt branch
    y = ((np.nan_to_num(x[:, 0]) + x[:, 1] * 0 + rng.normal(size=len(x))) > 1.5).astype(np.int8)
    fitted = models.make_estimator(family, hp, seed=3).fit(x[:800], y[:800])
    arrays = package.export(family, fitted)
    assert all(a.dtype != object for a in arrays.values())
    got = package.predict_proba(family, arrays, x[800:])
    np.testing.assert_allclose(got, fitted.predict_proba(x[800:])[:, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["logistic", "gradient_boosting", "random_forest"])
def test_a_training_column_with_no_value_fits_and_packages(family: str) -> None:
    """A feature no training person has a value for (all missing: common in wide sparse
    studies) is fitted by every family -- scikit-learn's boosted trees refuse it on their
    own -- and its package predicts as the model does, a value there at prediction too."""
    rng = np.random.default_rng(11)
    x = rng.poisson(1.0, size=(300, 4)).astype(np.float64)
    y = ((x[:, 0] + rng.normal(size=len(x))) > 1.5).astype(np.int8)
    x[:200, 2] = np.nan  # no value in the training rows
    fitted = models.make_estimator(family, {}, seed=3).fit(x[:200], y[:200])
    got = package.predict_proba(family, package.export(family, fitted), x[200:])
    np.testing.assert_allclose(got, fitted.predict_proba(x[200:])[:, 1], rtol=0, atol=1e-12)


def test_unknown_family_is_refused() -> None:
    with pytest.raises(package.PackageError, match="cannot be packaged; packaged families"):
        package.export("svm", object())


# ---- a package of the session's demo run -----------------------------------------------------

@pytest.fixture(scope="module")
def made(laptop_run: tuple[Path, subprocess.CompletedProcess[str]],
         tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(results/demo, its package), packaged once for the module."""
    results = laptop_run[0]
    out = tmp_path_factory.mktemp("pkg") / "model-pkg"
    package.write(results, out)
    return results, out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_package_predicts_the_study_predictions(made: tuple[Path, Path]) -> None:
    results, out = made
    pkg = package.load(out)
    layout = Layout(results)
    assert (pkg.analysis, pkg.outcome) == (DEMO_ANALYSIS, "asthma_exacerbation")
    chosen = json.loads(layout.model_metrics(DEMO_ANALYSIS).read_text())
    analysis = pkg.meta["analyses"][pkg.analysis]
    assert analysis["config_id"] == chosen["config_id"]
    assert (analysis["target"], analysis["time_at_risk"]) == ("cohort", "tar")
    assert pkg.meta["training_manifest_sha256"] == package_sha(layout.manifest)
    assert pkg.study["digest"] == pkg.meta["study"]["digest"]
    assert set(pkg.study) >= {"cohort", "outcome", "time_at_risk", "concept_sets", "features"}
    assert pkg.study["analysis"]["id"] == DEMO_ANALYSIS
    # the analysis's rows: its labels, each with its target tensor row's features
    rows = pl.read_parquet(layout.labels(DEMO_ANALYSIS))["row"].to_numpy()
    x, names, _ = models.load_matrix(layout.tensor("cohort"),
                                     analysis["params"]["feature_selection"], rows)
    assert len(pkg.columns) == x.shape[1] == analysis["n_features"]
    assert [c.replace("|", " ") for c in pkg.columns] == names
    study_predictions = pl.read_parquet(layout.model_predictions(DEMO_ANALYSIS))
    test = (study_predictions["split"] == "test").to_numpy()
    np.testing.assert_allclose(pkg.predict_proba(x[test]),
                               study_predictions["prediction"].to_numpy()[test],
                               rtol=0, atol=1e-9)
    with pytest.raises(package.PackageError, match=r"columns\.json"):
        pkg.predict_proba(x[:3, :-1])


def package_sha(path: Path) -> str:
    from cohortflow.manifest import file_digest
    return file_digest(path)


def test_package_is_deterministic_through_the_command(made: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    results, out = made
    done = cohortflow("package", str(results), "--out", str(tmp_path / "again"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert package.load(out).digest in done.stderr.replace("\n", "")
    assert _files(tmp_path / "again") == _files(out)
    refused = cohortflow("package", str(results), "--out", str(tmp_path / "again"),
                         cwd=tmp_path)
    assert refused.returncode == 2
    assert "already exists and is not an empty folder; fix:" in refused.stderr
    named = cohortflow("package", str(results), "--out", str(tmp_path / "named"),
                       "--analysis", DEMO_ANALYSIS, cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert _files(tmp_path / "named") == _files(out)
    unknown = cohortflow("package", str(results), "--out", str(tmp_path / "unknown"),
                         "--analysis", "cohort__death__tar", cwd=tmp_path)
    assert unknown.returncode == 2
    assert (f"unknown analysis 'cohort__death__tar'; this study's analyses: {DEMO_ANALYSIS}; "
            "fix: --analysis" in unknown.stderr.replace("\n", ""))
    assert not (tmp_path / "unknown").exists()


def test_the_analysis_is_the_only_one_or_named() -> None:
    demo, many = load_study(demo_study_path()), load_study(MANY_STUDY)
    assert package.chosen_analysis(demo, None) == DEMO_ANALYSIS
    ids = [a.id for a in many.analysis_list()]
    assert len(ids) == 25 and package.chosen_analysis(many, ids[3]) == ids[3]
    with pytest.raises(package.PackageError, match=(
            rf"the study has 25 analyses \({re.escape(', '.join(ids))}\) and a package holds "
            r"one model; fix: name one with --analysis ID")):
        package.chosen_analysis(many, None)
    with pytest.raises(package.PackageError, match=r"unknown analysis 'asthma'; this study's "
                       r"analyses: asthma__exacerbation__1y, .*fix: --analysis"):
        package.chosen_analysis(many, "asthma")


def test_any_changed_byte_is_refused_naming_the_file(made: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    _, out = made
    for name, data in _files(out).items():
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(out, copy)
        changed = bytearray(data)
        changed[len(changed) // 2] ^= 0x01
        (copy / name).write_bytes(bytes(changed))
        with pytest.raises(package.PackageError) as refused:
            package.load(copy)
        message = str(refused.value)
        assert "fix: copy the package again" in message or "line" in message, message
        if name != package.CHECKSUMS:
            assert f"{copy / name}: changed since the package was made" in message
        else:
            assert package.CHECKSUMS in message


def test_missing_or_added_files_are_refused(made: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = made
    for name in _files(out):
        copy = tmp_path / ("missing_" + name.replace("/", "_"))
        shutil.copytree(out, copy)
        (copy / name).unlink()
        with pytest.raises(package.PackageError, match=re.escape(str(copy / name))):
            package.load(copy)
    extra = tmp_path / "extra"
    shutil.copytree(out, extra)
    (extra / "notes.txt").write_text("hello")
    with pytest.raises(package.PackageError, match=r"notes\.txt: not part of the model package"):
        package.load(extra)


def test_other_major_version_is_refused(made: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = made
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    meta = json.loads((copy / package.META).read_text())
    meta["cohortflow_version"] = "99.0.0"
    (copy / package.META).write_text(json.dumps(meta))
    files = {n: d for n, d in _files(copy).items() if n != package.CHECKSUMS}
    from cohortflow.package._format import checksums_text
    (copy / package.CHECKSUMS).write_text(checksums_text(files))
    with pytest.raises(package.PackageError, match=r"made by cohortflow 99\.0\.0.*fix: load"):
        package.load(copy)


def test_package_holds_no_person_level_data(made: tuple[Path, Path]) -> None:
    results, out = made
    layout = Layout(results)
    rows = pl.read_parquet(layout.model_predictions(DEMO_ANALYSIS))
    files = _files(out)
    assert not [n for n in files if n.endswith((".parquet", ".zarr", ".csv", ".pkl"))]
    date = re.compile(rb"\b(19|20)\d\d-\d\d-\d\d")
    for name, data in files.items():
        assert not date.search(data), f"{name} holds a date"
        for word in (b"subject_id", b"person_id", b"index_time", b"birth_datetime"):
            assert word not in data, f"{name} names {word!r}"
        if name.endswith(".npy"):
            array = np.load(out / name, allow_pickle=False)
            # an array per feature, per tree node or per model: never one per person
            assert len(array) not in (rows.height, int((rows["split"] == "test").sum())), name
    calibration = package.load(out).calibration
    assert sum(b["persons"] for b in calibration) == int((rows["split"] == "test").sum())
