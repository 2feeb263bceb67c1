"""The report's tables as HTML: attrition, Table 1, the leaderboard, top features, the
ingest's data-quality warnings.  Every count shown goes through the gate
(:class:`~cohortflow.disclosure.Disclosure`): below the study's ``min_cell_count`` it shows
as ``<min``, and a with-outcome / without-outcome pair is suppressed together when one of
them is small (the target column would give it away by subtraction)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from cohortflow.disclosure import Disclosure
from cohortflow.privacy import COMPLEMENTARY
from cohortflow.study import FeatureWindow

GROUPS = ("target", "with_outcome", "without_outcome")
PERSONS, EPISODES = "Persons", "Episodes"
BOTH = "Persons in both columns"
"""Table 1's row of the persons with an episode with the outcome and another without."""
TOP_CODES = 10


def table_one(x: np.ndarray, code: list[str], window: list[str], aggregation: list[str],
              label: np.ndarray, descriptions: dict[str, str], top: int = TOP_CODES, *,
              subject: np.ndarray | None = None, fill: np.ndarray | None = None
              ) -> pl.DataFrame:
    """Characteristics of the target cohort and of the persons with and without the outcome:
    persons, age (mean, SD), each demographic category, and the ``top`` most common codes
    of the longest window (any record).  ``kind`` is ``count`` or ``mean``.

    ``x`` and ``label`` have one row per episode, ``subject`` its person (every row its own
    person when None).  A target cohort may hold several episodes of one person (without
    ``first_only``): then ``Persons`` counts distinct persons, an ``Episodes`` row the rows
    (the characteristics are of episodes), and the persons with an episode with the outcome
    and another without, who are in both columns, are the ``Persons in both columns`` row
    (kind ``overlap``) — as OHDSI's PatientLevelPrediction counts persons and outcomes apart.

    ``x`` may be a sparse store's ``csr_matrix`` of stored cells, ``fill`` its columns'
    fills: only the columns shown are made dense, one at a time.

    >>> x = np.array([[10.0, 1, 2], [12.0, 0, 0], [14.0, 1, 1], [20.0, 0, 3]])
    >>> t = table_one(x, ["MEDS_BIRTH", "GENDER//8532", "CONDITION//1"], ["all", "all", "365d"],
    ...               ["age_years", "present", "count"], np.array([1, 0, 1, 0]),
    ...               {"GENDER//8532": "FEMALE", "CONDITION//1": "Asthma"})
    >>> t.select("characteristic", "target", "with_outcome", "without_outcome").rows()
    ... # doctest: +NORMALIZE_WHITESPACE
    [('Persons', 4.0, 2.0, 2.0), ('Age at index, years', 14.0, 12.0, 16.0),
     ('Gender: FEMALE', 2.0, 2.0, 0.0), ('Asthma (CONDITION//1), 365d', 3.0, 2.0, 1.0)]
    >>> t = table_one(x[:, :1], ["MEDS_BIRTH"], ["all"], ["age_years"], np.array([1, 0, 1, 0]),
    ...               {}, subject=np.array([7, 7, 8, 9]))  # person 7: two episodes
    >>> t.select("characteristic", "target", "with_outcome", "without_outcome").rows()[:3]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('Persons', 3.0, 2.0, 2.0), ('Episodes', 4.0, 2.0, 2.0),
     ('Persons in both columns', 1.0, 1.0, 1.0)]
    """
    label = np.asarray(label).astype(bool)
    masks = {"target": np.ones(len(label), bool), "with_outcome": label,
             "without_outcome": ~label}
    rows: list[dict[str, Any]] = _person_rows(label, masks, subject)
    view: Any = _SparseColumns(sp.csc_matrix(x), fill) if sp.issparse(x) else x
    for j, agg in enumerate(aggregation):
        if agg == "age_years":
            col = view[:, j]
            rows.append({"characteristic": "Age at index, years", "kind": "mean",
                         **{g: float(np.nanmean(col[m])) if m.any() else float("nan")
                            for g, m in masks.items()},
                         **{f"{g}_sd": float(np.nanstd(col[m], ddof=1)) if m.sum() > 1
                            else float("nan") for g, m in masks.items()}})
    for j, (c, w, agg) in enumerate(zip(code, window, aggregation, strict=True)):
        if w == "all" and agg == "present" and c != "MEDS_BIRTH":
            domain = c.split("//")[0].title() if "//" in c else c
            rows.append(_count_row(f"{domain}: {descriptions.get(c, c)}", view[:, j] > 0,
                                   masks))
    windows = {w for w, agg in zip(window, aggregation, strict=True) if agg == "count"}
    if windows:
        longest = longest_window(windows)
        cols = [j for j, (w, agg) in enumerate(zip(window, aggregation, strict=True))
                if w == longest and agg == "count"]
        share = ([(-(view[:, j] > 0).sum(), code[j], j) for j in cols]
                 if not isinstance(view, _SparseColumns) else view.share(cols, code))
        for _, c, j in sorted(share)[:top]:
            name = f"{descriptions.get(c, c)} ({c}), {longest}"
            rows.append(_count_row(name, view[:, j] > 0, masks))
    table = pl.DataFrame(rows)
    for g in GROUPS:
        if f"{g}_sd" not in table.columns:
            table = table.with_columns(pl.lit(None, pl.Float64).alias(f"{g}_sd"))
    return table


