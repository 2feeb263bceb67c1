"""Training and evaluation: L2 logistic regression on the feature tensor.

The train/test split is the event store's MEDS split (``train`` and ``tuning`` train,
``held_out`` tests), a pure function of subject_id, so every profile sees the same split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cohortflow import cohorts, events, features
from cohortflow.errors import StoreError
from cohortflow.spec import Study


def make_model(study: Study) -> Pipeline:
    """The estimator of the study's model family."""
    return make_pipeline(
        SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=study.model.C, max_iter=5000, random_state=study.seed),
    )


def evaluate(label: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC and Brier score of predicted probabilities.

    By hand: 3 of the 4 (case, control) pairs are ranked right (AUROC 3/4); precision is 1
    at the first case and 2/3 at the second (AUPRC 5/6); Brier is the mean of
    0.1², 0.4², 0.65², 0.2² = 0.158125.

    >>> m = evaluate(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> {k: round(v, 6) for k, v in m.items()}
    {'auroc': 0.75, 'auprc': 0.833333, 'brier': 0.158125}
    """
    return {
        "auroc": float(roc_auc_score(label, prediction)),
        "auprc": float(average_precision_score(label, prediction)),
        "brier": float(brier_score_loss(label, prediction)),
    }


def train(study: Study, store: Path, cohort_dir: Path, features_path: Path
          ) -> tuple[dict[str, Any], pl.DataFrame]:
    """Fit on the training split, evaluate on held_out; return metrics and predictions."""
    ds = features.open_features(features_path)
    shards = events.list_shards(store)
    cohort = cohorts.read_cohort(cohort_dir, shards)
    if not np.array_equal(cohort["subject_id"].to_numpy(), ds["subject"].values):
        raise StoreError(
            f"{features_path}: feature rows do not match the cohort tables in {cohort_dir}; "
            "fix: rerun the features step (snakemake reruns it when its inputs change)"
        )
    splits = events.read_splits(store)
    frame = cohort.join(splits, on="subject_id", how="left")
    is_test = (frame["split"] == "held_out").to_numpy()
    x = ds["values"].values
    y = frame["label"].to_numpy().astype(np.int8)
    for name, part in (("train", ~is_test), ("test", is_test)):
        if len(np.unique(y[part])) < 2:
            raise StoreError(
                f"{cohort_dir}: the {name} split has only one label value, so no model can be "
                "fit or evaluated; fix: use more persons or a longer time at risk"
            )
    model = make_model(study).fit(x[~is_test], y[~is_test])
    prediction = model.predict_proba(x)[:, 1]
    metrics = {
        "model": study.model.family,
        "C": study.model.C,
        "n_train": int((~is_test).sum()),
        "n_test": int(is_test.sum()),
        "n_features": int(x.shape[1]),
        "outcome_rate_test": float(y[is_test].mean()),
        "test": evaluate(y[is_test], prediction[is_test]),
        "train": evaluate(y[~is_test], prediction[~is_test]),
    }
    predictions = frame.select(
        "subject_id", "index_time", "label",
        pl.Series("split", np.where(is_test, "test", "train")),
        pl.Series("prediction", prediction),
    )
    return metrics, predictions
