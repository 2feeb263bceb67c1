"""The evaluation of OHDSI PatientLevelPrediction: discrimination and calibration.

Every metric is a plain function of labels (0/1) and predicted probabilities, checked in
``tests/test_models_metrics.py`` against values worked out by hand on a few persons.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score

from cohortflow.privacy import pool_bins

_Z95 = 1.959963984540054
_EPS = 1e-8  # predictions of exactly 0 or 1 (trees) get a finite logit
#: Cells (points × persons) of one block of :func:`smoothed_observed`'s distance arrays:
#: 32 MiB a float64 temporary, whatever the number of persons (a fixed 256 points per
#: block held 200 × persons: 1.2 GiB a temporary at a million persons).
SMOOTH_BLOCK_CELLS = 1 << 22


def _placements(label: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placement values by midranks (Sun & Xu 2014, O(n log n)): per case the
    share of controls it outscores, per control the share of cases that outscore it (ties
    count one half)."""
    label = np.asarray(label).astype(bool)
    prediction = np.asarray(prediction, dtype=np.float64)
    cases, controls = prediction[label], prediction[~label]
    m, n = len(cases), len(controls)
    ranks_all = rankdata(np.r_[cases, controls])
    case_place = (ranks_all[:m] - rankdata(cases)) / n
    control_place = 1.0 - (ranks_all[m:] - rankdata(controls)) / m
    return case_place, control_place


def delong_difference(label: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray
                      ) -> tuple[float, float, float, float]:
    """AUROC(a) - AUROC(b) of two predictions for the same persons, its 95% confidence
    interval and the two-sided p-value of DeLong's paired test (DeLong, DeLong &
    Clarke-Pearson 1988; placements by midranks as Sun & Xu 2014).  The AUROCs are
    correlated (same persons), so the variance of the difference takes the covariance of
    the two predictions' placements into account: ``var = L S10 L'/m + L S01 L'/n`` with
    ``L = (1, -1)``.

    By hand: cases score 0.35, 0.8 under a and 0.3, 0.9 under b; controls 0.1, 0.4 and
    0.2, 0.25.  Placements of a: cases 0.5, 1 and controls 1, 0.5 (AUROC 0.75); of b all
    1 (AUROC 1).  Difference -0.25, variance 0.125/2 + 0.125/2 = 0.125, z = -0.7071,
    p = erfc(0.5) = 0.4795.

    >>> y = np.array([0, 0, 1, 1])
    >>> a, b = np.array([.1, .4, .35, .8]), np.array([.2, .25, .3, .9])
    >>> [round(v, 4) for v in delong_difference(y, a, b)]
    [-0.25, -0.943, 0.443, 0.4795]
    """
    y = np.asarray(label).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError("delong_difference needs at least one case and one control")
    case_a, control_a = _placements(y, pred_a)
    case_b, control_b = _placements(y, pred_b)
    diff = float(case_a.mean() - case_b.mean())
    var = 0.0
    for a, b, k in ((case_a, case_b, m), (control_a, control_b, n)):
        if k > 1:
            var += float(np.var(a - b, ddof=1)) / k  # L S L' is the variance of a - b
    se = math.sqrt(max(var, 0.0))
    if se == 0.0:
        return diff, diff, diff, 1.0 if diff == 0 else 0.0
    p = math.erfc(abs(diff) / se / math.sqrt(2.0))
    return diff, diff - _Z95 * se, diff + _Z95 * se, p


