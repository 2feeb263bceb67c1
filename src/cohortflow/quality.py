"""Data-quality warnings of the ingest, kept as data so that every run shows them.

The OMOP ingest (:mod:`cohortflow.omop`) writes ``<store>/metadata/quality.json``::

    {"counts": "marked", "extract_date": "2019-07-03",
     "warnings": [{"table": "observation_period", "field": "person_id",
                   "check": "unknown_person", "count": 2649,
                   "message": "observation_period: {#2649} rows whose ..."}, ...]}

``count`` is exact, and so is every count in ``message``, marked ``{#n}`` (the event store
holds person-level data and never leaves the compute); whoever shows a message suppresses
its marked counts at the study's ``min_cell_count`` then (:func:`render`), so the store does
not depend on the threshold and changing it reruns no ingest.  (A record of an older store
has ``min_cell_count`` instead of ``counts``: its messages were suppressed when written.)
The warnings are sorted
by (table, field, check, count, message), so the file is a pure function of the source.
``extract_date`` is the latest ``observation_period_end_date`` of the persons kept: the
date "in the future" is judged against, never the clock.

``cohortflow run`` prints them once Snakemake returns (:func:`show`); the ``data_quality``
step writes the copy meant to leave the compute (:func:`share`, every count suppressed),
which the report lists in its data-quality section.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cohortflow import events

if TYPE_CHECKING:
    from cohortflow.disclosure import Disclosure
from cohortflow.errors import CohortflowError, StoreError
from cohortflow.layout import Layout
from cohortflow.privacy import suppress, suppress_value

log = logging.getLogger(__name__)

CHECKS = {
    "missing_table": "table not found in the source: the store has none of its events",
    "empty_table": "empty table (or a placeholder without OMOP columns)",
    "unknown_person": "rows whose person_id is not in person: dropped, counted per table",
    "end_before_start": "rows whose end date is before their start date (kept)",
    "after_extract": "events dated after the extract date (kept)",
    "implausible_birth_year": "persons with year_of_birth before 1850 or after the extract's "
                              "year (kept)",
    "before_birth": "events before the person's birth (kept below 1% of a table)",
    "after_death": "events over 60 days after death (kept below 1% of a table)",
    "unknown_concept": "events whose concept id the vocabulary does not hold (no "
                       "description, no ancestors)",
}
"""Every check's name, and what a warning of it means."""


@dataclass(frozen=True, order=True)
class Finding:
    """One data-quality warning: the table and field it is about, the check, the exact
    count (rows, events or persons, as the message says) and the message, whose counts
    are exact and marked (:func:`mark`), to be suppressed when shown (:func:`render`)."""

    table: str
    field: str
    check: str
    count: int
    message: str


_MARKED = re.compile(r"\{#(\d+)\}")


def mark(count: int) -> str:
    """A count as a stored message holds it: exact, marked for :func:`render`.

    >>> mark(7)
    '{#7}'
    """
    return f"{{#{int(count)}}}"


def render(message: str, min_cell_count: int) -> str:
    """A stored message as it may be shown: each marked count below ``min_cell_count``
    suppressed (``<k``), the others plain.

    >>> render("death: {#7} event(s) in {#40} row(s)", 11)
    'death: <11 event(s) in 40 row(s)'
    """
    return _MARKED.sub(lambda m: suppress(int(m[1]), min_cell_count), message)


def quality_path(store: Path) -> Path:
    """Where an event store keeps its data-quality warnings."""
    return Path(store) / "metadata" / "quality.json"


def write(store: Path, findings: list[Finding], extract_date: date | None) -> None:
    """Write ``metadata/quality.json`` of ``store``, warnings sorted."""
    events.write_json({"counts": "marked",
                       "extract_date": extract_date.isoformat() if extract_date else None,
                       "warnings": [asdict(f) for f in sorted(findings)]},
                      quality_path(store))