def _person_rows(label: np.ndarray, masks: dict[str, np.ndarray],
                 subject: np.ndarray | None) -> list[dict[str, Any]]:
    """Table 1's first rows: persons; with several episodes of a person, also episodes and
    the persons in both outcome columns."""
    episodes = {g: float(m.sum()) for g, m in masks.items()}
    if subject is None:
        return [{"characteristic": PERSONS, "kind": "count", **episodes}]
    subject = np.asarray(subject)
    persons = {g: float(np.unique(subject[m]).size) for g, m in masks.items()}
    if persons == episodes:
        return [{"characteristic": PERSONS, "kind": "count", **persons}]
    both = float(np.intersect1d(subject[label], subject[~label]).size)
    return [{"characteristic": PERSONS, "kind": "count", **persons},
            {"characteristic": EPISODES, "kind": "count", **episodes},
            {"characteristic": BOTH, "kind": "overlap", **dict.fromkeys(GROUPS, both)}]


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


class _SparseColumns:
    """Columns of a sparse tensor (CSC) made dense one at a time: ``x[:, j]`` is column
    ``j`` with its fill where nothing is stored."""

    def __init__(self, x: sp.csc_matrix, fill: np.ndarray | None) -> None:
        self.x = x
        self.fill = np.zeros(x.shape[1]) if fill is None else np.asarray(fill, np.float64)

    def __getitem__(self, key: tuple[slice, int]) -> np.ndarray:
        j = key[1]
        out = np.full(self.x.shape[0], self.fill[j])
        a, b = self.x.indptr[j], self.x.indptr[j + 1]
        out[self.x.indices[a:b]] = self.x.data[a:b]
        return out

    def share(self, cols: list[int], code: list[str]) -> list[tuple[int, str, int]]:
        """(-rows with a positive count, code, column) of count columns (fill 0)."""
        positive = np.asarray((self.x[:, cols] > 0).astype(np.int64).sum(axis=0)).ravel()
        return [(-int(n), code[j], j) for n, j in zip(positive, cols, strict=True)]


def _count_row(name: str, flag: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"characteristic": name, "kind": "count",
            **{g: float((flag & m).sum()) for g, m in masks.items()}}


