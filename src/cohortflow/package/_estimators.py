"""A fitted estimator as plain arrays, and its ``predict_proba`` recomputed from them.

No pickle: each supported family is written as named NumPy arrays (``.npy``, read with
``allow_pickle=False``) and predicted here by the same arithmetic, in the same order, as
scikit-learn's own ``predict_proba``, so the two agree to rounding (tested to 1e-12):

- ``logistic``: the mean imputer's statistics and missing-indicator columns, the scaler's
  mean (0: the max-abs scaler does not centre) and scale, the coefficients and the
  intercept; a model fitted on a sparse matrix
  (:class:`cohortflow.models._estimators.PresenceIndicator`: a missing value is 0 beside a
  presence of 0) packs the same arrays, rewritten exactly: its statistics 0, its presence
  columns as missing indicators with the opposite coefficient (their sum moved into the
  intercept);
- ``gradient_boosting`` (HistGradientBoosting, numeric splits only): every tree's nodes,
  concatenated, with each tree's first node in ``tree_start``, and the baseline;
- ``random_forest``: every tree's nodes, concatenated likewise, and each leaf's fraction
  of positives; a forest fitted on a sparse matrix also ``missing_fill``, the 0 its trees
  saw for a missing value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline

from cohortflow.errors import PackageError
from cohortflow.models._estimators import PresenceIndicator, SparseForest

SUPPORTED = ("logistic", "gradient_boosting", "random_forest")
Arrays = dict[str, np.ndarray]


def export(family: str, estimator: Any) -> Arrays:
    """The arrays that define a fitted estimator of ``family``.

    >>> from sklearn.linear_model import LogisticRegression
    >>> export("svm", LogisticRegression())
    Traceback (most recent call last):
    ...
    cohortflow.errors.PackageError: the model family 'svm' cannot be packaged; packaged \
