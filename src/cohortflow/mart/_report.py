"""The de-identification record as one offline HTML page: every part of the record as an
escaped table, nothing fetched from the network."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return f"<code>{html.escape(json.dumps(value, sort_keys=True))}</code>"
    return html.escape("" if value is None else str(value))


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns)
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(record: dict[str, Any]) -> str:
    """The record as an HTML page (every value escaped).

    >>> "<td>&lt;11</td>" in render_html({"study": "s", "persons": "<11"})
    True
    """
    title = f"De-identification record: {record.get('study', '')} / {record.get('cohort', '')}"
    summary = [{"field": k, "value": v} for k, v in record.items()
               if not isinstance(v, list | dict)]
    sections = [("Summary", _table(summary))]
    for key, value in record.items():
        if isinstance(value, dict):
            sections.append((key, _table([{"field": k, "value": v} for k, v in value.items()])))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            sections.append((key, _table(value)))
        elif isinstance(value, list):
            sections.append((key, _table([{"value": v} for v in value])))
    body = "".join(f"<h2>{html.escape(name.replace('_', ' '))}</h2>{table}"
                   for name, table in sections)
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:"
             "collapse;margin-bottom:1em}td,th{border:1px solid #bbb;padding:.2em .5em;"
             "text-align:left;vertical-align:top}")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title><style>{style}</style></head><body><h1>"
            f"{html.escape(title)}</h1>{body}</body></html>\n")


def write_html(record: dict[str, Any], path: Path) -> None:
    """Write :func:`render_html` of ``record`` to ``path``, readable by its owner only."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_html(record))
    tmp.chmod(0o600)
    tmp.replace(path)
