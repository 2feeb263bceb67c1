"""Drift of a scoring run against the data its model was trained on, and the model's
prospective performance once the outcomes of a scoring are known: plain statistics over
numpy arrays, JSON-safe results (sorted keys when written), no count below the study's
``min_cell_count``.

The training side is a *reference profile* (:func:`reference_profile`), made from the
train rows of the packaged model's refit and stored in the model package
(``analyses/<ID>/reference.json``): per feature the bin edges of its train values, the share
of train persons in each bin and the share missing; the same for the model's scores; and
the feature codes at least ``min_cell_count`` train persons have.  :func:`drift` bins a
scored extract on the same edges and gives the population stability index (PSI) of every
feature and of the scores, the change in missingness, the codes new to the model and those
that vanished, and flags at the usual PSI thresholds (:class:`Thresholds`).
:func:`prospective` gives AUROC (95% CI), calibration in the large and slope, observed and
expected outcome rates for the persons of an earlier scoring whose outcomes are now known.

Bins: a feature's non-missing train values are cut at their deciles (a count or binary
feature with few distinct values gets fewer bins: equal quantiles are one edge, and an edge
lies halfway between the largest train value of its bin and the smallest of the next, so no
bin is empty and no edge is a person's value); a value ``v`` falls in the first bin whose
edge is ``>= v``, above the last edge in the last bin; missing values (NaN) are a category
of their own, listed first.  Privacy: adjacent categories are pooled (as
:func:`cohortflow.privacy.pool_bins` pools calibration bins) until none holds between 1 and
``min_cell_count - 1`` persons (the edges inside a pooled group of bins dropped), on the
training side when the profile is made and again on the extract's side when it is
compared, so no share times a known total gives a small count; a missing share pooled with
a bin is not shown (``null``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from cohortflow.errors import DriftError
from cohortflow.privacy import pool_bins, small, split_shown, suppress_value

PROFILE_FORMAT = 1
"""The version of a reference profile's layout (``reference.json``'s ``format``)."""
BINS = 10
"""Quantile bins per feature and for the scores (fewer when values repeat)."""
PSI_EPSILON = 1e-4
"""A share below this counts as this in the PSI (an empty bin would make it infinite)."""
ROUND = 10  # decimals kept of shares and statistics: the same text on every platform
MODEL = "model"  # the ``feature`` a flag of the model's performance names
SCORE = "score"  # the ``feature`` a flag of the scores' distribution names
LEVELS = ("drift", "watch")  # flags' levels, the more serious first


@dataclass(frozen=True)
class Thresholds:
    """Where a statistic raises a flag.  The PSI levels are the usual ones (below 0.1
    stable, 0.1 to 0.25 worth watching, above 0.25 a shift); one object so that a study can
    set its own later.

    >>> Thresholds().psi_watch, Thresholds(psi_drift=0.3).as_dict()["psi_drift"]
    (0.1, 0.3)
    """

    psi_watch: float = 0.1
    psi_drift: float = 0.25
    missing_watch: float = 0.1
    """An absolute change of a feature's missing share from training."""
    missing_drift: float = 0.25
    calibration_intercept: float = 0.2
    """The largest |calibration in the large| (log odds) that raises no flag."""
    slope_low: float = 0.8
    slope_high: float = 1.25
    evidence: float = 0.01
    """The chance, at most, that a run without any change raises a PSI flag (and, apart,
    a calibration flag): beside its size, a PSI raises a flag only when sampling alone
    would give one that far from training with p below ``evidence`` over the number of
    PSIs the run compares (Bonferroni; n·PSI against chi-square with bins - 1 degrees of
    freedom), a calibration intercept or slope only when its Wald test gives p below
    ``evidence`` / 2.  A run of a few hundred persons has a PSI of about (bins - 1)/n from
    sampling alone, as large as the usual watch level: size alone would flag noise, and a
    hundred features compared at a fixed p would flag some by chance."""

    def as_dict(self) -> dict[str, float]:
        """The thresholds as a JSON-safe mapping (recorded in each result)."""
        return {k: float(v) for k, v in sorted(asdict(self).items())}


