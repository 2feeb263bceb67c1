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
from sklearn.preprocessing import MaxAbsScaler

FAMILIES = ("logistic", "gradient_boosting", "random_forest")
DENSE_ONLY = ("gradient_boosting",)
"""Families that take dense input only (scikit-learn's HistGradientBoosting)."""


class PresenceIndicator(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Sparse in, sparse out: the feature columns as they are (a cell not stored is 0),
    then one column per value column (``columns``: NaN-filled features) holding 1 where
    the cell is stored.  The sparse counterpart of a missing indicator: a value that is
    missing is 0 beside a presence of 0, and nothing is densified or centred.

    The output is a new float64 CSR matrix, written once (:func:`with_presence`), so the
    pipeline's scaler may scale it in place.

    >>> x = sp.csr_matrix(([2.0, 0.0, 5.0], [1, 1, 0], [0, 1, 2, 3]), shape=(3, 2))
    >>> PresenceIndicator(columns=np.array([1])).fit(x).transform(x).toarray().tolist()
    [[0.0, 2.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]]
    """

    def __init__(self, columns: np.ndarray | None = None) -> None:
        self.columns = columns

    def fit(self, x: Any, y: Any = None) -> PresenceIndicator:
        self.n_features_in_ = int(x.shape[1])
        return self

    def transform(self, x: Any, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """``x`` (its ``rows`` only, in that order, if given) with the presence columns."""
        cols = np.asarray(self.columns if self.columns is not None else [], dtype=np.int64)
        return with_presence(sp.csr_matrix(x), cols, rows)


class SparseScaler(MaxAbsScaler):  # type: ignore[misc]
    """``MaxAbsScaler(copy=False)`` that fits and transforms a float64 CSR matrix
    (:func:`with_presence`'s, new) :data:`SCALE_CHUNK` cells at a time, in place: the fit
    is the largest absolute stored value of each column (1 for a column of zeros) without
    scikit-learn's CSC copy of the whole matrix, the transform the very products of
    ``inplace_column_scale(x, 1 / scale_)`` without its one factor per stored cell.

    >>> x = sp.csr_matrix(([2.0, -4.0, 6.0], [0, 0, 1], [0, 1, 2, 3]), shape=(3, 3))
    >>> SparseScaler().fit(x).transform(x).toarray().tolist()
    [[0.5, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """

    def __init__(self) -> None:
        super().__init__(copy=False)

    def _in_place(self, x: Any) -> bool:
        return bool(sp.issparse(x) and x.format == "csr" and x.dtype == np.float64)

    def fit(self, X: Any, y: Any = None) -> SparseScaler:  # noqa: N803
        if not self._in_place(X):
            return cast(SparseScaler, super().fit(X, y))
        largest = np.zeros(X.shape[1], dtype=np.float64)
        for a in range(0, X.nnz, SCALE_CHUNK):
            np.maximum.at(largest, X.indices[a:a + SCALE_CHUNK],
                          np.abs(X.data[a:a + SCALE_CHUNK]))
        self.n_features_in_ = int(X.shape[1])
        self.n_samples_seen_ = int(X.shape[0])
        self.max_abs_ = largest
        # a column of (near) zeros keeps its values, as scikit-learn's own fit decides
        self.scale_ = np.where(largest < 10 * np.finfo(np.float64).eps, 1.0, largest)
        return self

    def transform(self, X: Any, copy: bool | None = None) -> Any:  # noqa: N803
        if not (self._in_place(X) and not copy and X.shape[1] == self.n_features_in_):
            return super().transform(X, copy=copy)
        factor = 1 / self.scale_
        for a in range(0, X.nnz, SCALE_CHUNK):
            X.data[a:a + SCALE_CHUNK] *= factor.take(X.indices[a:a + SCALE_CHUNK], mode="clip")
        return X


PRESENCE_CHUNK = 1 << 12
"""Rows :func:`with_presence` handles at a time (its temporaries are this many rows')."""
SCALE_CHUNK = 1 << 22
"""Cells :class:`SparseScaler` scales at a time."""


def with_presence(x: sp.csr_matrix, columns: np.ndarray, rows: np.ndarray | None = None
                  ) -> sp.csr_matrix:
    """``hstack([x[rows], presence of x[rows][:, columns]])`` as float64, built straight
    into its final arrays, :data:`PRESENCE_CHUNK` rows at a time: no row copy, presence
    block or stacked temporary of the whole matrix.  Each row holds its stored cells in
    their stored order (explicit zeros too), then a 1 in column ``n + j`` for each of its
    cells in column ``columns[j]``, in the same order: the very arrays SciPy's column
    indexing and ``hstack`` give.  ``columns`` must not repeat.

    >>> x = sp.csr_matrix(([2.0, 0.0, 5.0], [1, 1, 0], [0, 1, 2, 3]), shape=(3, 2))
    >>> with_presence(x, np.array([1]), np.array([2, 0])).toarray().tolist()
    [[5.0, 0.0, 0.0], [0.0, 2.0, 1.0]]
    """
    n_rows, n = x.shape
    picked = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    where = np.full(n, -1, dtype=np.int64)
    where[columns] = np.arange(len(columns))

    def chunk(a: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        block = x[a:a + PRESENCE_CHUNK] if rows is None else x[picked[a:a + PRESENCE_CHUNK]]
        present = where[block.indices] >= 0
        seen = np.zeros(len(present) + 1, dtype=np.int64)
        np.cumsum(present, out=seen[1:])  # value cells before each stored cell
        return block, present, seen

    counts = np.zeros(len(picked), dtype=np.int64)  # stored + presence cells per row
    for a in range(0, len(picked), PRESENCE_CHUNK):
        block, _, seen = chunk(a)
        counts[a:a + block.shape[0]] = np.diff(block.indptr) + np.diff(seen[block.indptr])
    total = int(counts.sum())
    index = np.int32 if max(total, n + len(columns)) <= np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(len(picked) + 1, dtype=index)
    np.cumsum(counts, out=indptr[1:])
    del counts
    data = np.empty(total, dtype=np.float64)
    indices = np.empty(total, dtype=index)
    for a in range(0, len(picked), PRESENCE_CHUNK):
        block, present, seen = chunk(a)
        k = block.shape[0]
        length = np.diff(block.indptr)
        row = np.repeat(np.arange(k), length)
        start = indptr[a:a + k].astype(np.int64)  # each row's first cell in the output
        cell = start[row] + (np.arange(len(row)) - block.indptr[row])
        data[cell] = block.data
        indices[cell] = block.indices
        firsts = (start + length)[row[present]]  # each row's first presence cell
        cell = firsts + (seen[:-1][present] - seen[block.indptr[row[present]]])
        data[cell] = 1.0
        indices[cell] = n + where[block.indices[present]]
    return sp.csr_matrix((data, indices, indptr), shape=(len(picked), n + len(columns)))


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
    regression on the features and their presence (:class:`PresenceIndicator`), or a
    :class:`SparseForest`.  Gradient boosting takes dense input only.

    A logistic regression's columns (mean-imputed, with missing indicators, when dense) are
    divided by their largest absolute value on train, never centred or brought to unit
    variance: a binary code stays 0/1 whatever its frequency, so the penalty weighs every
    code alike, as OHDSI's PatientLevelPrediction normalises covariates by their maximum.
    Unit variance would blow a code seen in k of n persons up to about sqrt(n / k), nearly
    free of the penalty, and a warehouse's thousands of rare codes would memorise the
    training persons (test AUROC near chance; ``tests/test_models_wide.py``).

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
                SparseScaler(),
                LogisticRegression(C=float(hp.get("C", 1.0)), l1_ratio=ratio, solver=solver,
                                   max_iter=5000, random_state=seed),
            )
        return make_pipeline(
            SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True),
            MaxAbsScaler(),
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


def fit(estimator: Any, x: np.ndarray | sp.csr_matrix, y: np.ndarray,
        rows: np.ndarray | None = None) -> Any:
    """Fit on ``x`` and ``y`` (their ``rows`` only, a mask or positions, if given), keeping
    solver convergence chatter out of the logs (the metrics tell).  A sparse pipeline
    (:class:`PresenceIndicator` first) builds its input from the rows of ``x`` at once,
    with no copy of those rows beside it: the model is the same as fitted on ``x[rows]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if rows is None:
            return estimator.fit(x, y)
        picked = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else rows
        if isinstance(estimator, Pipeline) and isinstance(estimator[0], PresenceIndicator):
            xt = estimator[0].fit(x).transform(x, picked)
            estimator[1:].fit(xt, y[picked])  # the same steps, fitted in place
            return estimator
        return estimator.fit(x[picked], y[picked])


PREDICT_CHUNK = 1 << 12
"""Rows :func:`predict` scores at a time."""


def predict(estimator: Any, x: np.ndarray | sp.csr_matrix,
            rows: np.ndarray | None = None) -> np.ndarray:
    """The predicted probability of the positive class of ``x`` (its ``rows`` only, a mask
    or positions, if given), :data:`PREDICT_CHUNK` rows at a time: each row's prediction
    depends on that row alone (a sparse row's product sums its cells in stored order), so
    it is the one ``predict_proba`` of all rows gives, and a sparse pipeline's transformed
    copy is one chunk's, never the whole matrix's.  A dense ``x`` is scored in one call."""
    if not sp.issparse(x):  # as it always was: one call (BLAS may sum by block)
        return cast(np.ndarray, estimator.predict_proba(x if rows is None else x[rows])[:, 1])
    picked = (np.arange(x.shape[0]) if rows is None
              else np.flatnonzero(rows) if np.asarray(rows).dtype == bool else rows)
    out = np.empty(len(picked), dtype=np.float64)
    for a in range(0, len(picked), PREDICT_CHUNK):
        part = picked[a:a + PREDICT_CHUNK]
        out[a:a + len(part)] = estimator.predict_proba(x[part])[:, 1]
    return out


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
