"""The sparse (CSR) model path fits and scores without copies of the whole matrix, and gives
the very model, to the bit, that the plain path gives: SciPy's column indexing and
``hstack`` for the presence columns, a scaled copy, a fit on ``x[rows]`` in float64, and
``predict_proba`` of every row at once."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler

from cohortflow.models import _estimators


class HstackPresence(_estimators.PresenceIndicator):
    """The presence columns as SciPy builds them (the reference)."""

    def transform(self, x: Any, rows: np.ndarray | None = None) -> sp.csr_matrix:
        x = sp.csr_matrix(x)
        present = x[:, np.asarray(self.columns, dtype=np.int64)].copy()
        present.data = np.ones_like(present.data)
        return sp.hstack([x, present], format="csr")


def _matrix(n: int, d: int, density: float, seed: int) -> sp.csr_matrix:
    """A float32 CSR like the store's: sorted cells, some stored zeros, negative values
    (the max-abs scale is of their absolute value), empty rows."""
    rng = np.random.default_rng(seed)
    x = sp.random(n, d, density=density, format="csr", random_state=seed, dtype=np.float32)
    x.data = np.round((x.data - 0.3) * 50, 1).astype(np.float32)
    x.data[rng.random(len(x.data)) < 0.05] = 0.0
    x.sort_indices()
    return x


@pytest.mark.parametrize("seed", range(8))
def test_presence_columns_are_scipys_hstack_array_for_array(seed: int,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 400)), int(rng.integers(1, 60))
    x = _matrix(n, d, float(rng.uniform(0, 0.3)), seed)
    columns = rng.choice(d, int(rng.integers(0, d + 1)), replace=False)
    if seed % 2:
        columns = np.sort(columns)
    rows = rng.integers(0, n, int(rng.integers(0, 2 * n))) if seed % 3 else None
    monkeypatch.setattr(_estimators, "PRESENCE_CHUNK", int(rng.integers(1, 50)))
    got = _estimators.with_presence(x, columns, rows)
    x64 = x.astype(np.float64)
    want = HstackPresence(columns=columns).fit(x64).transform(x64 if rows is None else x64[rows])
    assert got.dtype == want.dtype == np.float64 and got.shape == want.shape
    for part in ("data", "indices", "indptr"):
        assert np.array_equal(getattr(got, part), getattr(want, part)), part


@pytest.mark.parametrize("penalty", ["l2", "l1", "elasticnet"])
def test_sparse_logistic_is_the_plain_pipelines_model_to_the_bit(
        penalty: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _matrix(3000, 80, 0.08, 1)
    weights = np.random.default_rng(2).normal(size=80)
    y = ((x @ weights) + np.random.default_rng(3).normal(size=3000) > 0.5).astype(np.int8)
    columns = np.arange(0, 80, 3)
    fit_rows = np.random.default_rng(4).random(3000) < 0.8
    monkeypatch.setattr(_estimators, "PRESENCE_CHUNK", 700)
    monkeypatch.setattr(_estimators, "SCALE_CHUNK", 5_000)
    monkeypatch.setattr(_estimators, "PREDICT_CHUNK", 900)
    hp = {"penalty": penalty, "C": 0.5}
    given = x.copy()
    model = _estimators.fit(_estimators.make_estimator("logistic", hp, 5, columns),
                            x, y, fit_rows)
    reference = _estimators.make_estimator("logistic", hp, 5, columns)
    ratio, solver = reference[-1].l1_ratio, reference[-1].solver
    reference = make_pipeline(HstackPresence(columns=columns), MaxAbsScaler(),
                              LogisticRegression(C=0.5, l1_ratio=ratio, solver=solver,
                                                 max_iter=5000, random_state=5))
    x64 = x.astype(np.float64)
    reference = _estimators.fit(reference, x64[fit_rows], y[fit_rows])
    assert np.array_equal(model[1].scale_, reference[1].scale_)
    assert np.array_equal(model[-1].coef_, reference[-1].coef_)
    assert np.array_equal(model[-1].intercept_, reference[-1].intercept_)
    assert np.array_equal(_estimators.predict(model, x),
                          reference.predict_proba(x64)[:, 1])
    held = ~fit_rows
    assert np.array_equal(_estimators.predict(model, x, held),
                          reference.predict_proba(x64[held])[:, 1])
    for part in ("data", "indices", "indptr"):  # scaled in place, yet not the input
        assert np.array_equal(getattr(x, part), getattr(given, part))


def _peak(call: Any) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_sparse_fit_and_scoring_hold_one_transformed_copy_of_the_fitted_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The train matrix with its presence columns, scaled in place, is the only large
    thing a fit allocates (the reference pipeline held the rows' float64 copy, the
    presence block, SciPy's concatenation and the scaled copy too: 4.0 times it here),
    and scoring holds one chunk's (the reference: 4.2 times it, scoring every row)."""
    x = _matrix(40_000, 2_000, 0.015, 7)
    y = (np.random.default_rng(8).random(40_000) < 0.3).astype(np.int8)
    columns = np.arange(0, 2_000, 2)
    fit_rows = np.random.default_rng(9).random(40_000) < 0.8
    monkeypatch.setattr(_estimators, "PRESENCE_CHUNK", 1_024)
    monkeypatch.setattr(_estimators, "SCALE_CHUNK", 1 << 15)
    monkeypatch.setattr(_estimators, "PREDICT_CHUNK", 1_024)
    hp = {"penalty": "l2", "C": 1.0}
    transformed = _estimators.with_presence(x, columns, np.flatnonzero(fit_rows))
    size = transformed.data.nbytes + transformed.indices.nbytes + transformed.indptr.nbytes
    del transformed
    model = _estimators.make_estimator("logistic", hp, 1, columns)
    model[-1].max_iter = 20  # the solver's own memory does not grow with its iterations
    fitted = _peak(lambda: _estimators.fit(model, x, y, fit_rows))
    assert fitted < 1.3 * size, fitted / size
    scored = _peak(lambda: _estimators.predict(model, x))
    assert scored < 0.3 * size, scored / size
