"""Drift monitoring of scoring runs: the PSI worked out by hand, no flag between two samples
of one distribution, exactly the shifted feature flagged, new and vanished codes, no small
count in a profile, a drift record or the page, prospective metrics as computed directly,
and the reference profile inside a real model package (the session's demo run)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cohortflow import package, scoring
from cohortflow.layout import Layout
from cohortflow.models import _metrics, load_matrix
from cohortflow.scoring import _monitor_html
from cohortflow.scoring._drift import categories, value_edges
from tests.helpers import DEMO_ANALYSIS
from tests.test_privacy_study import scan

K = 11
LAB = "MEASUREMENT//3|365d|mean"
NO_IDS = {987_654_321_987}  # the scan looks for subject ids too: these data have none
COLUMNS = ["CONDITION//1|365d|present", "DRUG//2|365d|count", LAB, "MEDS_BIRTH|index|age_years",
           "PROCEDURE//4|30d|count"]


def sample(n: int, seed: int, shift: float = 0.0, missing: float = 0.2
           ) -> tuple[np.ndarray, np.ndarray]:
    """Realistic features of ``n`` persons (a binary condition, a drug count, a lab mean
    missing for ``missing`` of them and moved by ``shift`` SD, an age, a rare procedure
    count) and a risk score that does not use the lab."""
    rng = np.random.default_rng(seed)
    present = (rng.random(n) < 0.3).astype(float)
    drugs = rng.poisson(1.5, n).astype(float)
    lab = rng.normal(7.0 + shift, 1.0, n)
    lab[rng.random(n) < missing] = np.nan
    age = rng.uniform(18, 90, n).round()
    procedures = rng.poisson(0.2, n).astype(float)
    x = np.column_stack([present, drugs, lab, age, procedures])
    scores = 1 / (1 + np.exp(-(-2 + 0.8 * present + 0.3 * drugs + 0.01 * (age - 50))))
    return x, scores


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    x, s = sample(5000, seed=1)
    return scoring.reference_profile(x, COLUMNS, s, K)


def json_safe(record: dict[str, Any]) -> dict[str, Any]:
    """``record``, checked to be JSON without NaN whose keys are already sorted."""
    text = json.dumps(record, allow_nan=False)
    assert text == json.dumps(record, sort_keys=True)
    return record


def _drift(reference: dict[str, Any], x: np.ndarray, s: np.ndarray,
           codes: dict[str, int] | None = None) -> dict[str, Any]:
    found = scoring.persons_with_codes(x, COLUMNS) if codes is None else codes
    return json_safe(scoring.drift(json_safe(reference), x, COLUMNS, s, found, K))


def _flagged(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f["feature"], f["statistic"], f["level"]) for f in result["flags"]]


# ---- statistics --------------------------------------------------------------------------

def test_psi_of_a_binary_feature_by_hand() -> None:
    # training: 60 without, 40 with; no one missing -> bins (missing, <= 0, > 0)
    x = np.r_[np.zeros(60), np.ones(40)][:, None]
    profile = scoring.reference_profile(x, ["A|30d|present"], np.full(100, 0.3), K)
    feature = profile["features"]["A|30d|present"]
    assert feature == {"edges": [0.5], "groups": [[0], [1], [2]], "missing": 0.0,
                       "shares": [0.0, 0.6, 0.4]}
    half = np.r_[np.zeros(50), np.ones(50)][:, None]
    found = scoring.drift(profile, half, ["A|30d|present"], np.full(100, 0.3), {"A": 50}, K)
    # the missing bin is empty on both sides: (eps - eps)·ln 1 = 0
    by_hand = (0.5 - 0.6) * math.log(0.5 / 0.6) + (0.5 - 0.4) * math.log(0.5 / 0.4)
    assert found["features"]["A|30d|present"]["psi"] == pytest.approx(by_hand, abs=1e-10)
    assert by_hand == pytest.approx(0.1 * math.log(1.5)) and found["flags"] == []
    # nobody has it now: the empty bin counts as PSI_EPSILON (1e-4)
    zeros = np.zeros((100, 1))
    gone = scoring.drift(profile, zeros, ["A|30d|present"], np.full(100, 0.3), {}, K)
    eps = scoring.PSI_EPSILON
    assert eps == 1e-4 and gone["epsilon"] == eps
    by_hand = (1 - 0.6) * math.log(1 / 0.6) + (eps - 0.4) * math.log(eps / 0.4)
    assert gone["features"]["A|30d|present"]["psi"] == pytest.approx(by_hand, abs=1e-10)
    assert _flagged(gone) == [("A|30d|present", "psi", "drift"),
                              ("A", "vanished_code", "watch")]
    # the scores are all 0.3 in both: one bin, PSI 0
    assert gone["score"]["psi"] == 0.0 and gone["score"]["mean"] == 0.3


def test_bins_of_counts_and_continuous_values() -> None:
    counts = np.array([0.0] * 50 + [1.0] * 30 + [2.0] * 15 + [5.0] * 5)
    assert value_edges(counts) == [0.5, 1.5, 3.5]  # one bin per value: no empty bin
    continuous = np.random.default_rng(0).normal(size=1000)
    edges = value_edges(continuous)
    assert len(edges) == 9 and edges == sorted(edges)
    shares = np.bincount(categories(continuous, edges), minlength=11)[1:] / 1000
    assert (shares == 0.1).all()  # deciles
    assert categories(np.array([np.nan, -9.0, edges[0], 99.0]), edges).tolist() == [0, 1, 1, 10]


def test_two_samples_of_one_distribution_raise_no_flag(reference: dict[str, Any]) -> None:
    x, s = sample(5000, seed=2)
    found = _drift(reference, x, s)
    assert found["flags"] == [] and found["codes"] == {"new": [], "vanished": []}
    assert max(f["psi"] for f in found["features"].values()) < 0.02
    assert found["score"]["psi"] < 0.02
    assert all(abs(f["missing"]["change"]) < 0.03 for f in found["features"].values())
    assert found["persons"] == 5000 and found["thresholds"]["psi_drift"] == 0.25


def test_a_shifted_feature_is_the_one_flagged(reference: dict[str, Any]) -> None:
    x, s = sample(5000, seed=2, shift=1.0)
    found = _drift(reference, x, s)
    assert _flagged(found) == [(LAB, "psi", "drift")]
    assert found["flags"][0]["value"] == found["features"][LAB]["psi"] > 0.25
    half = _drift(reference, *sample(5000, seed=2, shift=0.4))
    assert _flagged(half) == [(LAB, "psi", "watch")]  # 0.4 SD: PSI about 0.16
    more_missing = _drift(reference, *sample(5000, seed=2, missing=0.6))
    assert _flagged(more_missing) == [(LAB, "missing_change", "drift"), (LAB, "psi", "drift")]
    assert more_missing["features"][LAB]["missing"]["change"] == pytest.approx(0.4, abs=0.03)


def test_new_and_vanished_codes(reference: dict[str, Any]) -> None:
    assert reference["codes"] == ["CONDITION//1", "DRUG//2", "MEASUREMENT//3", "MEDS_BIRTH",
                                  "PROCEDURE//4"]
    x, s = sample(5000, seed=2)
    codes = scoring.persons_with_codes(x, COLUMNS)
    codes |= {"PROCEDURE//4": 0, "DRUG//2": K - 1, "CONDITION//99": K, "CONDITION//98": K - 1}
    del codes["MEDS_BIRTH"]
    found = _drift(reference, x, s, codes)
    frame = pl.DataFrame({"code": list(codes), "persons": list(codes.values())})
    assert scoring.drift(reference, x, COLUMNS, s, frame, K) == found
    with pytest.raises(scoring.DriftError, match="fix: a frame of columns `code` and `persons`"):
        scoring.drift(reference, x, COLUMNS, s, frame.rename({"persons": "n"}), K)
    assert found["codes"] == {"new": ["CONDITION//99"],
                              "vanished": ["DRUG//2", "MEDS_BIRTH", "PROCEDURE//4"]}
    assert _flagged(found) == [("codes", "new_codes", "watch"),
                               ("DRUG//2", "vanished_code", "watch"),
                               ("MEDS_BIRTH", "vanished_code", "watch"),
                               ("PROCEDURE//4", "vanished_code", "watch")]


def test_bad_inputs_are_refused_with_a_fix(reference: dict[str, Any]) -> None:
    x, s = sample(100, seed=2)
    with pytest.raises(scoring.DriftError, match=r"columns are not the reference profile's "
                       r"\(missing: \['PROCEDURE//4\|30d\|count'\].*fix: build the features"):
        scoring.drift(reference, x[:, :4], COLUMNS[:4], s, {}, K)
    with pytest.raises(scoring.DriftError, match=r"shape .* fix: pass one column per entry"):
        scoring.drift(reference, x[:, :4], COLUMNS, s, {}, K)
    with pytest.raises(scoring.DriftError, match=r"99 scores for 100 rows.*fix"):
        scoring.drift(reference, x, COLUMNS, s[:99], {}, K)
    x[3, 1] = np.inf
    with pytest.raises(scoring.DriftError, match=r"column DRUG//2\|365d\|count holds an "
                       "infinite value; fix"):
        scoring.reference_profile(x, COLUMNS, s, K)
    with pytest.raises(scoring.DriftError, match="fix: one 0/1 label"):
        scoring.prospective(np.full(100, 2), s, K)


# ---- small counts ------------------------------------------------------------------------

def _small_shares(profile: dict[str, Any], n: int) -> list[str]:
    """Every (feature, share) of a profile that is a small count of ``n`` persons."""
    return [f"{name}: {share}" for name, p in [*profile["features"].items(),
                                                ("score", profile["score"])]
            for share in p["shares"] if 0 < round(share * n) < K]


def test_no_bin_of_a_profile_or_a_drift_shows_a_small_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 200
    rare = np.r_[np.zeros(135), np.ones(60), np.full(3, 7.0), np.full(2, np.nan)]
    common = rng.normal(size=n)
    common[:4] = np.nan  # 4 missing: pooled with the lowest bin, its share not shown
    x = np.column_stack([rare, common])
    columns = ["A|30d|count", "B|30d|mean"]
    scores = rng.random(n)
    profile = scoring.reference_profile(x, columns, scores, K)
    assert _small_shares(profile, n) == []
    assert profile["features"]["A|30d|count"]["missing"] is None
    # 0, 1 and 7 make three bins; the 3 sevens join the 60 ones, the 2 missing the zeros
    assert profile["features"]["A|30d|count"]["groups"] == [[0, 1], [2]]
    assert profile["features"]["A|30d|count"]["edges"] == [0.5]
    assert profile["features"]["B|30d|mean"]["missing"] is None
    # the same shares with no minimum show them
    assert _small_shares(scoring.reference_profile(x, columns, scores, 0), n) != []
    # an extract with a few of each: every comparison pools them, and says nothing small
    now = np.column_stack([np.r_[np.zeros(60), np.ones(30), np.full(5, 7.0),
                                 np.full(5, np.nan)],
                           rng.normal(size=100)])
    found = scoring.drift(profile, now, columns, rng.random(100), {"A": 10, "B": 100}, K)
    assert found["features"]["A|30d|count"]["missing"]["now"] is None
    assert found["codes"] == {"new": [], "vanished": ["A"]}  # 10 persons: fewer than K
    gaps = np.column_stack([np.r_[np.full(95, np.nan), np.zeros(5)], rng.normal(size=100)])
    mostly_missing = scoring.drift(profile, gaps, columns, rng.random(100), {}, K)
    assert mostly_missing["features"]["A|30d|count"]["missing"]["now"] is None  # 5 are not
    tiny = json_safe(scoring.drift(profile, now[:7], columns, rng.random(7), {"A": 7}, K))
    assert tiny == {"persons": f"<{K}", "min_cell_count": K, "epsilon": scoring.PSI_EPSILON,
                    "thresholds": scoring.DEFAULT_THRESHOLDS.as_dict(), "flags": [],
                    "withheld": f"fewer than {K} persons scored"}
    few = scoring.prospective(np.r_[np.ones(5), np.zeros(95)], rng.random(100), K,
                              training_auroc=0.8)
    assert "auroc" not in few and "outcomes" not in few and few["persons"] == 100
    assert few["withheld"] == f"fewer than {K} persons with or without the outcome"
    mostly = scoring.prospective(np.r_[np.ones(95), np.zeros(5)], rng.random(100), K)
    assert "outcomes" not in mostly  # 95 of 100 would give the 5 without
    # the records and the page they make hold no small count
    runs = [{"as_of": "2025-01-31", "drift": found, "prospective": few},
            {"as_of": "2025-02-28", "drift": tiny, "prospective": mostly}]
    (tmp_path / "runs.json").write_text(json.dumps(runs, sort_keys=True))
    (tmp_path / "profile.json").write_text(json.dumps(profile, sort_keys=True))
    page = _monitor_html.render(runs, title="tiny")
    (tmp_path / "monitor.html").write_text(page)
    files = [tmp_path / "runs.json", tmp_path / "profile.json", tmp_path / "monitor.html"]
    assert scan(files, K, NO_IDS, set()) == []
    assert f"<td class=n>&lt;{K}</td>" in page and "<td class=n>100</td>" in page
    assert f"Not shown, drift: fewer than {K} persons scored." in page
    # the scan finds a small count in a cell of the page
    leaked = page.replace(f"<td class=n>&lt;{K}</td>", "<td class=n>7</td>", 1)
    (tmp_path / "monitor.html").write_text(leaked)
    assert scan(files, K, NO_IDS, set()) != []


# ---- prospective performance ----------------------------------------------------------------

def test_prospective_metrics_are_the_direct_ones() -> None:
    rng = np.random.default_rng(8)
    p = rng.uniform(0.02, 0.6, 3000)
    risk = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + 0.5)))  # under-predicted by 0.5 log odds
    y = (rng.random(3000) < risk).astype(np.int8)
    found = json_safe(scoring.prospective(y, p, K, training_auroc=0.95))
    auc, low, high = _metrics.auroc_ci(y, p)
    assert found["auroc"] == round(auc, 10)
    assert found["auroc_ci"] == [round(low, 10), round(high, 10)]
    assert found["calibration_intercept"] == round(_metrics.calibration_intercept(y, p), 10)
    assert found["calibration_slope"] == round(_metrics.calibration_slope(y, p), 10)
    assert found["observed_rate"] == round(y.mean(), 10)
    assert found["expected_rate"] == round(p.mean(), 10)
    assert found["persons"] == 3000 and found["outcomes"] == int(y.sum())
    # the AUROC's upper bound is below the training 0.95; the risks are too low
    assert high < 0.95 and found["calibration_intercept"] > 0.2
    assert _flagged(found) == [("model", "auroc", "drift"),
                               ("model", "calibration_intercept", "watch")]
    calibrated = scoring.prospective((rng.random(3000) < p).astype(int), p, K,
                                     training_auroc=0.6)
    assert calibrated["flags"] == [] and abs(calibrated["calibration_intercept"]) < 0.2


# ---- the page ------------------------------------------------------------------------------

def series(reference: dict[str, Any]) -> list[dict[str, Any]]:
    """Three monthly scoring runs: as in training, the lab drifting, the lab shifted and
    a code gone; outcomes known for the first two."""
    runs = []
    for month, (seed, shift) in enumerate([(2, 0.0), (3, 0.4), (4, 1.0)]):
        x, s = sample(4000, seed=seed, shift=shift)
        codes = scoring.persons_with_codes(x, COLUMNS)
        if month == 2:
            codes |= {"PROCEDURE//4": 3, "CONDITION//99": 40}
        risk = 1 / (1 + np.exp(-(np.log(s / (1 - s)) + 0.5 * month)))  # later: more risk
        labels = (np.random.default_rng(100 + seed).random(len(s)) < risk).astype(int)
        runs.append({"as_of": f"2025-0{month + 1}-28",
                     "drift": scoring.drift(reference, x, COLUMNS, s, codes, K),
                     "prospective": scoring.prospective(labels, s, K, training_auroc=0.62)
                     if month < 2 else None})
    return runs


def test_the_page_shows_the_flags_first_and_is_deterministic(reference: dict[str, Any]
                                                              ) -> None:
    runs = series(reference)
    page = _monitor_html.render(runs, title="asthma exacerbation")
    assert page == _monitor_html.render(list(reversed(runs)), title="asthma exacerbation")
    sections = re.findall(r'<section id="(\w+)"', page)
    assert sections == ["flags", "trend", "features", "codes", "missing"]
    flags = page.split('<section id="flags"')[1].split("</section>")[0]
    assert 'class="drift"' in flags and "Flags of the latest run (2025-03-28)" in flags
    assert f'<tr class="drift"><td class="level">drift</td><td>{LAB}</td><td>psi</td>' in flags
    assert "<td>PROCEDURE//4</td><td>vanished_code</td>" in flags
    assert "<td>codes</td><td>new_codes</td><td class=n>1 code</td>" in flags
    assert page.count("<svg ") == 3 and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in page and "<li>CONDITION//99</li>" in page
    # the first run raised no flag; its page says so
    calm = _monitor_html.render(runs[:1])
    assert '<section id="flags" class="clear">' in calm and "No flags" in calm
    with pytest.raises(scoring.DriftError, match="no scoring run to show; fix"):
        _monitor_html.render([])


# ---- the reference profile in a real package -------------------------------------------------

@pytest.fixture(scope="module")
def packaged(laptop_run: tuple[Path, subprocess.CompletedProcess[str]],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(results/demo, its package), packaged once for the module."""
    results = laptop_run[0]
    out = tmp_path_factory.mktemp("pkg") / "model-pkg"
    package.write(results, out)
    return results, out


