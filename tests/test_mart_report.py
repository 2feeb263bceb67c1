"""The de-identification report page (``cohortflow.mart._report``) on a hand-built record:
every section, escaping, counts shown as the export suppressed them, nothing fetched; and
the page in a real headless chromium (no console error, no request, the k row visible)."""

from __future__ import annotations

import base64
import html
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from cohortflow.mart._report import render_html, write_html
from tests.test_report_browser import page

HOSTILE = '<script>alert("x")</script><img src=https://example.org/t.png onerror=1>&'

SAFE_HARBOR = [
    "Names", "Geographic subdivisions smaller than a state", "All elements of dates (except year)",
    "Telephone numbers", "Fax numbers", "Email addresses", "Social security numbers",
    "Medical record numbers", "Health plan beneficiary numbers", "Account numbers",
    "Certificate/license numbers", "Vehicle identifiers and serial numbers",
    "Device identifiers and serial numbers", "Web URLs", "IP addresses",
    "Biometric identifiers", "Full-face photographs and comparable images",
    "Any other unique identifying number, characteristic, or code"]


def record(**changes: Any) -> dict[str, Any]:
    """A record as the export writes it (format cohortflow-deid-report/1), with changes."""
    base: dict[str, Any] = {
        "format": "cohortflow-deid-report/1", "study": "demo", "cohort": "asthma",
        "min_cell_count": 11, "k": 11, "k_reached": 14, "persons": 1234,
        "quasi_identifiers": ["year_of_birth", "gender_concept_id", "race_concept_id",
                              "ethnicity_concept_id", "zip3"],
        "generalisation": [
            {"column": "year_of_birth", "level": 1, "description": "5-year bands"},
            {"column": "gender_concept_id", "level": 0, "description": "kept"},
            {"column": "race_concept_id", "level": 0, "description": "kept"},
            {"column": "ethnicity_concept_id", "level": 0, "description": "kept"},
            {"column": "zip3", "level": 0, "description": "first three digits"}],
        "suppression": {"persons": "<11", "share": 0.004,
                        "description": "quasi-identifiers set to null"},
        "date_shift": {"min_days": -365, "max_days": 365,
                       "description": "one offset per person, keyed"},
        "transformations": [
            {"table": "person", "column": "person_id", "action": "pseudonymised",
             "detail": "keyed HMAC-SHA256 of the id, 63-bit integer"},
            {"table": "condition_occurrence", "column": "condition_source_value",
             "action": "dropped", "detail": "*_source_value columns are dropped"}],
        "safe_harbor": [{"identifier": name, "handling": f"handled: {i}"}
                        for i, name in enumerate(SAFE_HARBOR)],
        "tables": [{"table": "person", "rows": 1234}, {"table": "death", "rows": "<11"},
                   {"table": "measurement", "rows": 56789}],
        "policy": {"k": 11, "date_shift_days": 365, "keep_source_values": False,
                   "quasi_identifiers": ["year_of_birth", "zip3"],
                   "generalise": {"year_of_birth": 5}},
    }
    base.update(changes)
    return base


def text(page_html: str) -> str:
    """The page's visible text, one space between words."""
    bare = re.sub(r"<style>.*?</style>|<[^>]+>", " ", page_html, flags=re.S)
    return " ".join(html.unescape(bare).split())


def test_every_section_is_on_the_page() -> None:
    page_html = render_html(record())
    words = text(page_html)
    for heading in ("Generalisation", "Suppression", "Date shift", "Transformations",
                    "HIPAA Safe Harbor identifiers", "Tables", "Policy"):
        assert f"<h2>{heading}</h2>" in page_html, heading
    assert "Study demo" in words and "Cohort asthma" in words
    assert "Persons in the mart 1234" in words
    assert "k required / k reached 11 / 14" in words
    assert "year_of_birth 1 5-year bands" in words and "zip3 0 first three digits" in words
    assert "Suppressed: <11 persons (0.4% of the mart)" in words
    assert "from -365 to 365 days" in words
    assert ("person person_id pseudonymised keyed HMAC-SHA256 of the id, 63-bit integer"
            in words)
    assert len(re.findall(r"<tr><td>[^<]*</td><td>handled: \d+</td></tr>", page_html)) == 18
    assert all(name in page_html for name in ("Names", "Web URLs", "IP addresses"))
    assert "The record lists" not in words  # all 18 are there
    assert "measurement 56789" in words and "death <11" in words
    assert "generalise.year_of_birth 5" in words and "keep_source_values no" in words
    assert 'quasi_identifiers ["year_of_birth", "zip3"]' in words