def read(store: Path) -> dict[str, Any] | None:
    """The store's quality record; None for a store without one (a MEDS dataset written
    by another ETL, or an event store from before quality was recorded)."""
    path = quality_path(store)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("counts") != "marked":
            int(record["min_cell_count"])
        for warning in record["warnings"]:
            Finding(**warning)  # each warning has exactly the fields of one
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}: not a data-quality record of this tool ({exc}); fix: "
                         "rerun `cohortflow ingest` (or the study's ingest step)") from None
    assert isinstance(record, dict)
    return record


def shared(record: dict[str, Any] | None, min_cell_count: int) -> dict[str, Any]:
    """The quality record as it may leave the compute: every count suppressed below
    ``min_cell_count``, those in messages too (:func:`render`).  An older record's message,
    suppressed when written under a smaller threshold, is replaced by the check's
    description.

    >>> rec = {"counts": "marked", "extract_date": None, "warnings": [
    ...     {"table": "death", "field": "death_date", "check": "after_extract", "count": 7,
    ...      "message": "death: {#7} event(s) with death_date after the extract date"}]}
    >>> shared(rec, 11)["warnings"][0]["message"], shared(rec, 5)["warnings"][0]["message"]
    ('death: <11 event(s) with death_date after the extract date', \
'death: 7 event(s) with death_date after the extract date')

    >>> rec = {"min_cell_count": 5, "extract_date": None, "warnings": [
    ...     {"table": "death", "field": "death_date", "check": "after_extract", "count": 7,
    ...      "message": "death: 7 event(s) with death_date after the extract date"}]}
    >>> shared(rec, 11)["warnings"][0]["count"], shared(rec, 5)["warnings"][0]["count"]
    ('<11', 7)
    >>> shared(rec, 11)["warnings"][0]["message"]
    'death: <11 events dated after the extract date (kept)'
    >>> shared(None, 11)
    {'recorded': False, 'warnings': []}
    """
    if record is None:
        return {"recorded": False, "warnings": []}
    marked = record.get("counts") == "marked"
    finer = not marked and int(record["min_cell_count"]) < min_cell_count
    warnings = []
    for w in record["warnings"]:
        message = render(w["message"], min_cell_count) if marked else w["message"]
        if finer:
            shown = f"{suppress(w['count'], min_cell_count)} " if w["count"] else ""
            message = f"{w['table']}: {shown}{CHECKS.get(w['check'], w['check'])}"
        warnings.append({**w, "count": suppress_value(w["count"], min_cell_count),
                         "message": message})
    return {"recorded": True, "extract_date": record.get("extract_date"),
            "warnings": warnings}


def share(store: Path, out: Path, disclosure: Disclosure) -> None:
    """Write the shareable copy of ``store``'s quality record to ``out`` through the
    disclosure gate (the report's input; see :func:`shared`)."""
    disclosure.write_json(out, shared(read(store), disclosure.min_cell_count))


def lines(record: dict[str, Any]) -> list[str]:
    """Console lines of a :func:`shared` record: a heading, then one line per warning.

    >>> lines({"recorded": True, "extract_date": "2019-07-03", "warnings": [
    ...     {"message": "death: empty table"}]})
    ['data quality: 1 warning from the ingest (extract date 2019-07-03):', '  - death: empty table']
    >>> lines({"recorded": True, "warnings": []})
    []
    """
    warnings = record.get("warnings") or []
    if not warnings:
        return []
    n = len(warnings)
    when = f" (extract date {record['extract_date']})" if record.get("extract_date") else ""
    return [f"data quality: {n} warning{'s' if n != 1 else ''} from the ingest{when}:",
            *(f"  - {w['message']}" for w in warnings)]


def show(study: Path | None, results: Path, stream: IO[str] | None = None) -> None:
    """After ``cohortflow run``: print the study's ingest warnings (counts suppressed at
    the study's ``min_cell_count``), if its event store has any.  Never fails the run."""
    from cohortflow.study import load_study

    try:
        parsed = load_study(study)
        store = Layout.of(results, parsed.name).store
        text = lines(shared(read(store), parsed.min_cell_count))
    except CohortflowError as exc:
        log.warning("data quality not shown: %s", exc)
        return
    if text:
        print("\n".join(text), file=stream or sys.stderr, flush=True)