def table_one_html(table: pl.DataFrame, disclosure: Disclosure) -> str:
    """Table 1 as HTML with small counts suppressed (and their complements); a mean of a
    small group is not shown.  A percentage is of the column's episodes (its persons when
    each has one episode), and only where that count is shown too.

    >>> t = pl.DataFrame({"characteristic": ["Persons", "Rare"], "kind": ["count", "count"],
    ...     "target": [100.0, 30.0], "with_outcome": [40.0, 3.0],
    ...     "without_outcome": [60.0, 27.0], "target_sd": [None, None],
    ...     "with_outcome_sd": [None, None], "without_outcome_sd": [None, None]})
    >>> from cohortflow.layout import Layout
    >>> page = table_one_html(t, Disclosure(Layout.of("results", "s"), 11))
    >>> "<td class=n>&lt;11</td>" in page and "27" not in page and "30 (30.0%)" in page
    True
    """
    table_rows = list(table.iter_rows(named=True))
    heads = {r["characteristic"]: r for r in table_rows
             if r["characteristic"] in (PERSONS, EPISODES, BOTH)}
    persons = heads[PERSONS]
    # The characteristics are of episodes; the persons in both columns are persons.
    base = heads.get(EPISODES, persons)
    shown_persons = _shown_counts(persons, heads.get(BOTH), disclosure)
    shown_base = _shown_counts(base, heads.get(BOTH), disclosure)
    head = "".join(f"<th>{h}</th>" for h in ("Characteristic", "Target", "With outcome",
                                                "Without outcome"))
    body = []
    for row in table_rows:
        name = row["characteristic"]
        if row["kind"] == "mean":
            shown_mean = [persons[g] >= disclosure.min_cell_count and row[g] == row[g]
                          for g in GROUPS]
            cells = [f"{row[g]:.1f} ({row[g + '_sd']:.1f})" if ok else "—"
                     for g, ok in zip(GROUPS, shown_mean, strict=True)]
        elif name in (PERSONS, EPISODES):
            shown = _shown_counts(row, heads.get(BOTH), disclosure)
            cells = [shown[g] for g in GROUPS]
        else:
            shown = _shown_counts(row, None, disclosure)
            total, total_shown = ((persons, shown_persons) if row["kind"] == "overlap"
                                  else (base, shown_base))
            cells = [_count_cell(shown[g], row[g], total_shown[g], total[g]) for g in GROUPS]
        body.append(f"<tr><td>{html.escape(name)}</td>"
                    + "".join(f"<td class=n>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _shown_counts(row: dict[str, Any], both: dict[str, Any] | None,
                  disclosure: Disclosure) -> dict[str, str]:
    """A count row's cells through the gate: the target's count, and the with / without
    pair suppressed together.  The persons row also hides the pair when the persons in both
    columns are few: with + without - target would give their number."""
    if row["kind"] == "overlap":
        return {g: disclosure.count(int(row[g])) for g in GROUPS}
    shown = {"target": disclosure.count(int(row["target"])),
             **disclosure.categories({"with_outcome": int(row["with_outcome"]),
                                      "without_outcome": int(row["without_outcome"])})}
    if (row["characteristic"] == PERSONS and both is not None
            and disclosure.count(int(both["target"])) != str(int(both["target"]))):
        for g in ("with_outcome", "without_outcome"):
            if shown[g] == str(int(row[g])):
                shown[g] = COMPLEMENTARY
    return shown


def _count_cell(shown: str, count: float, total_shown: str, total: float) -> str:
    """A count with its percentage of ``total``, when both are shown as they are."""
    if shown != str(int(count)) or total_shown != str(int(total)) or total <= 0:
        return shown
    return f"{shown} ({100 * count / total:.1f}%)"


def leaderboard_html(table: pl.DataFrame, rows: int = 20, *, test_shown: bool = True) -> str:
    """The leaderboard's best ``rows`` configurations per outcome, the chosen one marked;
    the test metrics a dash when not ``test_shown`` or withheld from the table (null: a test
    split too small to show them).

    >>> from cohortflow import models
    >>> t = pl.DataFrame({"outcome": ["o"], "rank": [1], "best": [True], "model": ["m"],
    ...     "feature_set": ["all"], "config_id": ["abc"], "cv_auroc": [0.7],
    ...     **{f"test_{c}": [0.5] for c in models.TEST_COLUMNS}})
    >>> "<td>m ★</td>" in leaderboard_html(t), "0.500" in leaderboard_html(t, test_shown=False)
    (True, False)
    >>> "0.500" in leaderboard_html(t.with_columns(test_auroc=None))
    False
    """
    head = ("Outcome", "Rank", "Model", "Features", "Id", "CV AUROC", "Test AUROC (95% CI)",
            "AUPRC", "Brier", "Scaled Brier", "Cal. intercept", "Cal. slope", "E-avg")
    body = []
    for r in table.filter(pl.col("rank") <= rows).iter_rows(named=True):
        star = " ★" if r["best"] else ""
        cells = [html.escape(str(r["outcome"])), str(r["rank"]),
                 html.escape(r["model"]) + star, html.escape(r["feature_set"]),
                 f"<code>{r['config_id']}</code>", f"{r['cv_auroc']:.3f}"]
        rest = ("auprc", "brier", "scaled_brier", "calibration_intercept",
                "calibration_slope", "e_avg")
        if test_shown and r["test_auroc"] is not None:
            cells += [f"{r['test_auroc']:.3f} ({r['test_auroc_ci_low']:.3f}–"
                      f"{r['test_auroc_ci_high']:.3f})", *(f"{r['test_' + c]:.3f}" for c in rest)]
        else:
            cells += ["—"] * (1 + len(rest))
        body.append("<tr>" + "".join(f"<td>{c}</td>" if i < 5 else f"<td class=n>{c}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join(body) + "</table>")


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


def attrition_html(attrition: list[dict[str, Any]], disclosure: Disclosure) -> str:
    """The cohort's attrition, each step's persons shown through the gate (a drop smaller
    than ``min_cell_count`` hides the count after it, :meth:`Disclosure.steps`).

    >>> from cohortflow.layout import Layout
    >>> attrition_html([{"step": "entry", "subjects": 300}, {"step": "age", "subjects": 295}],
    ...                Disclosure(Layout.of("results", "s"), 11))
    '<table><tr><th>Step</th><th>Persons</th></tr><tr><td>entry</td><td class=n>300</td></tr>\
<tr><td>age</td><td class=n>*</td></tr></table>'
    """
    shown = disclosure.steps([step["subjects"] for step in attrition])
    rows = "".join(
        f"<tr><td>{html.escape(step['step'])}</td><td class=n>{html.escape(count)}</td></tr>"
        for step, count in zip(attrition, shown, strict=True))
    return f"<table><tr><th>Step</th><th>Persons</th></tr>{rows}</table>"


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


def board_metric(select_by: str) -> str:
    """The CV metric that chose the models (``model.select_by``), as a reader calls it.

    >>> board_metric("brier")
    'Brier score'
    """
    return {"auroc": "AUROC", "auprc": "AUPRC", "brier": "Brier score"}[select_by]
