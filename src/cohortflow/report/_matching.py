"""The matched case-control section of a matched analysis: the design, its counts through
the disclosure gate, the balance table (standardised mean differences before and after
matching) and what the design does to the evaluation."""

from __future__ import annotations

import html
from typing import Any

from cohortflow import privacy
from cohortflow.disclosure import Disclosure

HIDDEN = "—"
"""Shown for a mean or an SMD of a group smaller than ``min_cell_count``."""


def _design(spec: dict[str, Any]) -> str:
    """The matching constraints in words.

    >>> _design({"controls": 4, "sex": True, "age_years": 1.0, "index_days": 90,
    ...          "observation_days": None})
    'sex, age at index (± 1 years), index date (± 90 days)'
    """
    parts = ["sex"] if spec["sex"] else []
    if spec["age_years"] is not None:
        parts.append(f"age at index (± {spec['age_years']:g} years)")
    if spec["index_days"] is not None:
        parts.append(f"index date (± {spec['index_days']} days)")
    if spec["observation_days"] is not None:
        parts.append(f"prior observation (± {spec['observation_days']} days)")
    return ", ".join(parts)


def match_counts_shown(counts: dict[str, int], disclosure: Disclosure) -> dict[str, str]:
    """The matching counts as they may be shown.

    The matched cases (those with ``k`` controls and those with fewer) add up to the cases
    of Table 1 and the matched controls to its controls, both shown there: so the two are
    categories of a shown total (a lone small one hides the other, ``*``).  The cases with
    no control are the rest of all cases: when they are few, the total is hidden (``*``).
    The controls of the cases with fewer than ``k`` are at least as many as those cases, so
    whenever they are few the cases with fewer are too, and ``k`` times the cases with ``k``
    is hidden with them.

    >>> from cohortflow.layout import Layout
    >>> gate = Disclosure(Layout.of("results", "s"), 11)
    >>> shown = match_counts_shown({"cases": 50, "cases_with_k": 45, "cases_with_fewer": 3,
    ...     "cases_with_none": 2, "controls": 183}, gate)
    >>> [shown[k] for k in ("cases", "cases_with_k", "cases_with_fewer", "cases_with_none")]
    ['*', '*', '<11', '<11']
    """
    matched = disclosure.categories({"cases_with_k": counts["cases_with_k"],
                                     "cases_with_fewer": counts["cases_with_fewer"]})
    none = counts["cases_with_none"]
    cases = disclosure.count(counts["cases"])
    if privacy.small(none, disclosure.min_cell_count) and cases == str(counts["cases"]):
        cases = privacy.COMPLEMENTARY
    return {"cases": cases, **matched, "cases_with_none": disclosure.count(none),
            "controls": disclosure.count(counts["controls"])}


def _number(value: float | None, digits: int) -> str:
    return HIDDEN if value is None else f"{value:.{digits}f}"


def balance_html(balance: list[dict[str, Any]], counts: dict[str, int],
                 disclosure: Disclosure) -> str:
    """The balance table: per variable the cases' mean, the controls' mean before matching
    (every label-false row) and after (the matched controls), and the standardised mean
    differences.  Means and SMDs of a group smaller than ``min_cell_count`` are hidden."""
    least = disclosure.min_cell_count
    matched_cases = counts["cases"] - counts["cases_with_none"]
    cases_hidden = privacy.small(counts["cases"], least)
    after_hidden = (privacy.small(matched_cases, least)
                    or privacy.small(counts["controls"], least))
    rows = []
    for row in balance:
        digits = 3 if row["variable"] == "Male share" else 1
        cells = [
            _number(None if cases_hidden else row["cases_mean"], digits),
            _number(row["controls_mean_before"], digits),
            _number(None if after_hidden else row["controls_mean_after"], digits),
            _number(None if cases_hidden else row["smd_before"], 2),
            _number(None if after_hidden else row["smd_after"], 2),
        ]
        rows.append(f"<tr><td>{html.escape(row['variable'])}</td>"
                    + "".join(f"<td class=n>{c}</td>" for c in cells) + "</tr>")
    return ("<table><tr><th>Variable</th><th>Cases, mean</th><th>Controls before, mean"
            "</th><th>Matched controls, mean</th><th>SMD before</th><th>SMD after</th></tr>"
            + "".join(rows) + "</table>")


def matching_html(record: dict[str, Any], disclosure: Disclosure, level: int = 2) -> str:
    """A matched analysis's section: the 1:k design, its counts through the gate, the
    balance table and the evaluation note (prevalence set by design)."""
    spec, counts = record["matching"], record["counts"]
    k = spec["controls"]
    shown = match_counts_shown(counts, disclosure)
    fewer = f"1 to {k - 1} controls" if k > 2 else "1 control"
    h = f"h{level}"
    count_rows = "".join(
        f"<tr><td>{name}</td><td class=n>{html.escape(shown[key])}</td></tr>"
        for name, key in (("Cases", "cases"), (f"Cases with {k} controls", "cases_with_k"),
                          (f"Cases with {fewer}", "cases_with_fewer"),
                          ("Cases with no control (left out)", "cases_with_none"),
                          ("Matched controls", "controls"))
        if key != "cases_with_fewer" or k > 1)
    return f"""<{h}>Matched case-control sampling</{h}>
<p>Each case (an episode with the outcome in the time at risk) was matched to up to {k}
controls (1:{k}) of the same analysis without the outcome, each used once, on
{html.escape(_design(spec))}; the draw is fixed by the study seed.  The models, the sweep and
Table 1 use the matched rows only.</p>
<table><tr><th>Matching</th><th>Persons</th></tr>{count_rows}</table>
<p>Balance of the cases with every control candidate (before) and with the matched
controls (after): standardised mean differences (SMD) below 0.1 are usually taken as
balanced.  Means and SMDs of a group under {disclosure.min_cell_count} are not shown.</p>
{balance_html(record["balance"], counts, disclosure)}
<p class=note><strong>Evaluation under matching.</strong> The outcome prevalence of these
rows is set by the 1:{k} design (about 1 case in {k + 1} rows), not by the population: the
AUROC compares cases with their matched controls, while calibration, AUPRC, the Brier score
and the positive predictive value (PPV) do not carry over to the population, and the
matched variables cannot discriminate within these rows.</p>
"""