DEFAULT_THRESHOLDS = Thresholds()


# ---- bins ----------------------------------------------------------------------------------

def value_edges(values: np.ndarray, bins: int = BINS) -> list[float]:
    """The bin edges of non-missing ``values``: between each non-empty quantile bin and the
    next, halfway from the bin's largest value to the next one's smallest (so no edge is a
    person's value, and no bin of ``values`` is empty).

    >>> value_edges(np.arange(1.0, 11.0), bins=5)
    [2.5, 4.5, 6.5, 8.5]
    >>> value_edges(np.array([0.0] * 90 + [1.0] * 10)), value_edges(np.array([3.0, 3.0]))
    ([0.5], [])
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return []
    quantiles = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
    which = np.searchsorted(quantiles, v, side="left")
    spans = sorted((float(v[which == b].min()), float(v[which == b].max()))
                   for b in np.unique(which))
    return [(top + bottom) / 2 for (_, top), (bottom, _) in itertools.pairwise(spans)]


def categories(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Each value's category: 0 when missing (NaN), else 1 + its bin on ``edges``.

    >>> categories(np.array([np.nan, 0.0, 0.5, 2.0, 9.0]), [0.0, 2.0]).tolist()
    [0, 1, 2, 2, 3]
    """
    v = np.asarray(values, dtype=np.float64)
    found = np.searchsorted(np.asarray(edges, dtype=np.float64), v, side="left") + 1
    return np.where(np.isnan(v), 0, found)


def pool(counts: Sequence[int], min_cell_count: int) -> list[list[int]]:
    """Adjacent categories grouped until no group holds a small number of persons (between
    1 and ``min_cell_count - 1``): :func:`cohortflow.privacy.pool_bins` with each
    category's persons counted as both its persons with and its persons without the
    outcome.  A group of no person stays (0 is not small).

    >>> pool([0, 30, 4, 50, 12], 11)
    [[0], [1, 2], [3], [4]]
    >>> pool([3, 40], 11), pool([3, 40], 0)
    ([[0, 1]], [[0], [1]])
    """
    counts = [int(c) for c in counts]
    return pool_bins(counts, [2 * c for c in counts], min_cell_count)


def groups(counts: Sequence[int], min_cell_count: int) -> list[list[int]]:
    """The pooled groups of a feature's categories (missing first, then its bins): the
    missing category alone when it holds no person or enough, the bins pooled among
    themselves (:func:`pool`); else all of them pooled together.

    >>> groups([0, 4, 30, 50], 11), groups([3, 40, 50], 11)
    ([[0], [1, 2], [3]], [[0, 1], [2]])
    """
    counts = [int(c) for c in counts]
    values = [[i + 1 for i in g] for g in pool(counts[1:], min_cell_count)]
    if not small(counts[0], min_cell_count) and not any(
            small(sum(counts[i] for i in g), min_cell_count) for g in values):
        return [[0], *values]
    return pool(counts, min_cell_count)


def sorted_keys(record: Any) -> Any:
    """A JSON-like record with every mapping's keys in sorted order (lists keep theirs), so
    its text is the same however it is written.

    >>> sorted_keys({"b": [{"d": 1, "c": 2}], "a": None})
    {'a': None, 'b': [{'c': 2, 'd': 1}]}
    """
    if isinstance(record, Mapping):
        return {str(k): sorted_keys(record[k]) for k in sorted(record)}
    if isinstance(record, list | tuple):
        return [sorted_keys(v) for v in record]
    return record


def _record(record: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted_keys(record))


def _share(count: int, total: int) -> float:
    return round(count / total, ROUND)


