"""The sweep sections of the study report: Table 1, leaderboard, ROC and calibration plots of
the best models, top features.  Pure functions build tables and figures; ``load_*`` read.

Every count shown goes through :mod:`cohortflow.privacy`: below the study's minimum cell
count it shows as ``<k``, and a with-outcome / without-outcome pair is suppressed together
when one of them is small (the target column would give it away by subtraction).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from sklearn.metrics import roc_curve

from cohortflow import cohorts, events, features, models
from cohortflow.privacy import curve_shown, suppress, suppress_categories
from cohortflow.study import FeatureWindow

GROUPS = ("target", "with_outcome", "without_outcome")
TOP_CODES = 10


def table_one(x: np.ndarray, code: list[str], window: list[str], aggregation: list[str],
              label: np.ndarray, descriptions: dict[str, str], top: int = TOP_CODES
              ) -> pl.DataFrame:
    """Characteristics of the target cohort and of the persons with and without the outcome:
    persons, age (mean, SD), each demographic category, and the ``top`` most common codes
    of the longest window (any record).  ``kind`` is ``count`` or ``mean``.

    >>> x = np.array([[10.0, 1, 2], [12.0, 0, 0], [14.0, 1, 1], [20.0, 0, 3]])
    >>> t = table_one(x, ["MEDS_BIRTH", "GENDER//8532", "CONDITION//1"], ["all", "all", "365d"],
    ...               ["age_years", "present", "count"], np.array([1, 0, 1, 0]),
    ...               {"GENDER//8532": "FEMALE", "CONDITION//1": "Asthma"})
    >>> t.select("characteristic", "target", "with_outcome", "without_outcome").rows()
    ... # doctest: +NORMALIZE_WHITESPACE
    [('Persons', 4.0, 2.0, 2.0), ('Age at index, years', 14.0, 12.0, 16.0),
     ('Gender: FEMALE', 2.0, 2.0, 0.0), ('Asthma (CONDITION//1), 365d', 3.0, 2.0, 1.0)]
    """
    label = np.asarray(label).astype(bool)
    masks = {"target": np.ones(len(label), bool), "with_outcome": label,
             "without_outcome": ~label}
    rows: list[dict[str, Any]] = [{"characteristic": "Persons", "kind": "count",
                                   **{g: float(m.sum()) for g, m in masks.items()}}]
    for j, agg in enumerate(aggregation):
        if agg == "age_years":
            col = x[:, j]
            rows.append({"characteristic": "Age at index, years", "kind": "mean",
                         **{g: float(np.nanmean(col[m])) if m.any() else float("nan")
                            for g, m in masks.items()},
                         **{f"{g}_sd": float(np.nanstd(col[m], ddof=1)) if m.sum() > 1
                            else float("nan") for g, m in masks.items()}})
    for j, (c, w, agg) in enumerate(zip(code, window, aggregation, strict=True)):
        if w == "all" and agg == "present" and c != "MEDS_BIRTH":
            domain = c.split("//")[0].title() if "//" in c else c
            rows.append(_count_row(f"{domain}: {descriptions.get(c, c)}", x[:, j] > 0, masks))
    windows = {w for w, agg in zip(window, aggregation, strict=True) if agg == "count"}
    if windows:
        longest = longest_window(windows)
        cols = [j for j, (w, agg) in enumerate(zip(window, aggregation, strict=True))
                if w == longest and agg == "count"]
        share = [(-(x[:, j] > 0).sum(), code[j], j) for j in cols]
        for _, c, j in sorted(share)[:top]:
            name = f"{descriptions.get(c, c)} ({c}), {longest}"
            rows.append(_count_row(name, x[:, j] > 0, masks))
    table = pl.DataFrame(rows)
    for g in GROUPS:
        if f"{g}_sd" not in table.columns:
            table = table.with_columns(pl.lit(None, pl.Float64).alias(f"{g}_sd"))
    return table


def longest_window(labels: Iterable[str]) -> str:
    """The window covering the most days (all history first); of two as long, the one
    nearer the index.

    >>> longest_window(["30d", "-1095d..-366d", "365d"]), longest_window(["365d", "all"])
    ('-1095d..-366d', 'all')
    >>> longest_window(["-395d..-31d", "365d", "-730d..-366d"])  # 365, 366 and 365 days
    '365d'
    >>> longest_window(["-730d..-366d", "-395d..-31d"])  # as long: the one nearer the index
    '-395d..-31d'
    """
    def reach(label: str) -> tuple[float, int, str]:
        window = FeatureWindow.parse(label)
        return (math.inf if window.days is None else window.days, window.end_days, label)

    return max(labels, key=reach)


def _count_row(name: str, flag: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"characteristic": name, "kind": "count",
            **{g: float((flag & m).sum()) for g, m in masks.items()}}


def table_one_html(table: pl.DataFrame, k: int) -> str:
    """Table 1 as HTML with small counts suppressed (and their complements).

    >>> t = pl.DataFrame({"characteristic": ["Persons", "Rare"], "kind": ["count", "count"],
    ...     "target": [100.0, 30.0], "with_outcome": [40.0, 3.0],
    ...     "without_outcome": [60.0, 27.0], "target_sd": [None, None],
    ...     "with_outcome_sd": [None, None], "without_outcome_sd": [None, None]})
    >>> page = table_one_html(t, 11)
    >>> "<td class=n>&lt;11</td>" in page and "27" not in page and "30 (30.0%)" in page
    True
    """
    persons = table.filter(pl.col("characteristic") == "Persons").row(0, named=True)
    head = "".join(f"<th>{h}</th>" for h in ("Characteristic", "Target", "With outcome",
                                                "Without outcome"))
    body = []
    for row in table.iter_rows(named=True):
        if row["kind"] == "mean":
            cells = [f"{row[g]:.1f} ({row[g + '_sd']:.1f})"
                     if persons[g] >= k and row[g] == row[g] else "—" for g in GROUPS]
        else:
            pair = suppress_categories({"with_outcome": int(row["with_outcome"]),
                                        "without_outcome": int(row["without_outcome"])}, k)
            shown = {"target": suppress(int(row["target"]), k), **pair}
            cells = [_count_cell(shown[g], row[g], persons[g], row["characteristic"])
                     for g in GROUPS]
        body.append(f"<tr><td>{html.escape(row['characteristic'])}</td>"
                    + "".join(f"<td class=n>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _count_cell(shown: str, count: float, total: float, name: str) -> str:
    if shown != str(int(count)) or name == "Persons" or total <= 0:
        return shown
    return f"{shown} ({100 * count / total:.1f}%)"


def leaderboard_html(table: pl.DataFrame, rows: int = 20) -> str:
    """The leaderboard's best ``rows`` configurations per outcome, the chosen one marked.

    >>> t = pl.DataFrame({"outcome": ["o"], "rank": [1], "best": [True], "model": ["m"],
    ...     "feature_set": ["all"], "config_id": ["abc"], "cv_auroc": [0.7],
    ...     **{f"test_{c}": [0.5] for c in models.TEST_COLUMNS}})
    >>> "<td>m ★</td>" in leaderboard_html(t)
    True
    """
    head = ("Outcome", "Rank", "Model", "Features", "Id", "CV AUROC", "Test AUROC (95% CI)",
            "AUPRC", "Brier", "Scaled Brier", "Cal. intercept", "Cal. slope", "E-avg")
    body = []
    for r in table.filter(pl.col("rank") <= rows).iter_rows(named=True):
        star = " ★" if r["best"] else ""
        cells = [html.escape(str(r["outcome"])), str(r["rank"]),
                 html.escape(r["model"]) + star, html.escape(r["feature_set"]),
                 f"<code>{r['config_id']}</code>", f"{r['cv_auroc']:.3f}",
                 f"{r['test_auroc']:.3f} ({r['test_auroc_ci_low']:.3f}–"
                 f"{r['test_auroc_ci_high']:.3f})",
                 *(f"{r['test_' + c]:.3f}" for c in ("auprc", "brier", "scaled_brier",
                                                      "calibration_intercept",
                                                      "calibration_slope", "e_avg"))]
        body.append("<tr>" + "".join(f"<td>{c}</td>" if i < 5 else f"<td class=n>{c}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join(body) + "</table>")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def roc_figure(curves: dict[str, pl.DataFrame], k: int) -> bytes:
    """ROC curves on the test split, one per named model, as PNG bytes; a curve that would
    show a count below ``k`` is left out (:func:`cohortflow.privacy.curve_shown`)."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for name, pred in curves.items():
        test = pred.filter(pl.col("split") == "test")
        if not curve_shown(test["label"].cast(pl.Int64).to_list(), k):
            ax.plot([], [], lw=0, label=f"{name}: not drawn (fewer than {k} persons with "
                                        "or without the outcome)")
            continue
        fpr, tpr, _ = roc_curve(test["label"].to_numpy(), test["prediction"].to_numpy())
        ax.plot(fpr, tpr, lw=1.5, label=name)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test split)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=7)
    return _png(fig)


