"""Every evaluation metric against a value worked out by hand on a few persons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohortflow import models

# Two cases (0.35, 0.8) and two controls (0.1, 0.4).
Y4 = np.array([0, 0, 1, 1])
P4 = np.array([0.1, 0.4, 0.35, 0.8])
# Four persons predicted 0.2 (one outcome) and four predicted 0.6 (three outcomes).
Y8 = np.array([0, 0, 0, 1, 0, 1, 1, 1])
P8 = np.array([0.2] * 4 + [0.6] * 4)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_auroc_and_delong_interval_by_hand() -> None:
    auc, low, high = models.auroc_ci(Y4, P4)
    # Case placements: 0.35 beats one control of two, 0.8 beats both -> 0.5, 1.
    # Control placements (share of cases above): 0.1 -> 1, 0.4 -> 0.5.
    assert auc == pytest.approx(0.75)
    var = np.var([0.5, 1.0], ddof=1) / 2 + np.var([1.0, 0.5], ddof=1) / 2  # 0.0625 + 0.0625
    assert var == pytest.approx(0.125)
    assert low == pytest.approx(0.75 - 1.959964 * math.sqrt(0.125), abs=1e-6)
    assert high == 1.0  # 0.75 + 0.693 is cut at 1


def test_auroc_counts_ties_as_one_half() -> None:
    # The case at 0.5 ties the control at 0.5 (1/2) and beats the one at 0.1: AUROC 3/4.
    auc, low, high = models.auroc_ci(np.array([0, 0, 1]), np.array([0.1, 0.5, 0.5]))
    assert auc == pytest.approx(0.75)
    # One case: no case-placement variance; control placements 1 and 0.5 -> 0.125 / 2.
    assert low == pytest.approx(0.75 - 1.959964 * math.sqrt(0.0625), abs=1e-6)
    assert high == 1.0


def test_auprc_by_hand() -> None:
    # Ranked by prediction: 0.8 case (precision 1/1), 0.4 control, 0.35 case (precision 2/3).
    # Average precision = (1 + 2/3) / 2 = 5/6.
    assert models.evaluate(Y4, P4)["auprc"] == pytest.approx(5 / 6)


def test_brier_and_scaled_brier_by_hand() -> None:
    score, scaled = models.brier(Y4, P4)
    assert score == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)  # 0.158125
    # Predicting the outcome rate 0.5 for all scores 0.25.
    assert scaled == pytest.approx(1 - 0.158125 / 0.25)


def test_calibration_intercept_by_hand() -> None:
    # Everyone predicted 0.2, outcome rate 0.5: a = logit(0.5) - logit(0.2).
    y = np.array([0, 1, 0, 1])
    assert models.calibration_intercept(y, np.full(4, 0.2)) == pytest.approx(-logit(0.2))
    # Two groups: sum of expit(a + logit p) is 4 when a + logit 0.2 = -(a + logit 0.6).
    assert models.calibration_intercept(Y8, P8) == pytest.approx(
        -(logit(0.2) + logit(0.6)) / 2, abs=1e-9)


def test_calibration_slope_by_hand() -> None:
    # Saturated fit through (logit 0.2, logit 0.25) and (logit 0.6, logit 0.75).
    expected = (logit(0.75) - logit(0.25)) / (logit(0.6) - logit(0.2))
    assert models.calibration_slope(Y8, P8) == pytest.approx(expected, abs=1e-9)
    # Perfectly calibrated groups: slope 1 and intercept 0.
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.25] * 4 + [0.75] * 4)
    assert models.calibration_slope(y, p) == pytest.approx(1.0, abs=1e-9)
    assert models.calibration_intercept(y, p) == pytest.approx(0.0, abs=1e-9)


def test_e_avg_by_hand() -> None:
    # One prediction value: the smoother is the outcome rate, E-avg = |0.2 - 0.5|.
    assert models.e_avg(np.array([0, 1, 0, 1]), np.full(4, 0.2)) == pytest.approx(0.3)
    # Observed risk exactly twice the prediction: a lowess reproduces lines, so
    # E-avg = mean |p - 2p| = mean p.
    p = np.linspace(0.05, 0.45, 9)
    assert models.e_avg(2 * p, p) == pytest.approx(p.mean(), abs=1e-9)
    # Perfect calibration in two groups of a line: 0.
    assert models.e_avg(np.array([0.25] * 4 + [0.75] * 4),
                        np.array([0.25] * 4 + [0.75] * 4)) == pytest.approx(0.0, abs=1e-9)


def test_e_avg_on_a_grid_matches_the_exact_smoother() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.6, 600)
    y = (rng.uniform(size=600) < p).astype(float)
    exact = float(np.mean(np.abs(p - models.smoothed_observed(p, y, p))))
    assert models.e_avg(y, p, grid=200) == pytest.approx(exact, abs=2e-3)
    assert models.e_avg(y, p, grid=1000) == pytest.approx(exact, abs=1e-12)


def test_smoother_memory_is_bounded_and_its_blocks_change_no_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """E-avg of a million-person test set must not hold grid × persons floats at once; the
    block size is invisible in the values, bit for bit."""
    import tracemalloc

    from cohortflow.models import _metrics

    rng = np.random.default_rng(2)
    n = 200_000
    p = np.round(rng.uniform(0.01, 0.9, n), 3)  # ties, as trees predict
    y = (rng.uniform(size=n) < p).astype(np.int8)
    tracemalloc.start()
    value = models.e_avg(y, p, grid=200)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # 200 points × 200,000 persons is 320 MB a float64 array; a bounded block holds 32 MiB
    assert peak < 8 * _metrics.SMOOTH_BLOCK_CELLS * 8 + 64 * n
    at = p[:300]
    blocked = models.smoothed_observed(p[:5000], y[:5000], at)
    monkeypatch.setattr(_metrics, "SMOOTH_BLOCK_CELLS", 5000 * 7)  # 7 points a block
    assert np.array_equal(models.smoothed_observed(p[:5000], y[:5000], at), blocked)
    monkeypatch.setattr(_metrics, "SMOOTH_BLOCK_CELLS", 1)  # one point a block
    assert models.e_avg(y, p, grid=200) == value


def test_calibration_curve_by_hand() -> None:
    assert models.calibration_curve(Y8, P8, min_cell_count=0, bins=2) == [
        {"predicted": 0.2, "observed": 0.25}, {"predicted": 0.6, "observed": 0.75}]
    # Deciles of 0.05 .. 1.0: ten bins of two persons; observed = share of outcomes.
    p = np.arange(1, 21) / 20
    y = np.array([0, 1] * 10)
    curve = models.calibration_curve(y, p, min_cell_count=0, bins=10)
    assert len(curve) == 10
    assert curve[0] == {"predicted": pytest.approx(0.075), "observed": 0.5}


def test_evaluate_reports_every_metric() -> None:
    m = models.evaluate(Y8, P8)
    assert set(m) == {"auroc", "auroc_ci_low", "auroc_ci_high", "auprc", "brier",
                      "scaled_brier", "calibration_intercept", "calibration_slope", "e_avg"}
    # AUROC by hand: 4 cases x 4 controls; case at 0.2 vs controls: 3 ties (1.5);
    # cases at 0.6 vs controls: 3 x 3 wins + 3 x 1 tie (1.5 each) -> (1.5 + 9 + 1.5) / 16.
    assert m["auroc"] == pytest.approx(12 / 16)
    assert m["brier"] == pytest.approx((3 * 0.04 + 0.64 + 0.36 + 3 * 0.16) / 8)
