"""The estimators of the model families, and their feature importances."""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

FAMILIES = ("logistic", "gradient_boosting", "random_forest")


def describe(family: str, hyperparameters: dict[str, Any]) -> str:
    """A one-line name of a configuration's model.

    >>> describe("logistic", {"penalty": "l1", "C": 0.1})
    'logistic (penalty l1, C 0.1)'
    """
    inner = ", ".join(f"{k} {v}" for k, v in hyperparameters.items())
    return f"{family} ({inner})" if inner else family


def make_estimator(family: str, hp: dict[str, Any], seed: int) -> ClassifierMixin | Pipeline:
    """An unfitted estimator of ``family`` with hyperparameters ``hp``.

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
        return make_pipeline(
            SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=float(hp.get("C", 1.0)), l1_ratio=ratio, solver=solver,
                               max_iter=5000, random_state=seed),
        )
    if family == "gradient_boosting":
        return HistGradientBoostingClassifier(
            learning_rate=float(hp.get("learning_rate", 0.1)),
            max_iter=int(hp.get("max_iter", 100)),
            max_leaf_nodes=int(hp.get("max_leaf_nodes", 15)),
            min_samples_leaf=int(hp.get("min_samples_leaf", 20)),
            l2_regularization=float(hp.get("l2_regularization", 0.0)),
            early_stopping=False, random_state=seed)
    if family == "random_forest":
        return RandomForestClassifier(
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
