"""The study report: one HTML page for every analysis of a study.  First an overview, a
targets × outcomes grid per time at risk of each analysis's test AUROC and outcome rate;
then one section per analysis (attrition, the chosen model and its ROC curve, Table 1, the
leaderboard, the best models' ROC and calibration plots and their top features); the plots
are also written as ``figures/<analysis>/roc.png`` and ``calibration.png``, drawn in worker
processes (the step's threads) while the next sections are read and written.

Modules: :mod:`._load` reads the inputs, :mod:`._tables` and :mod:`._figures` build the
tables and figures (one ROC implementation, for the page and ``roc.png``),
:mod:`._overview` the grid, :mod:`._page` the page.  Everything written goes through the
study's :class:`~cohortflow.disclosure.Disclosure`: its counts are suppressed below the
study's ``min_cell_count`` and the files are recorded in its ledger.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cohortflow.disclosure import Disclosure
from cohortflow.errors import CohortflowError
from cohortflow.report import _load
from cohortflow.report._figures import (
    NOT_DRAWN,
    Curve,
    Drawer,
    Plot,
    calibration_figure,
    calibration_spec,
    draw,
    drawer,
    png,
    roc_figure,
    roc_plot,
    roc_points,
    roc_shown,
    roc_spec,
    to_png,
)
from cohortflow.report._load import AnalysisResults, SweepResults, Tensor
from cohortflow.report._overview import Cell, anchor, outcome_rate, overview_html
from cohortflow.report._page import (
    CHOSEN,
    INLINE,
    INLINE_ANALYSES,
    Figures,
    analysis_html,
    analysis_plots,
    model_html,
    render,
    render_sections,
    sweep_plots,
)
from cohortflow.report._tables import (
    attrition_html,
    board_metric,
    features_html,
    leaderboard_html,
    longest_window,
    quality_html,
    table_one,
    table_one_html,
)
from cohortflow.study import Study

if TYPE_CHECKING:
    from cohortflow.models import Configuration

__all__ = [
    "CHOSEN",
    "INLINE",
    "INLINE_ANALYSES",
    "NOT_DRAWN",
    "AnalysisResults",
    "Cell",
    "Curve",
    "Drawer",
    "Figures",
    "Plot",
    "SweepResults",
    "Tensor",
    "analysis_html",
    "analysis_plots",
    "anchor",
    "attrition_html",
    "board_metric",
    "calibration_figure",
    "calibration_spec",
    "draw",
    "drawer",
    "features_html",
    "leaderboard_html",
    "longest_window",
    "model_html",
    "outcome_rate",
    "overview_html",
    "png",
    "quality_html",
    "render",
    "render_sections",
    "roc_figure",
    "roc_plot",
    "roc_points",
    "roc_shown",
    "roc_spec",
    "sweep_plots",
    "table_one",
    "table_one_html",
    "to_png",
    "write",
]


def _oracle_note(oracle: dict[str, Any] | None, many: bool) -> str:
    """With many analyses, the generator's oracle AUROC is the planted study's (one
    target, outcome and time at risk), so it is said once, at the top."""
    if not many or oracle is None or oracle.get("oracle_auroc") is None:
        return ""
    return (f"Oracle AUROC of the generator's planted study (true planted risk, "
            f"omop/oracle.json): {oracle['oracle_auroc']:.3f}.")


def write(study: Study, disclosure: Disclosure, configs: Mapping[str, Configuration], *,
          oracle_dirs: list[Path] | None = None, quality: Path | None = None,
          workers: int = 1) -> None:
    """Write the report page and every analysis's figures through ``disclosure``; every
    path comes from its layout.

    ``configs``: the study's sweep (:func:`cohortflow.models.configurations`), which every
    leaderboard must come from; ``oracle_dirs``: where the oracle record of a synthetic
    study is; ``quality``: the shareable data-quality record (``data_quality.json``);
    ``workers``: the processes that draw the figures (the step's threads), while this one
    reads the next analyses and writes their sections.  The files are the same whatever
    the number of workers."""
    if disclosure.min_cell_count != study.min_cell_count:
        raise CohortflowError(
            f"the disclosure gate holds min_cell_count {disclosure.min_cell_count}, the study "
            f"{study.name!r} {study.min_cell_count}; fix: build the gate with "
            "Disclosure.of(study, results)")
    analyses = study.analysis_list()
    oracle = _load.oracle(oracle_dirs)
    with drawer(min(workers, 2 * len(analyses))) as pens:
        sections, cells = _sections(study, disclosure, configs, pens, oracle)
    order = [a.id for a in analyses]
    many = len(analyses) > 1
    page = render(study, disclosure, [sections[a] for a in order],
                  overview=overview_html([cells[a] for a in order], study.risk_windows(),
                                         disclosure),
                  quality=quality_html(_load.read_json(quality)) if quality is not None
                  else "",
                  note=_oracle_note(oracle, many))
    disclosure.write_text(disclosure.layout.report, page)


def _sections(study: Study, disclosure: Disclosure, configs: Mapping[str, Configuration],
              pens: Drawer, oracle: dict[str, Any] | None
              ) -> tuple[dict[str, str], dict[str, Cell]]:
    """Every analysis's section and overview cell; its figures are drawn by ``pens`` and
    written as they come, in the analyses' order, a bounded number in flight (their
    plots hold the test split's curve points)."""
    layout = disclosure.layout
    analyses = study.analysis_list()
    many = len(analyses) > 1
    inline = len(analyses) <= INLINE_ANALYSES
    codes = _load.descriptions(layout.store)
    sections: dict[str, str] = {}
    cells: dict[str, Cell] = {}
    pending: deque[tuple[str, dict[str, Future[bytes]]]] = deque()

    def write_figures(keep: int) -> None:
        """Write the drawn figures in the analyses' order, waiting while more than
        ``keep`` analyses' figures are still to come."""
        while pending and (len(pending) > keep
                           or all(f.done() for f in pending[0][1].values())):
            analysis, futures = pending.popleft()
            for name in ("roc", "calibration"):
                disclosure.write_bytes(layout.figure(analysis, name), futures[name].result())

    # One target's tensor in memory at a time, read once for all its analyses.
    for target, group in itertools.groupby(sorted(analyses, key=lambda a: a.target),
                                           key=lambda a: a.target):
        tensor = _load.tensor(layout.tensor(target))
        for analysis in group:
            results = _load.analysis_results(layout, analysis, tensor, configs, codes)
            figures = INLINE if inline else Figures(
                {n: layout.figure(analysis.id, n).relative_to(layout.root).as_posix()
                 for n in ("roc", "calibration")})
            futures = {n: pens.submit(plot)
                       for n, plot in analysis_plots(results, disclosure, figures).items()}
            pending.append((analysis.id, futures))
            # Linked figures: the section needs no bytes, so drawing overlaps the reading.
            pngs = {n: f.result() for n, f in futures.items()} if inline else {}
            sections[analysis.id], _ = analysis_html(
                results, disclosure, study.model.select_by, oracle=None if many else oracle,
                collapsed=many, figures=figures, pngs=pngs)
            cells[analysis.id] = Cell.of(analysis, results.metrics, results.sweep.label)
            write_figures(keep=_IN_FLIGHT)
        del tensor
    write_figures(keep=0)
    return sections, cells


_IN_FLIGHT = 64
"""The most analyses whose figures may be drawing at once."""