def auroc_ci(label: np.ndarray, prediction: np.ndarray) -> tuple[float, float, float]:
    """AUROC and its 95% confidence interval by DeLong's method (ties count one half).

    By hand: the cases score 0.35 and 0.8, the controls 0.1 and 0.4.  Case placements
    (share of controls below) 0.5 and 1, control placements (share of cases above) 1 and
    0.5; AUROC 0.75; variance 0.125/2 + 0.125/2 = 0.125; 0.75 ± 1.96·0.354, cut at 1.

    >>> [round(v, 4) for v in auroc_ci(np.array([0, 0, 1, 1]), np.array([.1, .4, .35, .8]))]
    [0.75, 0.057, 1.0]
    """
    case_place, control_place = _placements(label, prediction)
    m, n = len(case_place), len(control_place)
    auc = float(case_place.mean())
    var = (case_place.var(ddof=1) / m if m > 1 else 0.0) + (
        control_place.var(ddof=1) / n if n > 1 else 0.0)
    half = _Z95 * math.sqrt(var)
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def brier(label: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    """Brier score and scaled Brier (1 - Brier / the Brier of predicting the outcome rate).

    >>> [round(v, 6) for v in brier(np.array([0, 0, 1, 1]), np.array([.1, .4, .35, .8]))]
    [0.158125, 0.3675]
    """
    y = np.asarray(label, dtype=np.float64)
    score = float(np.mean((np.asarray(prediction, dtype=np.float64) - y) ** 2))
    rate = float(y.mean())
    worst = rate * (1 - rate)
    return score, (1 - score / worst) if worst > 0 else float("nan")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return cast(np.ndarray, np.log(p / (1 - p)))


def _expit(x: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, 1.0 / (1.0 + np.exp(-x)))


def calibration_intercept(label: np.ndarray, prediction: np.ndarray) -> float:
    """Calibration in the large: ``a`` of ``logit P(y) = a + logit(p)`` (0 = calibrated).

    By hand, four persons predicted 0.2 and four 0.6 with four outcomes: the sum of the
    refitted risks is four when a - 1.386 = -(a + 0.405), so a = 0.4904.

    >>> y = np.array([0, 0, 0, 1, 0, 1, 1, 1]); p = np.array([.2] * 4 + [.6] * 4)
    >>> round(calibration_intercept(y, p), 4)
    0.4904
    """
    y = np.asarray(label, dtype=np.float64)
    offset = _logit(prediction)
    a = 0.0
    for _ in range(100):
        fitted = _expit(a + offset)
        step = (y - fitted).sum() / max((fitted * (1 - fitted)).sum(), 1e-300)
        a += step
        if abs(step) < 1e-12:
            break
    return float(a)


def calibration_slope(label: np.ndarray, prediction: np.ndarray) -> float:
    """Calibration slope: ``b`` of the logistic regression ``logit P(y) = a + b·logit(p)``
    (1 = calibrated, below 1 = predictions too extreme).

    By hand: with two predicted risks the fit is saturated, so
    b = (logit 0.75 - logit 0.25) / (logit 0.6 - logit 0.2) = 2.1972 / 1.7918.

    >>> y = np.array([0, 0, 0, 1, 0, 1, 1, 1]); p = np.array([.2] * 4 + [.6] * 4)
    >>> round(calibration_slope(y, p), 4)
    1.2263
    """
    y = np.asarray(label, dtype=np.float64)
    x = np.c_[np.ones(len(y)), _logit(prediction)]
    beta = np.zeros(2)
    for _ in range(100):
        fitted = _expit(x @ beta)
        w = fitted * (1 - fitted)
        hessian = x.T @ (x * w[:, None])
        try:
            step = np.linalg.solve(hessian, x.T @ (y - fitted))
        except np.linalg.LinAlgError:
            return float("nan")
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(beta[1])


def smoothed_observed(prediction: np.ndarray, label: np.ndarray, at: np.ndarray,
                      span: float = 0.75) -> np.ndarray:
    """The observed risk at ``at`` by a local-linear lowess of label on prediction
    (tricube weights over the nearest ``span`` share of persons, no robustness steps).

    A lowess reproduces a straight line exactly:

    >>> p = np.array([.1, .2, .3, .4, .5]); smoothed_observed(p, 2 * p, p).round(6).tolist()
    [0.2, 0.4, 0.6, 0.8, 1.0]
    """
    x = np.asarray(prediction, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    at = np.asarray(at, dtype=np.float64)
    k = min(len(x), max(2, math.ceil(span * len(x))))
    out = np.empty(len(at))
    # Each point is computed alone (row-wise reductions), so the block size changes memory,
    # never a result.
    step = max(1, min(256, SMOOTH_BLOCK_CELLS // max(len(x), 1)))
    for start in range(0, len(at), step):
        block = at[start:start + step]
        dist = np.abs(block[:, None] - x[None, :])
        h = np.partition(dist, k - 1, axis=1)[:, k - 1]
        h = np.where(h > 0, h, 1.0) * (1 + 1e-9)  # the k-th neighbour keeps a small weight
        w = np.clip(1 - (dist / h[:, None]) ** 3, 0, None) ** 3
        sw = w.sum(axis=1)
        mx = (w * x).sum(axis=1) / sw
        my = (w * y).sum(axis=1) / sw
        sxx = (w * (x - mx[:, None]) ** 2).sum(axis=1)
        sxy = (w * (x - mx[:, None]) * (y - my[:, None])).sum(axis=1)
        slope = np.where(sxx > 1e-15, sxy / np.where(sxx > 1e-15, sxx, 1.0), 0.0)
        out[start:start + step] = my + slope * (block - mx)
    return out


def e_avg(label: np.ndarray, prediction: np.ndarray, grid: int = 200) -> float:
    """E-avg (the integrated calibration index): the mean absolute difference between each
    prediction and the lowess-smoothed observed risk at it.  Above ``grid`` persons the
    smoother is evaluated at ``grid`` quantiles of the predictions and interpolated.

    By hand, everyone predicted 0.2 with an outcome rate of 0.5: E-avg = |0.2 - 0.5|.

    >>> round(e_avg(np.array([0, 1, 0, 1]), np.array([.2, .2, .2, .2])), 6)
    0.3
    """
    p = np.asarray(prediction, dtype=np.float64)
    if len(p) <= grid:
        observed = smoothed_observed(p, label, p)
    else:
        knots = np.unique(np.quantile(p, np.linspace(0, 1, grid)))
        observed = np.interp(p, knots, smoothed_observed(p, label, knots))
    return float(np.mean(np.abs(p - observed)))


def calibration_bins(label: np.ndarray, prediction: np.ndarray, bins: int = 10
                     ) -> list[dict[str, float]]:
    """Raw calibration-plot data: per quantile bin of the predictions (persons with equal
    predictions share a bin), its persons, those with the outcome and the sum of their
    predictions.  Exact counts: a sweep output, never shown as it is; the report pools the
    bins for display (:func:`pool_calibration`), so the display threshold is not part of a
    model's rerun key.

    >>> y, p = np.array([0, 0, 0, 1, 0, 1, 1, 1]), np.array([.2] * 4 + [.6] * 4)
    >>> calibration_bins(y, p, bins=2)  # doctest: +NORMALIZE_WHITESPACE
    [{'persons': 4, 'outcomes': 1, 'predicted_sum': 0.8},
     {'persons': 4, 'outcomes': 3, 'predicted_sum': 2.4}]
    """
    y = np.asarray(label, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1]))
    which = np.searchsorted(edges, p, side="left")
    return [{"persons": int((which == b).sum()), "outcomes": int(y[which == b].sum()),
             "predicted_sum": round(float(p[which == b].sum()), 10)}
            for b in np.unique(which)]


def pool_calibration(bins: list[dict[str, Any]], min_cell_count: int
                     ) -> list[dict[str, float]]:
    """Calibration-plot points (mean prediction, observed rate) of :func:`calibration_bins`,
    adjacent bins pooled until none holds fewer than the study's ``min_cell_count`` persons
    with or without the outcome (:func:`cohortflow.privacy.pool_bins`); 0 pools nothing
    (points for people allowed to see every count).

    >>> raw = [{"persons": 4, "outcomes": 1, "predicted_sum": 0.8},
    ...        {"persons": 4, "outcomes": 3, "predicted_sum": 2.4}]
    >>> pool_calibration(raw, min_cell_count=0)
    [{'predicted': 0.2, 'observed': 0.25}, {'predicted': 0.6, 'observed': 0.75}]
    >>> pool_calibration(raw, min_cell_count=2)
    [{'predicted': 0.4, 'observed': 0.5}]
    """
    groups = [[i] for i in range(len(bins))]
    if min_cell_count:
        groups = pool_bins([b["outcomes"] for b in bins], [b["persons"] for b in bins],
                           min_cell_count)
    out = []
    for group in groups:
        persons = sum(bins[i]["persons"] for i in group)
        out.append({
            "predicted": round(sum(bins[i]["predicted_sum"] for i in group) / persons, 10),
            "observed": round(sum(bins[i]["outcomes"] for i in group) / persons, 10)})
    return out


def calibration_curve(label: np.ndarray, prediction: np.ndarray, min_cell_count: int,
                      bins: int = 10) -> list[dict[str, float]]:
    """Calibration-plot data: mean prediction and observed rate in quantile bins of the
    predictions, pooled below ``min_cell_count`` (:func:`pool_calibration`).

    >>> y, p = np.array([0, 0, 0, 1, 0, 1, 1, 1]), np.array([.2] * 4 + [.6] * 4)
    >>> calibration_curve(y, p, min_cell_count=0, bins=2)
    [{'predicted': 0.2, 'observed': 0.25}, {'predicted': 0.6, 'observed': 0.75}]
    >>> calibration_curve(y, p, bins=2, min_cell_count=2)
    [{'predicted': 0.4, 'observed': 0.5}]
    """
    return pool_calibration(calibration_bins(label, prediction, bins), min_cell_count)


def evaluate(label: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Every metric of one set of predictions, as a flat mapping of floats.

    >>> m = evaluate(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> {k: round(m[k], 6) for k in ("auroc", "auprc", "brier", "scaled_brier")}
    {'auroc': 0.75, 'auprc': 0.833333, 'brier': 0.158125, 'scaled_brier': 0.3675}
    """
    label = np.asarray(label).astype(np.int8)
    auc, low, high = auroc_ci(label, prediction)
    score, scaled = brier(label, prediction)
    return {
        "auroc": auc,
        "auroc_ci_low": low,
        "auroc_ci_high": high,
        "auprc": float(average_precision_score(label, prediction)),
        "brier": score,
        "scaled_brier": scaled,
        "calibration_intercept": calibration_intercept(label, prediction),
        "calibration_slope": calibration_slope(label, prediction),
        "e_avg": e_avg(label, prediction),
    }
