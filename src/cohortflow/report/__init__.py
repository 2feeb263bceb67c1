"""The study report: one HTML page for every analysis of a study.  First an overview, a
targets × outcomes grid per time at risk of each analysis's test AUROC and outcome rate;
then one section per analysis (attrition, the chosen model and its ROC curve, Table 1, the
leaderboard, the best models' ROC and calibration plots and their top features); the plots
are also written as ``figures/<analysis>/roc.png`` and ``calibration.png``.

Modules: :mod:`._load` reads the inputs, :mod:`._tables` and :mod:`._figures` build the
tables and figures (one ROC implementation, for the page and ``roc.png``),
:mod:`._overview` the grid, :mod:`._page` the page.  Everything written goes through the
study's :class:`~cohortflow.disclosure.Disclosure`: its counts are suppressed below the
study's ``min_cell_count`` and the files are recorded in its ledger.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cohortflow.disclosure import Disclosure
from cohortflow.errors import CohortflowError
from cohortflow.report import _load
from cohortflow.report._figures import (
    NOT_DRAWN,
    calibration_figure,
    roc_figure,
    roc_plot,
    roc_points,
    roc_shown,
)
from cohortflow.report._load import AnalysisResults, SweepResults, Tensor
from cohortflow.report._overview import Cell, anchor, outcome_rate, overview_html
from cohortflow.report._page import (
    CHOSEN,
    INLINE,
    INLINE_ANALYSES,
    Figures,
    analysis_html,
    model_html,
    render,
    render_sections,
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
    "Figures",
    "SweepResults",
    "Tensor",
    "analysis_html",
    "anchor",
    "attrition_html",
    "board_metric",
    "calibration_figure",
    "features_html",
    "leaderboard_html",
    "longest_window",
    "model_html",
    "outcome_rate",
    "overview_html",
    "quality_html",
    "render",
    "render_sections",
    "roc_figure",
    "roc_plot",
    "roc_points",
    "roc_shown",
    "table_one",
    "table_one_html",
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
          oracle_dirs: list[Path] | None = None, quality: Path | None = None) -> None:
    """Write the report page and every analysis's figures through ``disclosure``; every
    path comes from its layout.

    ``configs``: the study's sweep (:func:`cohortflow.models.configurations`), which every
    leaderboard must come from; ``oracle_dirs``: where the oracle record of a synthetic
    study is; ``quality``: the shareable data-quality record (``data_quality.json``)."""
    if disclosure.min_cell_count != study.min_cell_count:
        raise CohortflowError(
            f"the disclosure gate holds min_cell_count {disclosure.min_cell_count}, the study "
            f"{study.name!r} {study.min_cell_count}; fix: build the gate with "
            "Disclosure.of(study, results)")
    layout = disclosure.layout
    analyses = study.analysis_list()
    many = len(analyses) > 1
    oracle = _load.oracle(oracle_dirs)
    codes = _load.descriptions(layout.store)
    sections: dict[str, str] = {}
    cells: dict[str, Cell] = {}
    # One target's tensor in memory at a time, read once for all its analyses.
    for target, group in itertools.groupby(sorted(analyses, key=lambda a: a.target),
                                           key=lambda a: a.target):
        tensor = _load.tensor(layout.tensor(target))
        for analysis in group:
            results = _load.analysis_results(layout, analysis, tensor, configs, codes)
            paths = {name: layout.figure(analysis.id, name) for name in ("roc", "calibration")}
            figures = (INLINE if len(analyses) <= INLINE_ANALYSES else
                       Figures({n: p.relative_to(layout.root).as_posix()
                                for n, p in paths.items()}))
            html, pngs = analysis_html(results, disclosure, study.model.select_by,
                                       oracle=None if many else oracle, collapsed=many,
                                       figures=figures)
            for name, path in paths.items():
                disclosure.write_bytes(path, pngs[name])
            sections[analysis.id] = html
            cells[analysis.id] = Cell.of(analysis, results.metrics, results.sweep.label)
        del tensor
    order = [a.id for a in analyses]
    page = render(study, disclosure, [sections[a] for a in order],
                  overview=overview_html([cells[a] for a in order], study.risk_windows(),
                                         disclosure),
                  quality=quality_html(_load.read_json(quality)) if quality is not None
                  else "",
                  note=_oracle_note(oracle, many))
    disclosure.write_text(layout.report, page)
