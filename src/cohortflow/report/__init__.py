"""The study report: a self-contained HTML page (attrition, data quality, the chosen model,
its ROC curve, and with a sweep Table 1, the leaderboard, the best models' ROC and
calibration plots and their top features) and the plots as PNG files.

Modules: :mod:`._load` reads the inputs, :mod:`._tables` and :mod:`._figures` build the
tables and figures (one ROC implementation, for the page and ``figures/roc.png``),
:mod:`._page` the page.  Everything written goes through the study's
:class:`~cohortflow.disclosure.Disclosure`: its counts are suppressed below the study's
``min_cell_count`` and the files are recorded in its ledger.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

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
from cohortflow.report._load import SweepInputs, SweepResults, Tensor
from cohortflow.report._page import CHOSEN, render, render_sections
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

__all__ = [
    "CHOSEN",
    "NOT_DRAWN",
    "SweepInputs",
    "SweepResults",
    "Tensor",
    "attrition_html",
    "board_metric",
    "calibration_figure",
    "features_html",
    "leaderboard_html",
    "longest_window",
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


def write(study: Study, disclosure: Disclosure, attrition: Path, metrics: Path,
          predictions: Path, out: Path, oracle_dirs: list[Path] | None = None,
          sweep: SweepInputs | None = None, quality: Path | None = None) -> None:
    """Write the report page ``out`` (with the oracle AUROC of a synthetic study) through
    ``disclosure``.

    ``sweep`` adds Table 1, the leaderboard, the best models' plots (also written as the
    PNG files it names) and their top features; ``quality`` (data_quality.json) the
    data-quality section."""
    if disclosure.min_cell_count != study.min_cell_count:
        raise CohortflowError(
            f"the disclosure gate holds min_cell_count {disclosure.min_cell_count}, the study "
            f"{study.name!r} {study.min_cell_count}; fix: build the gate with "
            "Disclosure.of(study, results)")
    sections = ""
    if sweep is not None:
        sections, figures = render_sections(_load.sweep_results(sweep), disclosure,
                                            study.model.select_by)
        disclosure.write_bytes(sweep.roc, figures["roc"])
        disclosure.write_bytes(sweep.calibration, figures["calibration"])
    page = render(study, disclosure, _load.read_json(attrition), _load.read_json(metrics),
                  pl.read_parquet(predictions), _load.oracle(oracle_dirs), sections=sections,
                  quality=_load.read_json(quality) if quality is not None else None)
    disclosure.write_text(out, page)