def calibration_figure(curves: dict[str, list[dict[str, float]]]) -> bytes:
    """Observed against predicted risk in deciles of the prediction, per named model."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    top = 0.05
    for name, points in curves.items():
        p = [pt["predicted"] for pt in points]
        o = [pt["observed"] for pt in points]
        top = max(top, *p, *o)
        ax.plot(p, o, marker="o", ms=3, lw=1, label=name)
    top = min(1.0, top * 1.05)
    ax.plot([0, top], [0, top], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.set(xlabel="predicted risk", ylabel="observed risk", title="Calibration (test split)",
           xlim=(0, top), ylim=(0, top))
    ax.legend(loc="upper left", fontsize=7)
    return _png(fig)


def features_html(importance: list[dict[str, Any]], descriptions: dict[str, str]) -> str:
    """The top features of a model by importance, with code descriptions.

    >>> features_html([{"feature": "CONDITION//1 365d count", "importance": 0.5}],
    ...               {"CONDITION//1": "Asthma"})
    '<table><tr><th>Feature</th><th>Importance</th></tr><tr><td>Asthma \
(CONDITION//1 365d count)</td><td class=n>0.500</td></tr></table>'
    """
    body = "".join(
        f"<tr><td>{html.escape(descriptions.get(f['feature'].split(' ')[0], ''))}"
        f"{' (' if f['feature'].split(' ')[0] in descriptions else ''}"
        f"{html.escape(f['feature'])}{')' if f['feature'].split(' ')[0] in descriptions else ''}"
        f"</td><td class=n>{f['importance']:.3f}</td></tr>" for f in importance)
    return f"<table><tr><th>Feature</th><th>Importance</th></tr>{body}</table>"


def _img(alt: str, png: bytes) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,' \
           f'{base64.b64encode(png).decode()}">'


def render_sections(table1: pl.DataFrame, board: pl.DataFrame,
                    best: dict[str, tuple[dict[str, Any], pl.DataFrame]],
                    descriptions: dict[str, str], k: int, select_by: str
                    ) -> tuple[str, dict[str, bytes]]:
    """The sweep sections' HTML and their figures (``roc``, ``calibration`` PNG bytes).

    ``best`` maps a name (best configuration of each family) to its metrics and predictions;
    the first is the overall best by CV, chosen by the CV metric ``select_by``.  Calibration
    bins are stored raw by the sweep and pooled here below ``k`` persons with or without
    the outcome.
    """
    figures = {
        "roc": roc_figure({n: p for n, (_, p) in best.items()}, k),
        "calibration": calibration_figure(
            {n: models.pool_calibration(m["calibration"]["test"], k)
             for n, (m, _) in best.items()}),
    }
    top_metrics, _ = next(iter(best.values()))
    n_configs = board.height
    page = f"""
