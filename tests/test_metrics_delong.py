"""DeLong's paired test of two correlated AUROCs (:func:`models.delong_difference`): the
fast midrank placements against DeLong's definition computed directly over every
case-control pair (O(n²)), a case worked out by hand, and the limits (a predictor against
itself; against a constant, where the variance is the one of :func:`models.auroc_ci`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohortflow import models


def direct(label: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """AUROC(a) - AUROC(b) and the variance of the difference from the placements as
    DeLong et al. (1988) define them, by comparing every case with every control."""
    y = label.astype(bool)
    diffs, cases, controls = [], [], []
    for p in (a, b):
        psi = (p[y][:, None] > p[~y][None, :]) + 0.5 * (p[y][:, None] == p[~y][None, :])
        v10, v01 = psi.mean(axis=1), psi.mean(axis=0)  # per case, per control
        diffs.append(psi.mean())
        cases.append(v10)
        controls.append(v01)
    s10, s01 = np.cov(np.vstack(cases)), np.cov(np.vstack(controls))
    contrast = np.array([1.0, -1.0])
    var = contrast @ s10 @ contrast / y.sum() + contrast @ s01 @ contrast / (~y).sum()
    return float(diffs[0] - diffs[1]), float(var)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fast_placements_match_the_pairwise_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    y = (rng.random(n) < 0.3).astype(np.int8)
    signal = y + rng.normal(0, 1.2, n)
    a = np.round(signal + rng.normal(0, 0.5, n), 1)  # rounded: many ties
    b = np.round(signal + rng.normal(0, 1.5, n), 1)
    diff, low, high, p = models.delong_difference(y, a, b)
    want_diff, want_var = direct(y, a, b)
    assert diff == pytest.approx(want_diff, abs=1e-12)
    se = math.sqrt(want_var)
    assert (high - low) / 2 == pytest.approx(1.959963984540054 * se, rel=1e-9)
    assert p == pytest.approx(math.erfc(abs(want_diff) / se / math.sqrt(2)), rel=1e-9)
    assert low < diff < high
    assert diff > 0 and p < 0.05  # the less noisy predictor is better, clearly at n = 300


def test_a_case_worked_out_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    a, b = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.2, 0.25, 0.3, 0.9])
    diff, low, high, p = models.delong_difference(y, a, b)
    # a: case placements 0.5, 1; control placements 1, 0.5 (AUROC 0.75).  b: all 1.
    # var = var(0.5 - 1, 1 - 1)/2 + var(1 - 1, 0.5 - 1)/2 = 0.125/2 + 0.125/2
    se = math.sqrt(0.125)
    assert diff == pytest.approx(-0.25)
    assert (low, high) == pytest.approx((-0.25 - 1.959964 * se, -0.25 + 1.959964 * se))
    assert p == pytest.approx(math.erfc(0.25 / se / math.sqrt(2)))
    assert p == pytest.approx(0.4795, abs=1e-4)
    assert models.delong_difference(y, b, a)[0] == pytest.approx(0.25)


def test_a_predictor_against_itself_and_against_a_constant() -> None:
    rng = np.random.default_rng(7)
    y = (rng.random(200) < 0.4).astype(np.int8)
    a = y + rng.normal(0, 1, 200)
    assert models.delong_difference(y, a, a) == (0.0, 0.0, 0.0, 1.0)
    # a constant's placements are all 1/2: the difference's variance is a's own
    diff, low, high, _ = models.delong_difference(y, a, np.zeros(200))
    auc, auc_low, auc_high = models.auroc_ci(y, a)
    assert diff == pytest.approx(auc - 0.5)
    assert high - low == pytest.approx(auc_high - auc_low)  # a's interval is not cut at 1
    with pytest.raises(ValueError, match="at least one case and one control"):
        models.delong_difference(np.zeros(3), a[:3], a[:3])
