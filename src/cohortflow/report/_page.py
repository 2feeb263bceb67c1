"""The HTML study report: one self-contained page (inline CSS and PNG), no network needed.
Every count on it, and every figure, is shown through the gate
(:class:`~cohortflow.disclosure.Disclosure`)."""

from __future__ import annotations

import html
from typing import Any

import polars as pl

from cohortflow import models
from cohortflow.disclosure import Disclosure
from cohortflow.privacy import COMPLEMENTARY
from cohortflow.report._figures import (
    NOT_DRAWN,
    calibration_figure,
    img,
    roc_figure,
    roc_shown,
)
from cohortflow.report._load import SweepResults
from cohortflow.report._tables import (
    attrition_html,
    board_metric,
    features_html,
    leaderboard_html,
    quality_html,
    table_one,
    table_one_html,
)
from cohortflow.study import Study

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; } td, th { padding: .3rem .8rem; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: .9rem; }
"""

CHOSEN = "model (test split)"
"""The chosen model's name in the page's own ROC curve."""


def render(study: Study, disclosure: Disclosure, attrition: list[dict[str, Any]],
           metrics: dict[str, Any], predictions: pl.DataFrame,
           oracle: dict[str, Any] | None = None, sections: str = "",
           quality: dict[str, Any] | None = None) -> str:
    """The report's HTML.  Counts below the gate's ``min_cell_count`` are shown suppressed.
    ``sections``: more HTML after the ROC curve (:func:`render_sections`); ``quality``: the
    ingest's shareable data-quality record (:func:`quality_html`)."""
    least = disclosure.min_cell_count
    esc = html.escape
    test = metrics["test"]
    metric_rows = "".join(
        f"<tr><td>{name}</td><td class=n>{value:.3f}</td></tr>"
        for name, value in (("AUROC", test["auroc"]), ("AUPRC", test["auprc"]),
                            ("Brier score", test["brier"]))
    )
    if oracle is not None and oracle.get("oracle_auroc") is not None:
        metric_rows += (f"<tr><td>Oracle AUROC (true planted risk)</td>"
                        f"<td class=n>{oracle['oracle_auroc']:.3f}</td></tr>")
    split_sizes = disclosure.categories({"train": metrics["n_train"], "test": metrics["n_test"]})
    n_train, n_test = split_sizes["train"], split_sizes["test"]
    outcomes = int(predictions.filter(pl.col("split") == "test")["label"].sum())
    model_name = metrics["model"] + (f" (C = {metrics['C']})" if "C" in metrics else "")
    roc_html = (img("ROC curve of the test split", roc_figure({CHOSEN: predictions}, disclosure))
                if roc_shown(predictions, disclosure)
                else NOT_DRAWN.format(min_cell_count=least))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>cohortflow study report: {esc(study.name)}</title><style>{_CSS}</style></head>
<body>
<h1>Study report: {esc(study.name)}</h1>
<p class=note>Study digest {study.digest()}. Counts below {least} are shown as &lt;{least};
{COMPLEMENTARY} marks a count hidden so that a small one cannot be worked out by subtraction.</p>
<h2>Cohort attrition</h2>
{attrition_html(attrition, disclosure)}
{quality_html(quality)}
<h2>Model</h2>
<p>{esc(model_name)}, {metrics['n_features']} features;
trained on {esc(n_train)} persons, tested on {esc(n_test)} held-out persons
with {esc(disclosure.count(outcomes))} outcomes.</p>
<table><tr><th>Metric (test split)</th><th>Value</th></tr>{metric_rows}</table>
<h2>ROC curve</h2>
{roc_html}
{sections}
</body></html>
"""


def render_sections(results: SweepResults, disclosure: Disclosure, select_by: str
                    ) -> tuple[str, dict[str, bytes]]:
    """The sweep sections' HTML (Table 1, leaderboard, the best models' ROC and calibration
    plots, top features) and their figures (``roc``, ``calibration`` PNG bytes).

    The best models are the best configuration of each family, the overall best by CV
    first, chosen by the CV metric ``select_by``.  Calibration bins are stored raw by the
    sweep and pooled here below ``min_cell_count`` persons with or without the outcome.
    """
    least = disclosure.min_cell_count
    best, board = results.best, results.board
    figures = {
        "roc": roc_figure({n: p for n, (_, p) in best.items()}, disclosure),
        "calibration": calibration_figure(
            {n: models.pool_calibration(m["calibration"]["test"], least)
             for n, (m, _) in best.items()}),
    }
    tensor = results.tensor
    table1 = table_one(tensor.values, tensor.code, tensor.window, tensor.aggregation,
                       results.label, results.descriptions)
    top_metrics, _ = next(iter(best.values()))
    page = f"""
<h2>Characteristics (Table 1)</h2>
<p class=note>Target cohort and the persons with and without the outcome; counts below {least}
are suppressed, with their complement where subtraction would recover them.</p>
{table_one_html(table1, disclosure)}
<h2>Leaderboard</h2>
<p>{board.height} configurations; each picked by its mean {board_metric(select_by)} over
{top_metrics['cv']['folds']} cross-validation folds inside the training persons (★ = best
per outcome).  Test metrics are shown, never used to choose.</p>
{leaderboard_html(board)}
<h2>Best models: ROC and calibration</h2>
<p class=note>The best configuration of each model family, on the test split.</p>
{img("ROC curves of the best models (test split)", figures["roc"])}
{img("Calibration plot of the best models (test split)", figures["calibration"])}
<h2>Top features</h2>
<p>{html.escape(top_metrics['model'])}: the {len(top_metrics['importance'])} most important
features.</p>
{features_html(top_metrics['importance'], results.descriptions)}
"""
    return page, figures
