"""The monitoring page of three scoring runs in a real headless browser (Debian `chromium`,
through the DevTools client of :mod:`tests.test_report_browser`): it loads without console
errors or network requests, its flags section is the first thing on the screen, its three
plots show, and a screenshot is taken.  Skips without chromium; fails under CI=true."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from cohortflow import scoring
from cohortflow.scoring import _monitor_html
from tests.test_monitor import COLUMNS, LAB, K, sample, series
from tests.test_report_browser import page

pytestmark = [pytest.mark.browser]


def test_the_monitoring_page_shows_its_flags_and_plots(tmp_path: Path) -> None:
    x, s = sample(5000, seed=1)
    runs = series(scoring.reference_profile(x, COLUMNS, s, K))
    monitor = tmp_path / "monitor.html"
    monitor.write_text(_monitor_html.render(runs, title="asthma exacerbation"))
    with page(tmp_path) as tools:
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=monitor.resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        seen = json.loads(tools.call("Runtime.evaluate", returnByValue=True, expression="""
            JSON.stringify((() => {
              const flags = document.getElementById('flags');
              const box = flags.getBoundingClientRect();
              const style = getComputedStyle(flags);
              return {top: box.top, height: box.height, width: box.width,
                      visible: style.display !== 'none' && style.visibility === 'visible',
                      border: style.borderTopColor, text: flags.innerText,
                      rows: [...flags.querySelectorAll('tr.drift, tr.watch')].length,
                      plots: [...document.querySelectorAll('svg')].map(s => ({
                        label: s.getAttribute('aria-label'),
                        height: s.getBoundingClientRect().height,
                        points: s.querySelectorAll('circle').length}))};
            })())""")["result"]["value"])
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    assert tools.errors() == []
    requested = tools.requested()
    assert all(u.startswith(("file:", "data:")) for u in requested), requested
    assert seen["visible"] and seen["height"] > 100 and seen["width"] > 600
    assert seen["top"] < 200  # the first thing below the title
    assert seen["border"] == "rgb(179, 38, 30)"  # the drift colour: a feature drifted
    assert "Flags of the latest run (2025-03-28)" in seen["text"]
    assert LAB in seen["text"] and "PROCEDURE//4" in seen["text"]
    assert seen["rows"] == 3  # the lab's PSI, a vanished code, new codes
    assert [(p["label"], p["points"]) for p in seen["plots"]] == [
        ("Score PSI against training", 3), ("Mean predicted risk", 3),
        ("Prospective AUROC (95% CI), where outcomes are known", 2)]
    assert all(p["height"] > 150 for p in seen["plots"])
    png = base64.b64decode(shot["data"])
    screenshot = tmp_path / "monitor.png"
    screenshot.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 30_000