def test_counts_are_shown_as_the_export_suppressed_them() -> None:
    page_html = render_html(record(persons="<11", k_reached=3))
    assert "<td class=n>&lt;11</td>" in page_html  # the persons, as given
    assert "<td class=n>11 / 3</td>" in page_html
    assert 'id=k class=unmet' in page_html  # a k not reached is marked, not hidden
    assert "<td class=n>1234</td>" in page_html  # the person table's rows: never recomputed


def test_every_value_is_escaped_and_nothing_is_fetched_or_run() -> None:
    hostile = record(study=HOSTILE, cohort=HOSTILE, persons=HOSTILE,
                     generalisation=[{"column": HOSTILE, "level": HOSTILE,
                                      "description": HOSTILE}],
                     transformations=[{"table": HOSTILE, "column": "c", "action": "a",
                                       "detail": HOSTILE}],
                     safe_harbor=[{"identifier": HOSTILE, "handling": HOSTILE}],
                     tables=[{"table": HOSTILE, "rows": HOSTILE}],
                     suppression={"persons": HOSTILE, "share": HOSTILE,
                                  "description": HOSTILE},
                     date_shift={"min_days": HOSTILE, "max_days": 1, "description": HOSTILE},
                     policy={HOSTILE: HOSTILE})
    page_html = render_html(hostile)
    assert "<script" not in page_html.lower() and "<img" not in page_html.lower()
    assert "&lt;script&gt;" in page_html
    # no tag loads anything (no src, href or url() at all): a URL is only escaped text
    tags = re.findall(r"<[a-zA-Z!][^<>]*>", page_html)
    assert {t.split()[0].strip("<>").lower() for t in tags} <= {
        "!doctype", "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table",
        "tr", "th", "td", "span", "code"}
    assert not [t for t in tags if re.search(r"\b(src|href)\s*=|url\(", t)]
    assert "url(" not in page_html and "@import" not in page_html
    assert "https://example.org" in html.unescape(text(page_html))  # shown, as text
    assert "The record lists 1 of the 18 identifiers" in text(page_html)


def test_a_record_with_a_malformed_section_names_it() -> None:
    with pytest.raises(ValueError, match="'tables' must be a list of objects"):
        render_html(record(tables={"person": 3}))


def test_write_html_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "mart" / "deid_report.html"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)
    write_html(record(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == render_html(record())
    write_html(record(), tmp_path / "new" / "deid_report.html")
    assert stat.S_IMODE((tmp_path / "new" / "deid_report.html").stat().st_mode) == 0o600


@pytest.mark.browser
def test_the_page_loads_offline_in_chromium_with_the_k_row_visible(tmp_path: Path) -> None:
    path = tmp_path / "deid_report.html"
    write_html(record(study=HOSTILE), path)
    with page(tmp_path) as tools:
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=path.resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        seen = json.loads(tools.call("Runtime.evaluate", returnByValue=True, expression=(
            "(() => { const r = document.getElementById('k'); const b ="
            " r.getBoundingClientRect(); return JSON.stringify({text: r.innerText,"
            " height: b.height, width: b.width, top: b.top, shown:"
            " getComputedStyle(r).visibility, tables: document.querySelectorAll('table')"
            ".length, scripts: document.scripts.length}); })()"))["result"]["value"])
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    assert tools.errors() == []
    requested = tools.requested()
    assert all(u.startswith("file:") for u in requested), requested
    assert " ".join(seen["text"].split()) == "k required / k reached 11 / 14"
    assert seen["height"] > 10 and seen["width"] > 100 and 0 <= seen["top"] < 900
    assert seen["shown"] == "visible" and seen["scripts"] == 0 and seen["tables"] >= 6
    png = base64.b64decode(shot["data"])
    (tmp_path / "deid_report.png").write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
