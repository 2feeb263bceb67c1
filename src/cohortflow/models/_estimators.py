"""The estimators of the model families, and their feature importances."""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

FAMILIES = ("logistic", "gradient_boosting", "random_forest")
DENSE_ONLY = ("gradient_boosting",)
"""Families that take dense input only (scikit-learn's HistGradientBoosting)."""


class PresenceIndicator(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Sparse in, sparse out: the feature columns as they are (a cell not stored is 0),
    then one column per value column (``columns``: NaN-filled features) holding 1 where
    the cell is stored.  The sparse counterpart of a missing indicator: a value that is
    missing is 0 beside a presence of 0, and nothing is densified or centred.

    >>> x = sp.csr_matrix(([2.0, 0.0, 5.0], [1, 1, 0], [0, 1, 2, 3]), shape=(3, 2))
    >>> PresenceIndicator(columns=np.array([1])).fit(x).transform(x).toarray().tolist()
    [[0.0, 2.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]]
    """

    def __init__(self, columns: np.ndarray | None = None) -> None:
        self.columns = columns

    def fit(self, x: Any, y: Any = None) -> PresenceIndicator:
        self.n_features_in_ = int(x.shape[1])
        return self

    def transform(self, x: Any) -> sp.csr_matrix:
        x = sp.csr_matrix(x)
        cols = np.asarray(self.columns if self.columns is not None else [], dtype=np.int64)
        present = cast(sp.csr_matrix, x[:, cols]).copy()
        present.data = np.ones_like(present.data)
        return cast(sp.csr_matrix, sp.hstack([x, present], format="csr"))


class SparseForest(RandomForestClassifier):  # type: ignore[misc]
    """A random forest fitted on sparse input: a cell not stored, a missing value included,
    is 0 to its trees (a package replaces a NaN by 0 before them)."""


class BoostedTrees(HistGradientBoostingClassifier):  # type: ignore[misc]
    """scikit-learn's HistGradientBoosting, fitted also when a training column holds no
    value at all (every cell missing: a code no training person had in a value window,
    common in wide sparse studies), which its binning refuses with "window shape cannot be
    larger than input array shape".  Such a column is fitted as a constant: no tree can
    split on it, as none could on a column of nothing but missing values, so predictions
    on the original input are the same and the exported trees need no change.

    >>> x = np.column_stack([np.arange(40.0), np.full(40, np.nan)])
    >>> y = np.arange(40) % 2
    >>> BoostedTrees(max_iter=2).fit(x, y).predict_proba(x).shape
    (40, 2)
    """

    def fit(self, X: Any, y: Any, **kwargs: Any) -> BoostedTrees:  # noqa: N803
        x = np.asarray(X, dtype=np.float64)
        empty = np.isnan(x).all(axis=0)
        if empty.any():
            x = x.copy()
            x[:, empty] = 0.0
        super().fit(x, y, **kwargs)
        return self


def describe(family: str, hyperparameters: dict[str, Any]) -> str:
    """A one-line name of a configuration's model.

    >>> describe("logistic", {"penalty": "l1", "C": 0.1})
    'logistic (penalty l1, C 0.1)'
    """
    inner = ", ".join(f"{k} {v}" for k, v in hyperparameters.items())
    return f"{family} ({inner})" if inner else family


def make_estimator(family: str, hp: dict[str, Any], seed: int,
                   sparse_missing: np.ndarray | None = None) -> ClassifierMixin | Pipeline:
    """An unfitted estimator of ``family`` with hyperparameters ``hp``; with
    ``sparse_missing`` (the positions of the NaN-filled features), one that fits a sparse
    matrix whose cells not stored are 0, and missing in those columns: a logistic
    regression on the features and their presence (:class:`PresenceIndicator`) scaled
    without centring, or a :class:`SparseForest`.  Gradient boosting takes dense input
    only.

    >>> make_estimator("logistic", {"penalty": "l1", "C": 0.5}, seed=1)[-1].l1_ratio
    1.0
    >>> make_estimator("boosting", {}, seed=1)
    Traceback (most recent call last):
    ...
    ValueError: unknown model family 'boosting'; known: logistic, gradient_boosting, random_forest
    """
    if family == "logistic":
        penalty = hp.get("penalty", "l2")
        ratio = {"l2": 0.0, "l1": 1.0}.get(penalty, float(hp.get("l1_ratio", 0.5)))
        solver = "lbfgs" if penalty == "l2" else ("liblinear" if penalty == "l1" else "saga")
        if sparse_missing is not None:
            return make_pipeline(
                PresenceIndicator(columns=np.asarray(sparse_missing, dtype=np.int64)),
                StandardScaler(with_mean=False),
                LogisticRegression(C=float(hp.get("C", 1.0)), l1_ratio=ratio, solver=solver,
                                   max_iter=5000, random_state=seed),
            )
        return make_pipeline(
            SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=float(hp.get("C", 1.0)), l1_ratio=ratio, solver=solver,
                               max_iter=5000, random_state=seed),
        )
    if family in DENSE_ONLY and sparse_missing is not None:
        raise ValueError(f"{family} takes dense input only; fix: give it a dense matrix")
    if family == "gradient_boosting":
        return BoostedTrees(
            learning_rate=float(hp.get("learning_rate", 0.1)),
            max_iter=int(hp.get("max_iter", 100)),
            max_leaf_nodes=int(hp.get("max_leaf_nodes", 15)),
            min_samples_leaf=int(hp.get("min_samples_leaf", 20)),
            l2_regularization=float(hp.get("l2_regularization", 0.0)),
            early_stopping=False, random_state=seed)
    if family == "random_forest":
        forest = SparseForest if sparse_missing is not None else RandomForestClassifier
        return forest(
            n_estimators=int(hp.get("n_estimators", 200)),
            max_depth=int(hp.get("max_depth", 8)),
            min_samples_leaf=int(hp.get("min_samples_leaf", 5)),
            max_features=float(hp.get("max_features", 0.3)),
            n_jobs=1, random_state=seed)
    raise ValueError(f"unknown model family '{family}'; known: {', '.join(FAMILIES)}")


def fit(estimator: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """Fit, keeping solver convergence chatter out of the logs (the metrics tell)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


def importance(estimator: Any, x: np.ndarray, y: np.ndarray, seed: int,
               rows: int = 2000) -> np.ndarray:
    """One importance per feature: |standardised coefficient| of a logistic regression,
    impurity decrease of a forest, permutation AUROC loss (on up to ``rows`` training
    persons) of boosted trees.

    >>> rng = np.random.default_rng(0); x = rng.normal(size=(200, 2)); y = (x[:, 0] > 0) * 1
    >>> imp = importance(fit(make_estimator("logistic", {}, 0), x, y), x, y, seed=0)
    >>> bool(imp[0] > 10 * imp[1])
    True
    """
    if isinstance(estimator, Pipeline):
        return cast(np.ndarray, np.abs(estimator[-1].coef_[0][: x.shape[1]]))
    if isinstance(estimator, RandomForestClassifier):
        return np.asarray(estimator.feature_importances_)
    pick = np.random.default_rng(seed).permutation(len(y))[:rows]
    if len(np.unique(y[pick])) < 2:
        return np.zeros(x.shape[1])
    result = permutation_importance(estimator, x[pick], y[pick], scoring="roc_auc",
                                    n_repeats=1, random_state=seed)
    return cast(np.ndarray, np.clip(result.importances_mean, 0, None))