def _profile(values: np.ndarray, min_cell_count: int, bins: int) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    if small(len(v), min_cell_count) or len(v) == 0:
        return {"withheld": f"fewer than {min_cell_count} persons"}
    edges = value_edges(v[~np.isnan(v)], bins)
    counts = np.bincount(categories(v, edges), minlength=len(edges) + 2)
    pooled = groups(counts.tolist(), min_cell_count)
    # an edge inside a pooled group of bins goes: edge j parts categories j + 1 and j + 2
    inside = {j for g in pooled for j in range(len(edges)) if j + 1 in g and j + 2 in g}
    if inside:
        edges = [e for j, e in enumerate(edges) if j not in inside]
        counts = np.bincount(categories(v, edges), minlength=len(edges) + 2)
        pooled = groups(counts.tolist(), min_cell_count)
    return {"edges": edges, "groups": pooled,
            "shares": [_share(int(counts[g].sum()), len(v)) for g in pooled],
            "missing": _share(int(counts[0]), len(v)) if pooled[0] == [0] else None}


def persons_with_codes(x: np.ndarray, columns: Sequence[str]) -> dict[str, int]:
    """Persons (rows of ``x``) with each feature code: a value neither missing nor 0 in
    any of its columns (``code|window|aggregation``).

    >>> persons_with_codes(np.array([[1.0, np.nan, 0.0], [0.0, np.nan, 3.0]]),
    ...                    ["A|30d|count", "A|30d|mean", "B|30d|count"])
    {'A': 1, 'B': 1}
    """
    x = np.asarray(x, dtype=np.float64)
    codes = sorted({str(c).split("|")[0] for c in columns})
    has = {code: np.zeros(len(x), dtype=bool) for code in codes}
    for j, column in enumerate(columns):
        has[str(column).split("|")[0]] |= ~np.isnan(x[:, j]) & (x[:, j] != 0)
    return {code: int(has[code].sum()) for code in codes}


def _checked(x: np.ndarray, columns: Sequence[str], scores: np.ndarray, what: str
             ) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(columns):
        raise DriftError(f"{what}: the feature matrix has shape {x.shape} for {len(columns)} "
                         "columns; fix: pass one column per entry of `columns`, in its order")
    if s.shape != (len(x),) or not np.isfinite(s).all():
        raise DriftError(f"{what}: {s.shape[0] if s.ndim else 0} scores for {len(x)} rows, "
                         "or a score that is not a finite number; fix: pass the model's "
                         "predicted probability of each row")
    bad = ~np.isfinite(x) & ~np.isnan(x)
    if bad.any():
        column = columns[int(np.flatnonzero(bad.any(axis=0))[0])]
        raise DriftError(f"{what}: column {column} holds an infinite value; fix: features "
                         "are finite numbers or NaN (missing)")
    return x, s


def reference_profile(x: np.ndarray, columns: Sequence[str], scores: np.ndarray,
                      min_cell_count: int, bins: int = BINS) -> dict[str, Any]:
    """What the training data looked like, for :func:`drift`: per feature (``columns``, the
    columns of ``x``) its bin edges, the share of persons per (pooled) bin and the share
    missing; the same for ``scores``; their mean; and the feature codes at least
    ``min_cell_count`` persons have.  ``x``: the train rows of the packaged model.

    >>> x = np.array([[float(i % 2), float(i)] for i in range(40)])
    >>> p = reference_profile(x, ["A|30d|present", "B|30d|count"], x[:, 1] / 40, 11)
    >>> p["features"]["A|30d|present"]
    {'edges': [0.5], 'groups': [[0], [1], [2]], 'missing': 0.0, 'shares': [0.0, 0.5, 0.5]}
    >>> p["features"]["B|30d|count"]["edges"], p["codes"]
    ([11.5, 23.5], ['A', 'B'])
    """
    x, s = _checked(x, columns, scores, "reference profile")
    features = {str(c): _profile(x[:, j], min_cell_count, bins) for j, c in enumerate(columns)}
    present = persons_with_codes(x, columns)
    shown = len(s) > 0 and not small(len(s), min_cell_count)
    return _record({
        "format": PROFILE_FORMAT, "bins": bins, "min_cell_count": min_cell_count,
        "features": features, "score": _profile(s, min_cell_count, bins),
        "mean_score": round(float(s.mean()), ROUND) if shown else None,
        "persons": len(s) if shown else None,
        "codes": sorted(c for c, n in present.items() if n >= max(min_cell_count, 1)),
    })