def test_the_package_holds_a_verified_reference_profile(packaged: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    results, out = packaged
    pkg = package.load(out)
    reference = pkg.reference
    assert reference is not None and reference["min_cell_count"] == K
    assert sorted(reference["features"]) == sorted(pkg.columns)
    listed = (out / "CHECKSUMS").read_text()
    assert f"  analyses/{DEMO_ANALYSIS}/reference.json\n" in listed
    # its train rows against it: no drift at all; its test rows: none flagged
    layout = Layout(results)
    rows = pl.read_parquet(layout.labels(DEMO_ANALYSIS))["row"].to_numpy()
    analysis = pkg.meta["analyses"][pkg.analysis]
    x, _, _ = load_matrix(layout.tensor("cohort"), analysis["params"]["feature_selection"],
                          rows)
    predictions = pl.read_parquet(layout.model_predictions(DEMO_ANALYSIS))
    test = (predictions["split"] == "test").to_numpy()
    train = ~test
    n_train = int(train.sum())
    assert _small_shares(reference, n_train) == []
    scores = pkg.predict_proba(x)
    same = scoring.drift(reference, x[train], pkg.columns, scores[train],
                         scoring.persons_with_codes(x[train], pkg.columns), K)
    assert same["flags"] == [] and same["codes"] == {"new": [], "vanished": []}
    assert max(f["psi"] for f in same["features"].values()) < 1e-8
    assert same["score"]["psi"] < 1e-8
    assert same["score"]["mean"] == reference["mean_score"]
    held_out = scoring.drift(reference, x[test], pkg.columns, scores[test],
                             scoring.persons_with_codes(x[test], pkg.columns), K)
    assert [f for f in held_out["flags"] if f["level"] == "drift"] == []
    # the test rows' prospective metrics are the packaged test metrics
    labels = predictions["label"].to_numpy()[test]
    found = scoring.prospective(labels, scores[test], K,
                                training_auroc=analysis["test_metrics"]["auroc"])
    assert found["auroc"] == pytest.approx(analysis["test_metrics"]["auroc"], abs=1e-9)
    assert found["flags"] == []
    # a changed byte of the profile is refused, naming it
    copy = tmp_path / "changed"
    shutil.copytree(out, copy)
    profile = copy / "analyses" / DEMO_ANALYSIS / "reference.json"
    profile.write_text(profile.read_text().replace('"bins": 10', '"bins": 11'))
    with pytest.raises(package.PackageError, match=r"reference\.json: changed since the "
                       "package was made"):
        package.load(copy)