families: logistic, gradient_boosting, random_forest; fix: choose a configuration of one \
of them
    """
    if family == "logistic" and isinstance(estimator, Pipeline) and isinstance(
            estimator[0], PresenceIndicator):
        return _sparse_logistic(estimator)
    if family == "logistic" and isinstance(estimator, Pipeline):
        imputer, scaler, logistic = estimator[0], estimator[1], estimator[-1]
        indicator = (imputer.indicator_.features_ if imputer.indicator_ is not None
                     else np.zeros(0, dtype=np.int64))
        return {"statistics": np.asarray(imputer.statistics_, dtype=np.float64),
                "indicator_features": np.asarray(indicator, dtype=np.int64),
                "scaler_mean": np.zeros(len(scaler.scale_), dtype=np.float64),
                "scaler_scale": np.asarray(scaler.scale_, dtype=np.float64),
                "coef": np.asarray(logistic.coef_, dtype=np.float64),
                "intercept": np.asarray(logistic.intercept_, dtype=np.float64)}
    if family == "gradient_boosting" and isinstance(estimator, HistGradientBoostingClassifier):
        return _boosted_trees(estimator)
    if family == "random_forest" and isinstance(estimator, SparseForest):
        return {**_forest(estimator),
                "missing_fill": np.zeros(estimator.n_features_in_, dtype=np.float64)}
    if family == "random_forest" and isinstance(estimator, RandomForestClassifier):
        return _forest(estimator)
    raise PackageError(
        f"the model family '{family}' cannot be packaged; packaged families: "
        f"{', '.join(SUPPORTED)}; fix: choose a configuration of one of them")


def _sparse_logistic(model: Pipeline) -> Arrays:
    """A logistic regression fitted on a sparse matrix, as the dense logistic's arrays:
    ``w·x/s + v·present/t + b`` is ``w·x/s - v·missing/t + (b + sum(v/t))``."""
    presence, scaler, logistic = model[0], model[1], model[-1]
    n = int(presence.n_features_in_)
    columns = np.asarray(presence.columns, dtype=np.int64)
    scale = np.asarray(scaler.scale_, dtype=np.float64)
    coef = np.asarray(logistic.coef_, dtype=np.float64).copy()
    shift = float(np.sum(coef[0, n:] / scale[n:]))
    coef[0, n:] = -coef[0, n:]
    return {"statistics": np.zeros(n, dtype=np.float64), "indicator_features": columns,
            "scaler_mean": np.zeros(len(scale), dtype=np.float64), "scaler_scale": scale,
            "coef": coef,
            "intercept": np.asarray(logistic.intercept_, dtype=np.float64) + shift}


def _boosted_trees(model: HistGradientBoostingClassifier) -> Arrays:
    if model.n_trees_per_iteration_ != 1 or model._preprocessor is not None:
        raise PackageError(
            "a gradient boosting model with more than two classes or categorical features "
            "cannot be packaged; fix: choose a binary model of numeric features")
    nodes = [predictors[0].nodes for predictors in model._predictors]
    if any(n["is_categorical"].any() for n in nodes):
        raise PackageError("a gradient boosting model with categorical splits cannot be "
                              "packaged; fix: choose a model of numeric features")
    joined = np.concatenate(nodes)
    return {"tree_start": _starts([len(n) for n in nodes]),
            "left": joined["left"].astype(np.int64), "right": joined["right"].astype(np.int64),
            "feature": joined["feature_idx"].astype(np.int64),
            "threshold": joined["num_threshold"].astype(np.float64),
            "missing_go_to_left": joined["missing_go_to_left"].astype(bool),
            "is_leaf": joined["is_leaf"].astype(bool),
            "value": joined["value"].astype(np.float64),
            "baseline": np.asarray(model._baseline_prediction, dtype=np.float64).ravel()}


def _forest(model: RandomForestClassifier) -> Arrays:
    if list(model.classes_) != [0, 1]:
        raise PackageError("a random forest of other labels than 0 and 1 cannot be "
                              "packaged; fix: choose a binary model")
    trees = [e.tree_ for e in model.estimators_]
    left = np.concatenate([t.children_left for t in trees]).astype(np.int64)
    return {"tree_start": _starts([t.node_count for t in trees]),
            "left": left,
            "right": np.concatenate([t.children_right for t in trees]).astype(np.int64),
            "feature": np.concatenate([t.feature for t in trees]).astype(np.int64),
            "threshold": np.concatenate([t.threshold for t in trees]).astype(np.float64),
            "missing_go_to_left": np.concatenate(
                [t.missing_go_to_left for t in trees]).astype(bool),
            "is_leaf": left == -1,
            # the leaf's class fractions (scikit-learn >= 1.4 stores fractions)
            "value": np.concatenate([t.value[:, 0, 1] for t in trees]).astype(np.float64)}


def _starts(sizes: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _leaf_values(arrays: Arrays, start: int, x: np.ndarray) -> np.ndarray:
    """Each row's leaf value in the tree whose root is node ``start``: numeric splits,
    ``x <= threshold`` goes left, a missing value as the node says."""
    node = np.full(len(x), start, dtype=np.int64)
    rows = np.arange(len(x))
    active = ~arrays["is_leaf"][node]
    while active.any():
        at = node[active]
        value = x[rows[active], arrays["feature"][at]]
        left = np.where(np.isnan(value), arrays["missing_go_to_left"][at],
                        value <= arrays["threshold"][at])
        child = np.where(left, arrays["left"][at], arrays["right"][at])
        # scikit-learn's boosted trees number children within the tree, a forest's too
        node[active] = start + child
        active = ~arrays["is_leaf"][node]
    return np.asarray(arrays["value"][node])


def predict_proba(family: str, arrays: Arrays, x: np.ndarray) -> np.ndarray:
    """The probability of the positive label for each row of ``x`` (columns in the
    packaged order), from the arrays :func:`export` wrote.

    >>> from sklearn.linear_model import LogisticRegression
    >>> arrays = {"statistics": np.array([0.0]), "indicator_features": np.array([0]),
    ...           "scaler_mean": np.zeros(2), "scaler_scale": np.ones(2),
    ...           "coef": np.array([[1.0, 0.0]]), "intercept": np.array([0.0])}
    >>> predict_proba("logistic", arrays, np.array([[0.0], [np.nan]])).tolist()
    [0.5, 0.5]
    """
    x = np.asarray(x, dtype=np.float64)
    if family == "logistic":
        filled = np.where(np.isnan(x), arrays["statistics"][None, :], x)
        indicator = np.isnan(x[:, arrays["indicator_features"]]).astype(np.float64)
        scaled = np.hstack([filled, indicator])
        scaled -= arrays["scaler_mean"]
        scaled /= arrays["scaler_scale"]
        decision = (scaled @ arrays["coef"].T + arrays["intercept"]).ravel()
        return np.asarray(expit(decision))
    if family == "gradient_boosting":
        raw = np.zeros(len(x), dtype=np.float64) + arrays["baseline"][0]
        for start in arrays["tree_start"]:
            raw += _leaf_values(arrays, int(start), x)
        return np.asarray(expit(raw))
    if family == "random_forest":
        if "missing_fill" in arrays:  # fitted on a sparse matrix: a missing value was 0
            x = np.where(np.isnan(x), arrays["missing_fill"][None, :], x)
        x32 = x.astype(np.float32)  # a forest's trees split float32 values
        total = np.zeros(len(x), dtype=np.float64)
        for start in arrays["tree_start"]:
            total += _leaf_values(arrays, int(start), x32)
        return total / len(arrays["tree_start"])
    raise PackageError(f"the model family '{family}' is not one of {', '.join(SUPPORTED)}; "
                          "fix: package the model again with this cohortflow version")