# ---- drift ---------------------------------------------------------------------------------

def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = PSI_EPSILON
        ) -> float:
    """Population stability index: the sum over bins of (actual - expected) ·
    ln(actual / expected), each share below ``epsilon`` taken as ``epsilon``.

    By hand: shares (0.5, 0.5) against (0.4, 0.6): -0.1·ln(0.8) + 0.1·ln(1.2) = 0.040547.

    >>> round(psi([0.5, 0.5], [0.4, 0.6]), 6), psi([0.3, 0.7], [0.3, 0.7])
    (0.040547, 0.0)
    """
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, epsilon), max(a, epsilon)
        total += (a - e) * math.log(a / e)
    return total


def psi_p_value(value: float, persons: int, bins: int,
                reference_persons: int | None = None) -> float:
    """The chance of a PSI at least ``value`` from sampling alone, among ``persons`` drawn
    from the training distribution over ``bins`` bins: n·PSI is about chi-square with
    ``bins - 1`` degrees of freedom (PSI is nearly Pearson's statistic over n).  The
    training shares are themselves a sample of ``reference_persons`` (when the profile
    records it): the two-sample statistic takes n as 1 / (1/n + 1/N).

    >>> round(psi_p_value(0.1, 100, 10), 3), round(psi_p_value(0.1, 1000, 10), 6)
    (0.35, 0.0)
    >>> round(psi_p_value(0.1, 300, 10), 4), round(psi_p_value(0.1, 300, 10, 1800), 4)
    (0.0004, 0.0023)
    """
    from scipy.stats import chi2

    if bins < 2:
        return 1.0
    n = persons if not reference_persons else 1 / (1 / persons + 1 / reference_persons)
    return float(chi2.sf(n * value, bins - 1))


def _wald_p(estimate: float, standard_error: float) -> float:
    from scipy.stats import norm

    if not (math.isfinite(estimate) and math.isfinite(standard_error)) or standard_error <= 0:
        return 1.0
    return float(2 * norm.sf(abs(estimate) / standard_error))


def calibration_p_values(labels: np.ndarray, scores: np.ndarray, intercept: float,
                         slope: float) -> tuple[float, float]:
    """Wald p-values of calibration in the large (against 0) and of the calibration slope
    (against 1), with standard errors from the information at the model's own risks (what
    the calibrated model would give).

    >>> p = np.full(400, 0.2); y = (np.arange(400) < 80).astype(int)
    >>> round(calibration_p_values(y, p, 0.0, 1.0)[0], 3)
    1.0
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    w = p * (1 - p)
    se_intercept = 1 / math.sqrt(max(float(w.sum()), 1e-300))
    x = np.c_[np.ones(len(p)), np.log(p / (1 - p))]
    try:
        cov = np.linalg.inv(x.T @ (x * w[:, None]))
        se_slope = math.sqrt(max(float(cov[1, 1]), 0.0))
    except np.linalg.LinAlgError:
        se_slope = math.inf
    return _wald_p(intercept, se_intercept), _wald_p(slope - 1, se_slope)


def _level(value: float, watch: float, drift: float) -> str | None:
    if value >= drift:
        return "drift"
    return "watch" if value >= watch else None


def _flag(level: str, feature: str, statistic: str, value: Any, threshold: Any
          ) -> dict[str, Any]:
    return {"level": level, "feature": feature, "statistic": statistic, "value": value,
            "threshold": threshold}


def sorted_flags(flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flags in a fixed order: drift before watch, then by statistic and feature."""
    return sorted(flags, key=lambda f: (LEVELS.index(f["level"]), f["statistic"],
                                        f["feature"]))


