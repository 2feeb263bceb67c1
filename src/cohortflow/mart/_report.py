"""The de-identification report of a data mart as one offline HTML page: who was exported
(study, cohort, persons), the k-anonymity reached, how each quasi-identifier was
generalised, who was suppressed, the date shift, every transformation, the 18 HIPAA Safe
Harbor identifiers and how each is handled, the exported tables' row counts and the policy.

The page renders a record built by the export (``deid_report.json``, format
:data:`FORMAT`) and nothing else: its counts arrive already suppressed (an int, or a string
such as ``"<11"``) and are shown as given, never recomputed.  Every value is escaped; the
page has inline CSS only, no script, and loads nothing.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cohortflow.html_style import BASE_CSS, document

FORMAT = "cohortflow-deid-report/1"
"""The record format this page renders."""

SAFE_HARBOR_IDENTIFIERS = 18
"""HIPAA §164.514(b)(2) lists 18 identifiers; the record says how each is handled."""

_CSS = BASE_CSS + """th, td { vertical-align: top; } code { font-size: .9rem; }
tr.unmet td { color: #a00; font-weight: 600; }
"""


def shown(value: Any) -> str:
    """A value of the record as page text, escaped: a count as given (``"<11"`` stays
    ``&lt;11``), nothing as a dash, a list or mapping as compact JSON.

    >>> shown(1234), shown("<11"), shown(None), shown(["a", 1])
    ('1234', '&lt;11', '—', '[&quot;a&quot;, 1]')
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping | list | tuple):
        return html.escape(json.dumps(value, sort_keys=True, ensure_ascii=False))
    return html.escape(str(value))


def share(value: Any) -> str:
    """A share (0-1) as a percentage; anything else (already suppressed) as given.

    >>> share(0.004), share(0), share("<0.1%")
    ('0.4%', '0.0%', '&lt;0.1%')
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{100 * value:.1f}%"
    return shown(value)


def _rows(record: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The list of rows ``record[key]`` (none when absent)."""
    rows = record.get(key) or []
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise ValueError(f"deid report: {key!r} must be a list of objects, got {rows!r}; "
                         "fix: rebuild the mart (cohortflow mart) to rewrite deid_report.json")
    return rows


def _table(headers: Sequence[str], rows: Sequence[Mapping[str, Any]],
           keys: Sequence[str], numeric: frozenset[str] = frozenset(),
           css: str = "") -> str:
    """An HTML table of ``rows``' ``keys`` under ``headers``; ``numeric`` keys right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td class=n>{shown(r.get(k))}</td>" if k in numeric
                         else f"<td>{shown(r.get(k))}</td>" for k in keys) + "</tr>"
        for r in rows)
    attribute = f' class="{css}"' if css else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"


def _flat(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A policy's settings as (dotted key, value) pairs, keys sorted; lists kept whole.

    >>> _flat({"b": {"c": 1, "a": [2]}, "a": None})
    [('a', None), ('b.a', [2]), ('b.c', 1)]
    """
    if isinstance(node, Mapping) and node:
        return [pair for key in sorted(node, key=str)
                for pair in _flat(node[key], f"{prefix}.{key}" if prefix else str(key))]
    return [(prefix, node)]


def header_html(record: Mapping[str, Any]) -> str:
    """The page's title and its summary table: study, cohort, persons, k required and
    reached (the row marked ``unmet`` when the k reached is a number below the k)."""
    k, reached = record.get("k"), record.get("k_reached")
    unmet = (isinstance(k, int) and isinstance(reached, int) and reached < k)
    quasi = ", ".join(str(q) for q in record.get("quasi_identifiers") or [])
    return f"""<h1>De-identification report: {shown(record.get("study"))} /
{shown(record.get("cohort"))}</h1>
<p class=note>{shown(record.get("format"))}. Counts below {shown(record.get("min_cell_count"))}
are shown as &lt;{shown(record.get("min_cell_count"))}, as the export wrote them.</p>
<table class=summary>
<tr><th>Study</th><td>{shown(record.get("study"))}</td></tr>
<tr><th>Cohort</th><td>{shown(record.get("cohort"))}</td></tr>
<tr><th>Persons in the mart</th><td class=n>{shown(record.get("persons"))}</td></tr>
<tr id=k{' class=unmet' if unmet else ''}><th>k required / k reached</th>
<td class=n>{shown(k)} / {shown(reached)}</td></tr>
<tr><th>Quasi-identifiers</th><td>{html.escape(quasi) or "—"}</td></tr>
</table>"""


