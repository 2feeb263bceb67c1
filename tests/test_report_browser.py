"""The demo study report in a real headless browser (Debian `chromium`), driven through the
DevTools protocol: it loads without console errors or network requests, its plots show, and
a screenshot is taken.  Skips without chromium; fails under CI=true."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--remote-debugging-port=0", "--window-size=1280,900"]


def chromium_binary() -> str:
    found = next((b for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
    if found is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class DevTools:
    """A minimal DevTools-protocol client for one page: commands and the events seen."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self.events.append(message)

    def errors(self) -> list[dict[str, Any]]:
        """The page's uncaught exceptions, console errors and assertions, and logged errors."""
        return [e for e in self.events if e.get("method") == "Runtime.exceptionThrown"
                or (e.get("method") == "Runtime.consoleAPICalled"
                    and e["params"]["type"] in ("error", "assert"))
                or (e.get("method") == "Log.entryAdded"
                    and e["params"]["entry"]["level"] == "error")]

    def requested(self) -> list[str]:
        """Every URL the page asked for."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def wait_for(self, method: str) -> dict[str, Any]:
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(json.loads(self.socket.recv(timeout=60)))


@contextlib.contextmanager
def page(tmp_path: Path) -> Iterator[DevTools]:
    profile = tmp_path / "profile"
    process = subprocess.Popen([chromium_binary(), *FLAGS, f"--user-data-dir={profile}",
                                "about:blank"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(600):  # chromium writes its port once it listens
            if port_file.is_file() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as answer:
            targets = json.loads(answer.read())
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        from websockets.sync.client import connect

        with connect(url, max_size=None, open_timeout=30) as socket:
            yield DevTools(socket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_report_loads_without_errors_shows_its_plots_and_screenshots(
        laptop_run: tuple, tmp_path: Path) -> None:
    results, _ = laptop_run
    report = (results / "report.html").resolve()
    with page(tmp_path) as tools:
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=report.as_uri())
        tools.wait_for("Page.loadEventFired")
        images = json.loads(tools.call("Runtime.evaluate", returnByValue=True, expression=(
            "JSON.stringify([...document.images].map(i => ({alt: i.alt, complete: i.complete,"
            " width: i.naturalWidth, shown: i.getBoundingClientRect().height})))"))
            ["result"]["value"])
        headings = tools.call("Runtime.evaluate", returnByValue=True, expression=(
            "[...document.querySelectorAll('h2')].map(h => h.textContent).join('|')"
        ))["result"]["value"]
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    assert tools.errors() == []
    requested = tools.requested()
    assert all(u.startswith(("file:", "data:")) for u in requested), requested
    alts = {i["alt"] for i in images}
    assert {"ROC curve of the test split", "ROC curves of the best models (test split)",
            "Calibration plot of the best models (test split)"} <= alts
    assert all(i["complete"] and i["width"] > 200 and i["shown"] > 200 for i in images), images
    assert "Characteristics (Table 1)" in headings and "Leaderboard" in headings
    png = base64.b64decode(shot["data"])
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    height = int.from_bytes(png[20:24], "big")  # IHDR: the full page, not one screen
    assert height > 1500


def test_each_overview_cell_opens_its_analysis_with_its_figures(
        many_run: Path, tmp_path: Path) -> None:
    from cohortflow.study import load_study

    study = load_study(many_run.parents[2] / "many.yaml")
    report = (many_run / "report.html").resolve()
    with page(tmp_path) as tools:
        for domain in ("Page", "Runtime", "Network"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=report.as_uri())
        tools.wait_for("Page.loadEventFired")

        def evaluate(expression: str) -> Any:
            return tools.call("Runtime.evaluate", returnByValue=True, awaitPromise=True,
                              expression=expression)["result"]["value"]

        links = evaluate("[...document.querySelectorAll('table.overview a')]"
                         ".map(a => a.getAttribute('href'))")
        assert sorted(links) == sorted(f"#analysis-{a.id}" for a in study.analysis_list())
        assert evaluate("[...document.querySelectorAll('details')].filter(d => d.open)"
                        ".length") == 0  # collapsed until asked for
        last = links[-1]
        shown = evaluate(f"""(async () => {{
            document.querySelector('a[href="{last}"]').click();
            const section = document.getElementById('{last[1:]}');
            await new Promise(r => setTimeout(r, 300));
            const images = [...section.querySelectorAll('img')];
            await Promise.all(images.map(i => i.decode().catch(() => null)));
            return {{open: section.closest('details').open,
                     opened: [...document.querySelectorAll('details')].filter(d => d.open)
                               .length,
                     top: section.getBoundingClientRect().top,
                     images: images.map(i => [i.getAttribute('src'), i.naturalWidth])}};
        }})()""")
    assert shown["open"] and shown["opened"] == 1 and 0 <= shown["top"] < 200, shown
    analysis = last.removeprefix("#analysis-")
    assert shown["images"] == [[f"figures/{analysis}/{name}.png", shown["images"][i][1]]
                               for i, name in enumerate(("roc", "calibration"))]
    assert all(width > 200 for _, width in shown["images"]), shown
    requested = tools.requested()
    assert all(u.startswith(("file:", "data:")) for u in requested), requested