<h2>Characteristics (Table 1)</h2>
<p class=note>Target cohort and the persons with and without the outcome; counts below {k}
are suppressed, with their complement where subtraction would recover them.</p>
{table_one_html(table1, k)}
<h2>Leaderboard</h2>
<p>{n_configs} configurations; each picked by its mean {board_metric(select_by)} over
{top_metrics['cv']['folds']} cross-validation folds inside the training persons (★ = best
per outcome).  Test metrics are shown, never used to choose.</p>
{leaderboard_html(board)}
<h2>Best models: ROC and calibration</h2>
<p class=note>The best configuration of each model family, on the test split.</p>
{_img("ROC curves of the best models (test split)", figures["roc"])}
{_img("Calibration plot of the best models (test split)", figures["calibration"])}
<h2>Top features</h2>
<p>{html.escape(top_metrics['model'])}: the {len(top_metrics['importance'])} most important
features.</p>
{features_html(top_metrics['importance'], descriptions)}
"""
    return page, figures


def board_metric(select_by: str) -> str:
    """The CV metric that chose the models (``model.select_by``), as a reader calls it.

    >>> board_metric("brier")
    'Brier score'
    """
    return {"auroc": "AUROC", "auprc": "AUPRC", "brier": "Brier score"}[select_by]


def load_inputs(features_path: Path, store: Path, cohort_dir: Path, leaderboard: Path,
                sweep_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame,
                                          dict[str, tuple[dict[str, Any], pl.DataFrame]],
                                          dict[str, str]]:
    """Read what :func:`render_sections` needs: Table 1 (from the tensor and the labels),
    the leaderboard, the best configuration of each family, code descriptions."""
    codes = events.read_codes(Path(store))
    descriptions = dict(zip(codes["code"].to_list(),
                            codes["description"].fill_null("").to_list(), strict=True))
    ds = features.open_features(Path(features_path))
    x = np.asarray(ds["values"].data.compute(scheduler="synchronous"), dtype=np.float64)
    cohort = cohorts.read_cohort(Path(cohort_dir), events.list_shards(Path(store)))
    table1 = table_one(x, [str(c) for c in ds["code"].values],
                       [str(w) for w in ds["window"].values],
                       [str(a) for a in ds["aggregation"].values],
                       cohort["label"].to_numpy(), descriptions)
    board = pl.read_parquet(leaderboard)
    first_outcome = board["outcome"][0]
    picks = models.best_per(board.filter(pl.col("outcome") == first_outcome),
                            ["outcome", "family"]).sort("rank")
    best = {}
    for row in picks.iter_rows(named=True):
        folder = Path(sweep_dir) / row["config_id"]
        best[f"{row['family']} ({row['config_id']})"] = (
            json.loads((folder / "metrics.json").read_text()),
                              pl.read_parquet(folder / "predictions.parquet"))
    return table1, board, best, descriptions
