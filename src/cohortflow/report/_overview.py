"""The report's entry point: a targets × outcomes grid of every analysis, one grid per time
at risk, each cell the chosen model's test AUROC (95% CI) and the outcome rate, linking to
the analysis's section.

One grid per time at risk, not the time at risk as a third label in each cell: a study has
few times at risk and each is its own question, while targets and outcomes are the long
axes; a two-way grid per window keeps the cells alike, so a column or row reads at a glance
(in PatientLevelPrediction's multiple-analyses viewer too, the time at risk is a filter).

The outcome count goes through the gate like every count: below ``min_cell_count`` it shows
as ``<min`` and so does its complement (persons without the outcome) when small, and then
the rate, which with the total would give the count back, is not shown.

A matched analysis (``matching:``) is marked ``matched 1:k`` and shows its cases over the
rows of its matched sets with no rate: that share is about 1/(k+1) by design, not the
outcome's rate in the target population.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cohortflow import models
from cohortflow.disclosure import Disclosure
from cohortflow.study import Analysis, RiskWindow


def anchor(analysis: str) -> str:
    """The HTML id of an analysis's section (analysis ids are letters, digits, ``-``, ``_``).

    >>> anchor("asthma__exacerbation__1y")
    'analysis-asthma__exacerbation__1y'
    """
    return f"analysis-{analysis}"


@dataclass(frozen=True)
class Cell:
    """One analysis as the overview shows it: its chosen model's test AUROC with the 95%
    CI, and its labelled episodes and outcomes (exact: the gate suppresses them)."""

    analysis: Analysis
    auroc: float
    ci_low: float
    ci_high: float
    outcomes: int
    episodes: int
    test: tuple[int, int] | None = None
    """The test split's persons and outcomes (:func:`models.split_counts`); no AUROC shown
    when the gate may not show metrics over them (:meth:`Disclosure.metrics_shown`)."""

    @classmethod
    def of(cls, analysis: Analysis, metrics: dict[str, Any], label: np.ndarray) -> Cell:
        """The cell of ``analysis`` from its chosen model's ``metrics`` and its labels."""
        test = metrics["test"]
        return cls(analysis, float(test["auroc"]), float(test["auroc_ci_low"]),
                   float(test["auroc_ci_high"]), int(np.asarray(label).sum()), len(label),
                   models.split_counts(metrics))


def outcome_rate(cell: Cell, disclosure: Disclosure) -> str:
    """``outcomes / episodes (rate)`` through the gate: a small count (or complement) hides
    itself and the rate.  A matched analysis: ``matched 1:k, cases / rows``, never a rate
    (the share of cases is set by the design).

    >>> from cohortflow.layout import Layout
    >>> gate = Disclosure(Layout.of("results", "s"), 11)
    >>> a = Analysis("t__o__1y", "t", "o", "1y", "o")
    >>> outcome_rate(Cell(a, .7, .6, .8, 40, 400), gate)
    '40 / 400 (10.0%)'
    >>> [outcome_rate(Cell(a, .7, .6, .8, k, 400), gate) for k in (5, 395)]
    ['&lt;11 / 400', '* / 400']
    >>> from cohortflow.study import Matching
    >>> m = Analysis("t__o__1y", "t", "o", "1y", "o", matching=Matching(controls=4))
    >>> outcome_rate(Cell(m, .7, .6, .8, 50, 250), gate)
    'matched 1:4, 50 cases / 250 rows'
    """
    shown = disclosure.categories({"with": cell.outcomes,
                                   "without": cell.episodes - cell.outcomes})
    total = disclosure.count(cell.episodes)
    if cell.analysis.matching is not None:
        return html.escape(f"matched 1:{cell.analysis.matching.controls}, {shown['with']} "
                           f"cases / {total} rows")
    text = f"{shown['with']} / {total}"
    if shown["with"] == str(cell.outcomes) and total == str(cell.episodes) and cell.episodes:
        text += f" ({100 * cell.outcomes / cell.episodes:.1f}%)"
    return html.escape(text)


def _in_order(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def describe_window(window: RiskWindow) -> str:
    """A time at risk in words.

    >>> describe_window(RiskWindow(start_days=1, end_days=365))
    'days 1 to 365 after index'
    >>> describe_window(RiskWindow(start_days=0, end_days=30, end_anchor="exit"))
    'day 0 after index to day 30 after exit'
    """
    if window.start_anchor == window.end_anchor:
        return (f"days {window.start_days} to {window.end_days} after {window.start_anchor}")
    return (f"day {window.start_days} after {window.start_anchor} to day {window.end_days} "
            f"after {window.end_anchor}")


def cell_html(cell: Cell, disclosure: Disclosure) -> str:
    """One cell: the AUROC with its CI (or why not: a test split of fewer than
    ``min_cell_count`` persons with or without the outcome) and the outcome rate, a link to
    the section."""
    least = disclosure.min_cell_count
    auroc = (f"<b>{cell.auroc:.3f}</b> <span class=ci>({cell.ci_low:.3f}–{cell.ci_high:.3f})"
             "</span>" if cell.test is None or disclosure.metrics_shown(*cell.test) else
             f"<span class=ci>AUROC not shown: test split under {least} persons with or "
             "without the outcome</span>")
    return (f'<td class=cell><a href="#{anchor(cell.analysis.id)}">{auroc}'
            f"<br><span class=rate>{outcome_rate(cell, disclosure)}</span></a></td>")


def overview_html(cells: Sequence[Cell], windows: dict[str, RiskWindow],
                  disclosure: Disclosure) -> str:
    """The overview: per time at risk (in the study's order), a grid of targets (rows) ×
    outcomes (columns), in the order the study lists them; a pair that is not an analysis
    is an empty cell."""
    by_window: dict[str, dict[tuple[str, str], Cell]] = {}
    for cell in cells:
        a = cell.analysis
        by_window.setdefault(a.time_at_risk, {})[(a.target, a.outcome)] = cell
    esc = html.escape
    parts = ["<p class=note>Each cell: the chosen model's test AUROC (95% CI) and the "
             "outcomes among the labelled episodes (rate); click a cell for its analysis.</p>"]
    if any(cell.analysis.matching is not None for cell in cells):
        parts.append("<p class=note>A cell marked <i>matched 1:k</i> is a matched "
                     "case-control analysis: its cases over the rows of its matched sets, "
                     "about 1/(k+1) by design, not the outcome's rate in the target.</p>")
    for tar, grid in by_window.items():
        targets = _in_order(t for t, _ in grid)
        outcomes = _in_order(o for _, o in grid)
        window = windows.get(tar)
        words = f" ({esc(describe_window(window))})" if window is not None else ""
        head = "<tr><th>Target \\ outcome</th>" + "".join(
            f"<th>{esc(o)}</th>" for o in outcomes) + "</tr>"
        rows = "".join(
            f"<tr><th>{esc(t)}</th>" + "".join(
                cell_html(grid[(t, o)], disclosure) if (t, o) in grid
                else "<td class=cell>·</td>" for o in outcomes) + "</tr>"
            for t in targets)
        parts.append(f"<h3>Time at risk: {esc(tar)}{words}</h3>\n"
                     f"<div class=grid><table class=overview>{head}{rows}</table></div>")
    return "\n".join(parts)
