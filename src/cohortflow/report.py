"""The HTML study report: one self-contained file (inline CSS and PNG), no network needed."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl
from sklearn.metrics import roc_curve

from cohortflow.privacy import (
    COMPLEMENTARY,
    curve_shown,
    suppress,
    suppress_categories,
    suppress_steps,
)
from cohortflow.study import Study

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; } td, th { padding: .3rem .8rem; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: .9rem; }
"""

NOT_DRAWN = ("<p class=note>Not drawn: the test split has fewer than {k} persons with or "
             "without the outcome, and a curve would show how many.</p>")


def roc_png(predictions: pl.DataFrame, min_cell_count: int) -> str | None:
    """A ROC curve of the test split as a base64 PNG; None when drawing it would show a
    small count (:func:`cohortflow.privacy.curve_shown`)."""
    test = predictions.filter(pl.col("split") == "test")
    if not curve_shown(test["label"].cast(pl.Int64).to_list(), min_cell_count):
        return None
    fpr, tpr, _ = roc_curve(test["label"].to_numpy(), test["prediction"].to_numpy())
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot(fpr, tpr, lw=2, label="model (test split)")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def quality_html(record: dict[str, Any] | None) -> str:
    """The data-quality section: the ingest's warnings, from the shareable record of
    :func:`cohortflow.quality.shared` (its counts are already suppressed); empty without one.

    >>> page = quality_html({"recorded": True, "extract_date": "2019-07-03", "warnings": [
    ...     {"table": "death", "field": "", "check": "empty_table", "count": 0,
    ...      "message": "death: empty table"}]})
    >>> "<td>death: empty table</td>" in page and "2019-07-03" in page
    True
    >>> "No warnings" in quality_html({"recorded": True, "extract_date": None, "warnings": []})
    True
    """
    if record is None:
        return ""
    esc = html.escape
    head = "<h2>Data quality</h2>\n"
    if not record.get("recorded"):
        return head + ("<p class=note>Not recorded: the event store was not written by "
                       "cohortflow's OMOP ingest.</p>")
    when = (f" Dates are judged against the extract date {esc(str(record['extract_date']))}, "
            "the latest observation_period_end_date." if record.get("extract_date") else "")
    note = ("<p class=note>Warnings of the ingest; rows of persons missing from the person "
            f"table are dropped, every other row is kept.{when}</p>")
    if not record["warnings"]:
        return head + note + "<p>No warnings from the ingest.</p>"
    rows = "".join(
        f"<tr><td>{esc(w['table'])}</td><td>{esc(w['field'])}</td><td>{esc(w['check'])}</td>"
        f"<td class=n>{esc(str(w['count'])) if w['count'] != 0 else '—'}</td>"
        f"<td>{esc(w['message'])}</td></tr>" for w in record["warnings"])
    return (head + note + "<table><tr><th>Table</th><th>Field</th><th>Check</th>"
            f"<th>Count</th><th>Warning</th></tr>{rows}</table>")


def render(study: Study, attrition: list[dict[str, Any]], metrics: dict[str, Any],
           predictions: pl.DataFrame, oracle: dict[str, Any] | None = None,
           sections: str = "", quality: dict[str, Any] | None = None) -> str:
    """The report's HTML.  Counts below the study's min_cell_count are shown suppressed.
    ``sections``: more HTML after the ROC curve (the sweep's, from report_sections);
    ``quality``: the ingest's shareable data-quality record (:func:`quality_html`)."""
    k = study.min_cell_count
    esc = html.escape
    shown = suppress_steps([step["subjects"] for step in attrition], k)
    attrition_rows = "".join(
        f"<tr><td>{esc(step['step'])}</td><td class=n>{esc(count)}</td></tr>"
        for step, count in zip(attrition, shown, strict=True)
    )
    test = metrics["test"]
    metric_rows = "".join(
        f"<tr><td>{name}</td><td class=n>{value:.3f}</td></tr>"
        for name, value in (("AUROC", test["auroc"]), ("AUPRC", test["auprc"]),
                            ("Brier score", test["brier"]))
    )
    if oracle is not None and oracle.get("oracle_auroc") is not None:
        metric_rows += (f"<tr><td>Oracle AUROC (true planted risk)</td>"
                        f"<td class=n>{oracle['oracle_auroc']:.3f}</td></tr>")
    split_sizes = suppress_categories({"train": metrics["n_train"], "test": metrics["n_test"]}, k)
    n_train, n_test = split_sizes["train"], split_sizes["test"]
    outcomes = int(predictions.filter(pl.col("split") == "test")["label"].sum())
    model_name = metrics["model"] + (f" (C = {metrics['C']})" if "C" in metrics else "")
    roc = roc_png(predictions, k)
    roc_html = (f'<img alt="ROC curve of the test split" src="data:image/png;base64,{roc}">'
                if roc is not None else NOT_DRAWN.format(k=k))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>cohortflow study report: {esc(study.name)}</title><style>{_CSS}</style></head>
<body>
<h1>Study report: {esc(study.name)}</h1>
<p class=note>Study digest {study.digest()}. Counts below {k} are shown as &lt;{k};
{COMPLEMENTARY} marks a count hidden so that a small one cannot be worked out by subtraction.</p>
<h2>Cohort attrition</h2>
<table><tr><th>Step</th><th>Persons</th></tr>{attrition_rows}</table>
{quality_html(quality)}
<h2>Model</h2>
<p>{esc(model_name)}, {metrics['n_features']} features;
trained on {esc(n_train)} persons, tested on {esc(n_test)} held-out persons
with {esc(suppress(outcomes, k))} outcomes.</p>
<table><tr><th>Metric (test split)</th><th>Value</th></tr>{metric_rows}</table>
<h2>ROC curve</h2>
{roc_html}
{sections}
</body></html>
"""