def suppression_html(record: Mapping[str, Any]) -> str:
    """The suppression line: persons whose quasi-identifiers were suppressed, and their share."""
    part = record.get("suppression") or {}
    return (f"<p id=suppression>Suppressed: {shown(part.get('persons'))} persons "
            f"({share(part.get('share'))} of the mart). "
            f"<span class=note>{shown(part.get('description'))}</span></p>")


def date_shift_html(record: Mapping[str, Any]) -> str:
    """The date shift: its range in days and what it does."""
    part = record.get("date_shift") or {}
    return (f"<p id=date-shift>Every date of a person is shifted by the same number of days, "
            f"from {shown(part.get('min_days'))} to {shown(part.get('max_days'))} days. "
            f"<span class=note>{shown(part.get('description'))}</span></p>")


def policy_html(record: Mapping[str, Any]) -> str:
    """The policy as validated, one setting per row (dotted keys, values as JSON)."""
    policy = record.get("policy")
    if not policy:
        return "<p class=note>No policy recorded.</p>"
    rows = "".join(f"<tr><td><code>{html.escape(key)}</code></td><td>{shown(value)}</td></tr>"
                   for key, value in _flat(policy))
    return f"<table class=policy><tr><th>Setting</th><th>Value</th></tr>{rows}</table>"


def render_html(record: dict[str, Any]) -> str:
    """The de-identification report page of ``record`` (``deid_report.json``).

    >>> page = render_html({"study": "demo", "cohort": "asthma", "k": 11, "k_reached": 14,
    ...                     "persons": "<11"})
    >>> "<td class=n>11 / 14</td>" in page, "&lt;11" in page, "<script" in page
    (True, True, False)
    """
    safe_harbor = _rows(record, "safe_harbor")
    listed = len(safe_harbor)
    missing = ("" if listed == SAFE_HARBOR_IDENTIFIERS else
               f"<p class=note>The record lists {listed} of the {SAFE_HARBOR_IDENTIFIERS} "
               "identifiers.</p>")
    title = (f"cohortflow de-identification report: {shown(record.get('study'))} /\n"
             f"{shown(record.get('cohort'))}")
    return document(title, _CSS, f"""\
{header_html(record)}
<h2>Generalisation</h2>
{_table(("Quasi-identifier", "Level", "Generalised to"), _rows(record, "generalisation"),
        ("column", "level", "description"), css="generalisation")}
<h2>Suppression</h2>
{suppression_html(record)}
<h2>Date shift</h2>
{date_shift_html(record)}
<h2>Transformations</h2>
{_table(("Table", "Column", "Action", "Detail"), _rows(record, "transformations"),
        ("table", "column", "action", "detail"), css="transformations")}
<h2>HIPAA Safe Harbor identifiers</h2>
<p class=note>The 18 identifiers of 45 CFR §164.514(b)(2), in its order, and how the mart
handles each.</p>
{missing}{_table(("Identifier", "Handling"), safe_harbor, ("identifier", "handling"),
                 css="safe-harbor")}
<h2>Tables</h2>
{_table(("Table", "Rows"), _rows(record, "tables"), ("table", "rows"),
        numeric=frozenset({"rows"}), css="tables")}
<h2>Policy</h2>
{policy_html(record)}
""")


def write_html(record: dict[str, Any], path: Path) -> None:
    """Write ``record``'s page to ``path``, readable by its owner only (0o600), created that
    way rather than narrowed after: the page describes person-level data handed over."""
    data = render_html(record).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)  # an existing file keeps its mode through O_CREAT
