"""The HTML study report: one page, the overview grid of every analysis first, then one
section per analysis (attrition, chosen model, Table 1, leaderboard, the best models' ROC
and calibration plots, top features).  Every count on it, and every figure, is shown through
the gate (:class:`~cohortflow.disclosure.Disclosure`).

A study of up to :data:`INLINE_ANALYSES` analyses gets a self-contained page (inline CSS and
PNG, sections open).  Past that the sections are collapsed (``<details>``; a link from the
grid opens its section in current browsers) and the plots are the ``figures/<analysis>/``
files beside the page, loaded lazily: a section is ~10 kB of text, its two plots ~70 kB
of PNG, so a thousand analyses make a page of ~10 MB, not ~100 MB."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from cohortflow import models
from cohortflow.disclosure import Disclosure
from cohortflow.html_style import BASE_CSS, document
from cohortflow.privacy import COMPLEMENTARY
from cohortflow.report._figures import (
    CALIBRATION_NOT_DRAWN,
    NOT_DRAWN,
    NOT_SHOWN_METRICS,
    Plot,
    calibration_shown,
    calibration_spec,
    img,
    metrics_shown,
    roc_shown,
    roc_spec,
    to_png,
)
from cohortflow.report._load import AnalysisResults, SweepResults
from cohortflow.report._matching import matching_html
from cohortflow.report._overview import anchor
from cohortflow.report._tables import (
    EPISODES,
    attrition_html,
    board_metric,
    features_html,
    leaderboard_html,
    table_one,
    table_one_html,
)
from cohortflow.study import Analysis, Study

INLINE_ANALYSES = 12
"""The most analyses whose plots are inlined in the page (each adds ~150 kB)."""

_CSS = BASE_CSS + """\
.grid { overflow-x: auto; } table.overview th:first-child { position: sticky; left: 0;
  background: #fff; } td.cell { text-align: center; white-space: nowrap; }
td.cell a { color: inherit; text-decoration: none; display: block; }
td.cell a:hover { background: #eef; } .ci, .rate { color: #555; font-size: .85rem; }
details { margin-top: 1rem; border-top: 1px solid #ccc; } summary { cursor: pointer; }
.analysis { scroll-margin-top: 4rem; }
"""

CHOSEN = "model (test split)"
"""The chosen model's name in the page's own ROC curve."""


@dataclass(frozen=True)
class Figures:
    """How an analysis's section shows its plots: inline PNG (``links`` empty), or the
    figure files at the page-relative ``links`` (``roc``, ``calibration``)."""

    links: dict[str, str]

    @property
    def inline(self) -> bool:
        return not self.links

    def image(self, name: str, alt: str, data: bytes) -> str:
        if self.inline:
            return img(alt, data)
        return (f'<img alt="{html.escape(alt)}" loading=lazy width=500 '
                f'src="{html.escape(self.links[name])}">')


INLINE = Figures({})


def model_html(disclosure: Disclosure, attrition: list[dict[str, Any]],
               metrics: dict[str, Any], predictions: pl.DataFrame,
               oracle: dict[str, Any] | None = None, level: int = 2,
               figures: Figures = INLINE, chosen: bytes | None = None) -> str:
    """An analysis's attrition and chosen model (test metrics, the oracle AUROC of a
    synthetic study, its ROC curve); counts below the gate's ``min_cell_count`` suppressed.
    ``level``: the heading level of its parts; ``chosen``: the drawn ROC curve (PNG) of the
    chosen model, drawn here when None."""
    least = disclosure.min_cell_count
    esc = html.escape
    h = f"h{level}"
    test = metrics["test"]
    shown = metrics_shown(predictions, disclosure)
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
    if not figures.inline:  # the chosen model is the first curve of the best models' plot
        roc_html = ("<p class=note>The chosen model is the first curve of the best models' "
                    "ROC plot below.</p>")
    elif roc_shown(predictions, disclosure):
        roc_html = img("ROC curve of the test split",
                       chosen if chosen is not None
                       else to_png(roc_spec({CHOSEN: predictions}, disclosure)))
    else:
        roc_html = NOT_DRAWN.format(min_cell_count=least)
    return f"""<{h}>Cohort attrition</{h}>
{attrition_html(attrition, disclosure)}
<{h}>Model</{h}>
<p>{esc(model_name)}, {metrics['n_features']} features;
trained on {esc(n_train)} persons, tested on {esc(n_test)} held-out persons
with {esc(disclosure.count(outcomes))} outcomes.</p>
{f"<table><tr><th>Metric (test split)</th><th>Value</th></tr>{metric_rows}</table>"
   if shown else NOT_SHOWN_METRICS.format(min_cell_count=least)}
<{h}>ROC curve</{h}>
{roc_html}
"""


def sweep_plots(results: SweepResults, disclosure: Disclosure) -> dict[str, Plot]:
    """The best models' ``roc`` and ``calibration`` plots of an analysis's sweep."""
    least = disclosure.min_cell_count
    best = results.best
    calibration: dict[str, list[dict[str, float]]] = {}
    for name, (metrics, _) in best.items():
        bins = metrics["calibration"]["test"]
        if calibration_shown(bins, disclosure):
            calibration[name] = models.pool_calibration(bins, least)
        else:  # a legend note only
            calibration[f"{name}: not drawn (fewer than {least} persons with or without "
                        "the outcome)"] = []
    return {"roc": roc_spec({n: p for n, (_, p) in best.items()}, disclosure),
            "calibration": calibration_spec(calibration)}


def analysis_plots(results: AnalysisResults, disclosure: Disclosure,
                   figures: Figures = INLINE) -> dict[str, Plot]:
    """Every plot of an analysis's section: ``roc``, ``calibration`` and, on a page with
    inline figures where it may be drawn, ``chosen`` (the chosen model's ROC curve)."""
    plots = sweep_plots(results.sweep, disclosure)
    if figures.inline and roc_shown(results.predictions, disclosure):
        plots["chosen"] = roc_spec({CHOSEN: results.predictions}, disclosure)
    return plots


def render_sections(results: SweepResults, disclosure: Disclosure, select_by: str,
                    level: int = 2, figures: Figures = INLINE,
                    pngs: Mapping[str, bytes] | None = None
                    ) -> tuple[str, dict[str, bytes]]:
    """An analysis's sweep sections' HTML (Table 1, leaderboard, the best models' ROC and
    calibration plots, top features) and their figures (``roc``, ``calibration`` PNG
    bytes, shown inline or linked as ``figures`` says): ``pngs`` when given (drawn
    elsewhere from :func:`sweep_plots`; linked figures need none), else drawn here.

    The best models are the best configuration of each family, the overall best by CV
    first, chosen by the CV metric ``select_by``.  Calibration bins are stored raw by the
    sweep and pooled here below ``min_cell_count`` persons with or without the outcome.
    """
    least = disclosure.min_cell_count
    h = f"h{level}"
    best, board = results.best, results.board
    if pngs is None:
        pngs = {n: to_png(plot) for n, plot in sweep_plots(results, disclosure).items()}
    images = {n: pngs.get(n, b"") for n in ("roc", "calibration")}
    tensor = results.tensor
    table1 = table_one(tensor.values, tensor.code, tensor.window, tensor.aggregation,
                       results.label, results.descriptions, subject=results.subject,
                       fill=tensor.fill)
    episodes = ("" if EPISODES not in table1["characteristic"] else
                " A person may enter the target cohort more than once: the characteristics "
                "are of episodes (percentages of the episodes), and a person with an episode "
                "with the outcome and another without is in both columns.")
    top_metrics, top_predictions = next(iter(best.values()))
    # Every configuration has the same test split: one test decides for all of them.
    test_shown = metrics_shown(top_predictions, disclosure)
    hidden = "".join(
        note.format(min_cell_count=least) for note, drawn in (
            (NOT_DRAWN, roc_shown(top_predictions, disclosure)),
            (CALIBRATION_NOT_DRAWN,
             calibration_shown(top_metrics["calibration"]["test"], disclosure)))
        if not drawn)
    table1_html = table_one_html(table1, disclosure)
    dashes = ("" if "<td class=n>—</td>" not in table1_html
              else f" — marks a mean not shown: of fewer than {least} persons, or of none.")
    board_note = ("Test metrics are shown, never used to choose." if test_shown else
                  "Test metrics are never used to choose; not shown here (—): the test split "
                  f"has fewer than {least} persons with or without the outcome.")
    page = f"""
<{h}>Characteristics (Table 1)</{h}>
<p class=note>Target cohort and the persons with and without the outcome; counts below {least}
are suppressed, with their complement where subtraction would recover them.{episodes}{dashes}</p>
{table1_html}
<{h}>Leaderboard</{h}>
<p>{board.height} configurations; each picked by its mean {board_metric(select_by)} over
{top_metrics['cv']['folds']} cross-validation folds inside the training persons (★ = best
per outcome).  {board_note}</p>
<div class=grid>{leaderboard_html(board, test_shown=test_shown)}</div>
<{h}>Best models: ROC and calibration</{h}>
<p class=note>The best configuration of each model family, on the test split.</p>
{hidden}{figures.image("roc", "ROC curves of the best models (test split)", images["roc"])}
{figures.image("calibration", "Calibration plot of the best models (test split)",
               images["calibration"])}
<{h}>Top features</{h}>
<p>{html.escape(top_metrics['model'])}: the {len(top_metrics['importance'])} most important
features.</p>
{features_html(top_metrics['importance'], results.descriptions)}
"""
    return page, images


def title(analysis: Analysis) -> str:
    """An analysis's heading: target, outcome, time at risk.

    >>> title(Analysis("a__b__1y", "a", "b", "1y", "b"))
    'a → b, time at risk 1y'
    """
    return f"{analysis.target} → {analysis.outcome}, time at risk {analysis.time_at_risk}"


def analysis_html(results: AnalysisResults, disclosure: Disclosure, select_by: str, *,
                  oracle: dict[str, Any] | None = None, collapsed: bool = False,
                  figures: Figures = INLINE, pngs: Mapping[str, bytes] | None = None
                  ) -> tuple[str, dict[str, bytes]]:
    """One analysis's section (its heading carries the grid's anchor) and its figures
    (``roc``, ``calibration``).  A collapsed section is a ``<details>`` whose summary is the
    heading; an open one puts its parts under ``<h3>``, the page of a single analysis under
    ``<h2>`` as ever.  ``pngs``: the drawn :func:`analysis_plots`, else drawn here."""
    a = results.analysis
    level = 3 if collapsed else 2
    if pngs is None:
        pngs = {n: to_png(plot) for n, plot in analysis_plots(results, disclosure,
                                                              figures).items()}
    body = model_html(disclosure, results.attrition, results.metrics, results.predictions,
                      oracle, level, figures, pngs.get("chosen"))
    if results.matching is not None:  # the design, its balance, what it does to evaluation
        body += matching_html(results.matching, disclosure, level)
    sweep, pngs = render_sections(results.sweep, disclosure, select_by, level, figures,
                                  pngs)
    heading = f"<h2>Analysis: {html.escape(title(a))} <code>{html.escape(a.id)}</code></h2>"
    if collapsed:
        # The grid's link targets the section's body, not its summary: following a link
        # into a closed <details> opens it (the HTML spec's ancestor details revealing).
        return (f"<details><summary>{heading}</summary>\n"
                f'<div class=analysis id="{anchor(a.id)}">\n{body}{sweep}</div></details>\n',
                pngs)
    return (f'<section class=analysis id="{anchor(a.id)}">\n{heading}\n{body}{sweep}'
            "</section>\n", pngs)


def render(study: Study, disclosure: Disclosure, sections: Sequence[str], *,
           overview: str = "", quality: str = "", note: str = "") -> str:
    """The report's HTML: the overview (``overview``), the data-quality section
    (``quality``, see :func:`quality_html`) and the analyses' ``sections``."""
    least = disclosure.min_cell_count
    esc = html.escape
    grid = f"<h2>Overview</h2>\n{overview}\n" if overview else ""
    return document(f"cohortflow study report: {esc(study.name)}", _CSS, f"""\
<h1>Study report: {esc(study.name)}</h1>
<p class=note>Study digest {study.digest()}. Counts below {least} are shown as &lt;{least};
{COMPLEMENTARY} marks a count hidden so that a small one cannot be worked out by subtraction.
{note}</p>
{grid}{quality}
{"".join(sections)}
""")
