"""The report's page and figures on small hand-built inputs: one ROC implementation draws
the page's curve and figures/roc.png, a small group hides it in both, and the page is
written through the disclosure gate."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from cohortflow import models, report
from cohortflow.disclosure import Disclosure, audit
from cohortflow.errors import CohortflowError
from cohortflow.layout import Layout
from cohortflow.study import Study

MIN = 11
BEST = "logistic (abc)"


def _study(min_cell_count: int = MIN) -> Study:
    return Study.model_validate({
        "name": "small", "source": {"synth": {"persons": 100}},
        "min_cell_count": min_cell_count,
        "concept_sets": {"a": {"include": [{"concept_id": 1}]}},
        "cohort": {"entry": {"concept_set": "a"}, "outcome": {"concept_set": "a"}},
    })


def _predictions(positives: int, negatives: int) -> pl.DataFrame:
    """Test-split predictions of ``positives`` persons with the outcome and ``negatives``
    without (and a training split that must not count)."""
    rng = np.random.default_rng(3)
    label = [1] * positives + [0] * negatives
    return pl.DataFrame({
        "label": label + [1, 0] * 20,
        "prediction": np.concatenate([rng.random(len(label)) * 0.5 + 0.3 * np.array(label),
                                      rng.random(40)]),
        "split": ["test"] * len(label) + ["train"] * 40,
    })


def _metrics(predictions: pl.DataFrame) -> dict[str, Any]:
    test = predictions.filter(pl.col("split") == "test")
    label, prediction = test["label"].to_numpy(), test["prediction"].to_numpy()
    return {"config_id": "abc", "outcome": "o", "cohort": "cohort", "feature_set": "all",
            "family": "logistic", "model": "logistic", "hyperparameters": {"C": 1.0},
            "replicate": 0, "seed": 1, "n_features": 2, "n_train": 40, "n_test": len(test),
            "cv": {"auroc": 0.7, "auprc": 0.3, "brier": 0.2, "folds": 3},
            "test": dict.fromkeys(models.TEST_COLUMNS, 0.5),
            "calibration": {"test": models.calibration_bins(label, prediction)},
            "importance": [{"feature": "CONDITION//1 365d count", "importance": 0.5}]}


def _page(predictions: pl.DataFrame, gate: Disclosure) -> tuple[str, dict[str, bytes]]:
    """The page of a one-model sweep whose chosen model is its only configuration."""
    metrics = _metrics(predictions)
    n = predictions.height
    results = report.SweepResults(
        report.Tensor(np.ones((n, 1)), ["CONDITION//1"], ["365d"], ["count"]),
        predictions["label"].to_numpy(), models.leaderboard([metrics], "auroc"),
        {BEST: (metrics, predictions)}, {"CONDITION//1": "Asthma"})
    sections, figures = report.render_sections(results, gate, "auroc")
    attrition = [{"step": "entry", "subjects": n}]
    page = report.render(_study(), gate, attrition, metrics, predictions, sections=sections)
    return page, figures


def _images(page: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(data) for alt, data in
            re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', page)}


def _drawn(curves: dict[str, pl.DataFrame], gate: Disclosure) -> list[np.ndarray]:
    """The lines a ROC plot draws, the chance diagonal last."""
    fig = report.roc_plot(curves, gate)
    lines = [line.get_xydata() for line in fig.axes[0].lines if len(line.get_xdata())]
    plt.close(fig)
    return lines


def test_the_page_and_roc_png_draw_the_same_curve_with_one_implementation(
        tmp_path: Path) -> None:
    gate = Disclosure(Layout.of(tmp_path, "small"), MIN)
    predictions = _predictions(30, 50)
    page, figures = _page(predictions, gate)
    images = _images(page)
    # both images are the one ROC figure of the same predictions, and so is roc.png
    assert images["ROC curve of the test split"] == report.roc_figure(
        {report.CHOSEN: predictions}, gate)
    assert images["ROC curves of the best models (test split)"] == figures["roc"] == (
        report.roc_figure({BEST: predictions}, gate))
    fpr, tpr = report.roc_points(predictions, gate) or pytest.fail("curve hidden")
    for drawn in (_drawn({report.CHOSEN: predictions}, gate), _drawn({BEST: predictions}, gate)):
        assert len(drawn) == 2  # the curve and chance
        np.testing.assert_array_equal(drawn[0], np.column_stack([fpr, tpr]))
    assert "Not drawn" not in page


@pytest.mark.parametrize("positives, negatives", [(5, 50), (50, 4)])
def test_a_small_group_hides_the_curve_on_the_page_and_in_roc_png(
        tmp_path: Path, positives: int, negatives: int) -> None:
    gate = Disclosure(Layout.of(tmp_path, "small"), MIN)
    predictions = _predictions(positives, negatives)
    page, figures = _page(predictions, gate)
    assert report.roc_points(predictions, gate) is None
    assert "ROC curve of the test split" not in _images(page)
    assert report.NOT_DRAWN.format(min_cell_count=MIN) in page
    assert figures["roc"] == report.roc_figure({BEST: predictions}, gate)
    drawn = _drawn({BEST: predictions}, gate)
    np.testing.assert_array_equal(drawn, [[[0, 0], [1, 1]]])  # chance alone
    # the same curve is drawn once the threshold allows it
    assert report.roc_points(predictions, Disclosure(gate.layout, 4)) is not None


def _inputs(folder: Path, predictions: pl.DataFrame) -> dict[str, Path]:
    folder.mkdir(parents=True)
    files = {"attrition": folder / "attrition.json", "metrics": folder / "metrics.json",
             "predictions": folder / "predictions.parquet"}
    files["attrition"].write_text(json.dumps([{"step": "entry", "subjects": predictions.height}]))
    files["metrics"].write_text(json.dumps(_metrics(predictions)))
    predictions.write_parquet(files["predictions"])
    return files


def test_write_puts_the_page_through_the_gate_and_refuses_another_threshold(
        tmp_path: Path) -> None:
    layout = Layout.of(tmp_path / "results", "small")
    predictions = _predictions(30, 50)
    files = _inputs(layout.root / "model", predictions)
    report.write(_study(), Disclosure(layout, MIN), **files, out=layout.report)
    assert "<h1>Study report: small</h1>" in layout.report.read_text()
    assert audit(layout) == []  # the page is in the gate's ledger, as written
    with pytest.raises(CohortflowError, match="min_cell_count 5, the study 'small' 11"):
        report.write(_study(), Disclosure(layout, 5), **files, out=layout.report)
    with pytest.raises(CohortflowError, match="not a shared output"):
        report.write(_study(), Disclosure(layout, MIN), **files,
                     out=layout.model / "report.html")