def _compare(profile: dict[str, Any], values: np.ndarray, min_cell_count: int
             ) -> dict[str, Any]:
    """One feature (or the scores) of the extract against its profile."""
    if "withheld" in profile:
        return {"withheld": f"training: {profile['withheld']}"}
    n = len(values)
    found = np.bincount(categories(values, profile["edges"]),
                        minlength=len(profile["edges"]) + 2)
    in_group = [int(found[g].sum()) for g in profile["groups"]]
    regrouped = groups(in_group, min_cell_count)
    expected = [sum(profile["shares"][j] for j in r) for r in regrouped]
    actual = [sum(in_group[j] for j in r) / n for r in regrouped]
    training = profile["missing"]
    missing = int(found[0])  # shown when neither it nor the rest is small (n is shown)
    now = None if small(missing, min_cell_count) or small(n - missing, min_cell_count) \
        else _share(missing, n)
    change = None if training is None or now is None else round(now - training, ROUND)
    return {"psi": round(psi(expected, actual), ROUND), "bins": len(regrouped),
            "missing": {"training": training, "now": now, "change": change}}


def drift(reference: Mapping[str, Any], x: np.ndarray, columns: Sequence[str],
          scores: np.ndarray, code_persons: Mapping[str, int] | pl.DataFrame,
          min_cell_count: int,
          thresholds: Thresholds = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """A scored extract (feature matrix ``x`` in the model's ``columns``, its ``scores``)
    against the model's ``reference`` profile: per feature its PSI over the reference bins
    (pooled again so no bin of the extract is small) and the change of its missing share;
    the PSI and mean of the scores; the codes of the extract (``code_persons``: persons
    per code among every code of the extract's events) that at least ``min_cell_count``
    persons have and training did not (``new``), and those training had that fewer than
    ``min_cell_count`` persons have now (``vanished``); and the flags, each naming its
    feature and statistic, drift before watch.
    """
    x, s = _checked(x, columns, scores, "scoring run")
    known = sorted(reference.get("features", {}))
    if sorted(str(c) for c in columns) != known:
        missing = sorted(set(known) - {str(c) for c in columns})
        extra = sorted({str(c) for c in columns} - set(known))
        raise DriftError(
            f"the scoring run's columns are not the reference profile's (missing: "
            f"{missing[:5]}, not in the model: {extra[:5]}); fix: build the features with the "
            "package's definitions and select its columns (columns.json)")
    result: dict[str, Any] = {"persons": suppress_value(len(x), min_cell_count),
                              "min_cell_count": min_cell_count, "epsilon": PSI_EPSILON,
                              "thresholds": thresholds.as_dict()}
    if len(x) == 0 or small(len(x), min_cell_count):
        return _record({**result, "flags": [],
                        "withheld": f"fewer than {min_cell_count} persons scored"})
    features = {str(c): _compare(reference["features"][str(c)], x[:, j], min_cell_count)
                for j, c in enumerate(columns)}
    score = _compare(reference["score"], s, min_cell_count)
    score.pop("missing", None)
    score["mean"] = round(float(s.mean()), ROUND)
    score["training_mean"] = reference.get("mean_score")
    if isinstance(code_persons, pl.DataFrame):
        if not {"code", "persons"} <= set(code_persons.columns):
            raise DriftError(f"code_persons: columns {code_persons.columns}; fix: a frame of "
                             "columns `code` and `persons` (persons per code of the extract)")
        code_persons = dict(zip(code_persons["code"].cast(pl.String).to_list(),
                                code_persons["persons"].to_list(), strict=True))
    trained = set(reference.get("codes", []))
    enough = {str(c) for c, n in code_persons.items() if int(n) >= max(min_cell_count, 1)}
    codes = {"new": sorted(enough - trained), "vanished": sorted(trained - enough)}
    flags = []
    compared = [*sorted(features.items()), (SCORE, score)]
    bar = thresholds.evidence / max(sum("psi" in found for _, found in compared), 1)
    for name, found in compared:
        if "psi" in found and psi_p_value(found["psi"], len(x), found["bins"],
                                          reference.get("persons")) \
                < bar and (level := _level(
                    found["psi"], thresholds.psi_watch, thresholds.psi_drift)):
            flags.append(_flag(level, name, "psi", found["psi"],
                               getattr(thresholds, f"psi_{level}")))
        change = found.get("missing", {}).get("change")
        if change is not None and (level := _level(abs(change), thresholds.missing_watch,
                                                   thresholds.missing_drift)):
            flags.append(_flag(level, name, "missing_change", change,
                               getattr(thresholds, f"missing_{level}")))
    flags += [_flag("watch", code, "vanished_code", None, min_cell_count)
              for code in codes["vanished"]]
    if codes["new"]:
        flags.append(_flag("watch", "codes", "new_codes", len(codes["new"]), min_cell_count))
    return _record({**result, "features": features, "score": score, "codes": codes,
                    "flags": sorted_flags(flags)})


# ---- prospective performance ---------------------------------------------------------------

def _finite(value: float) -> float | None:
    return round(float(value), ROUND) if math.isfinite(value) else None


def prospective(labels: np.ndarray, scores: np.ndarray, min_cell_count: int,
                thresholds: Thresholds = DEFAULT_THRESHOLDS,
                training_auroc: float | None = None) -> dict[str, Any]:
    """How the model did on the persons of an earlier scoring whose outcomes are known
    (``labels`` 0/1, ``scores`` their predicted risks): AUROC with its 95% CI (DeLong),
    calibration in the large and slope, the observed and the expected (mean predicted)
    outcome rate; flags when the AUROC's upper bound is below ``training_auroc`` (the
    package's test AUROC) or calibration is off (:class:`Thresholds`).  Withheld, with
    the reason, when fewer than ``min_cell_count`` persons have the outcome or as many do
    not (:func:`cohortflow.privacy.split_shown`): each metric would give those counts.
    """
    from cohortflow.models._metrics import (  # scikit-learn loads with it: only when asked
        auroc_ci,
        calibration_intercept,
        calibration_slope,
    )

    y = np.asarray(labels)
    p = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape or not np.isin(y, (0, 1)).all() \
            or not np.isfinite(p).all():
        raise DriftError(f"prospective metrics: {y.shape} labels and {p.shape} scores; fix: "
                         "one 0/1 label and one finite predicted risk per person")
    y = y.astype(np.int8)
    n, outcomes = len(y), int(y.sum())
    result: dict[str, Any] = {"persons": suppress_value(n, min_cell_count),
                              "min_cell_count": min_cell_count,
                              "thresholds": thresholds.as_dict(),
                              "training_auroc": training_auroc}
    if not split_shown(n, outcomes, min_cell_count):
        return _record({**result, "flags": [], "withheld": (
            f"fewer than {min_cell_count} persons with or without the outcome")})
    auc, low, high = auroc_ci(y, p)
    intercept = _finite(calibration_intercept(y, p))
    slope = _finite(calibration_slope(y, p))
    observed, expected = outcomes / n, float(p.mean())
    flags = []
    if training_auroc is not None and high < training_auroc:
        flags.append(_flag("drift", MODEL, "auroc", _finite(auc), training_auroc))
    p_intercept, p_slope = calibration_p_values(y, p, intercept or 0.0,
                                                1.0 if slope is None else slope)
    if intercept is not None and abs(intercept) > thresholds.calibration_intercept \
            and p_intercept < thresholds.evidence / 2:
        flags.append(_flag("watch", MODEL, "calibration_intercept", intercept,
                           thresholds.calibration_intercept))
    if slope is not None and not thresholds.slope_low <= slope <= thresholds.slope_high \
            and p_slope < thresholds.evidence / 2:
        flags.append(_flag("watch", MODEL, "calibration_slope", slope,
                           [thresholds.slope_low, thresholds.slope_high]))
    return _record({
        **result, "outcomes": outcomes,
        "auroc": _finite(auc), "auroc_ci": [_finite(low), _finite(high)],
        "calibration_intercept": intercept, "calibration_slope": slope,
        "observed_rate": _finite(observed), "expected_rate": _finite(expected),
        "observed_expected": _finite(observed / expected) if expected > 0 else None,
        "flags": sorted_flags(flags)})
