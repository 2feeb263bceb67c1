"""A whole study on data built for small counts: nothing meant to leave the compute shows a
count below ``min_cell_count``, a raw subject id or a date of birth.

The data are a small synthetic CDM (600 persons: a cohort of ~150, a test split of ~40 with
a handful of outcomes, one death) whose person ids are moved to ten-digit numbers, so that
an id written anywhere can be found by a plain text search.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cohortflow import models, privacy, synth
from cohortflow.disclosure import audit
from cohortflow.layout import SHARED, Layout
from cohortflow.study import load_study
from tests.conftest import write_study

K = 11
ID_OFFSET = 4_000_000_000  # ids become 4000007919, 4000015838, ...
COUNT_KEYS = frozenset({"rows", "subjects", "persons", "events", "outcomes", "count",
                        "n_train", "n_test"})
"""Keys (JSON) and columns (Parquet) whose integer values count persons, events or rows."""
COUNT_WORDS = (r"persons?|subjects?|people|patients|events?(?:\(s\))?|rows?|records?|"
               r"outcomes?|concept id\(s\)|held-out persons")
IN_TEXT = re.compile(rf"(?<![\w.<*])(\d[\d,]*)(?:\s*\(\d+(?:\.\d+)?%\))?\s+(?:{COUNT_WORDS})\b")
IN_CELL = re.compile(r"<td class=n>(\d[\d,]*)(?:\s*\(\d+(?:\.\d+)?%\))?</td>")
IN_RATE = re.compile(r"<span class=rate>(?:(\d+)|&lt;\d+|\*) / (?:(\d+)|&lt;\d+|\*)")
"""The overview grid's outcomes / episodes of each analysis."""
IMAGES = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def shared_files(results: Path) -> list[Path]:
    """The study's files meant to leave the compute (:data:`cohortflow.layout.SHARED`)."""
    found = {p for pattern in SHARED for p in results.glob(pattern)}
    return sorted(p for p in found if p.is_file())


def _json_counts(node: Any, path: str = "") -> Iterator[tuple[str, int]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in COUNT_KEYS and isinstance(value, int) and not isinstance(value, bool):
                yield f"{path}.{key}", value
            else:
                yield from _json_counts(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _json_counts(value, f"{path}[{i}]")


def scan(files: list[Path], k: int, ids: set[int], births: set[str]) -> list[str]:
    """Every small count, raw id and date of birth found in ``files``, one line each."""
    leaks: list[str] = []
    id_pattern = re.compile(r"(?<!\d)(" + "|".join(str(i) for i in sorted(ids)) + r")(?!\d)")
    for path in files:
        counts: list[tuple[str, int]] = []
        text = ""
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            leaks += [f"{path}: column {c}" for c in frame.columns
                      if c in ("subject_id", "person_id")]
            for column in frame.columns:
                if column in COUNT_KEYS and frame[column].dtype.is_integer():
                    counts += [(column, int(v)) for v in frame[column].drop_nulls()]
            text = frame.cast(pl.String).write_csv()  # every value as text, for ids and dates
        elif path.suffix == ".png":
            continue  # the plots' privacy rules (pooled bins, curves shown) are tested apart
        else:
            text = path.read_text(errors="replace")
            if path.suffix == ".json":
                counts += list(_json_counts(json.loads(text)))
            text = IMAGES.sub("", text)
            counts += [(m.group(0), int(m.group(1).replace(",", "")))
                       for m in IN_TEXT.finditer(text)]
            counts += [(m.group(0), int(m.group(1).replace(",", "")))
                       for m in IN_CELL.finditer(text)]
            counts += [(m.group(0), int(n)) for m in IN_RATE.finditer(text)
                       for n in m.groups() if n is not None]
        leaks += [f"{path}: count {value} ({where})" for where, value in counts
                  if privacy.small(value, k)]
        leaks += [f"{path}: subject id {m.group(1)}" for m in id_pattern.finditer(text)]
        leaks += [f"{path}: date of birth {b}" for b in births if b in text]
    return leaks


def test_the_scan_finds_each_kind_of_leak(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"inputs": {"death": {"rows": 3, "sha256": "00"}, "person": {"rows": "<11"}}}))
    (tmp_path / "logs" / "a.log").write_text(
        "ingested 7 events into 2 shards\nsubject 4000007919 born 2009-03-14\n")
    (tmp_path / "report.html").write_text(
        "<td class=n>5 (12.5%)</td><td class=n>&lt;11</td><p>tested on 40 persons</p>"
        "<p>with 3 outcomes</p><p>C 0.5, 3 folds, 2 configurations</p>"
        "<span class=rate>6 / 400</span><span class=rate>&lt;11 / 8</span>")
    pl.DataFrame({"subject_id": [1], "n_test": [4]}).write_parquet(tmp_path / "p.parquet")
    leaks = scan(sorted(p for p in tmp_path.rglob("*") if p.is_file()), K,
                 {4000007919}, {"2009-03-14"})
    assert sorted(leak.split(": ", 1)[1].split(" (")[0] for leak in leaks) == [
        "column subject_id", "count 3", "count 3", "count 4", "count 5", "count 6",
        "count 7", "count 8", "date of birth 2009-03-14", "subject id 4000007919"]


def _move_person_ids(cdm: Path) -> None:
    """Give every person a ten-digit id, in every table that has one."""
    for table in sorted(cdm.iterdir()):
        parts = sorted(table.glob("*.parquet")) if table.is_dir() else [table]
        for part in (p for p in parts if p.suffix == ".parquet"):
            frame = pl.read_parquet(part)
            if "person_id" in frame.columns:
                frame.with_columns(pl.col("person_id") * 7_919 + ID_OFFSET).write_parquet(part)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The demo study on 600 persons with ten-digit ids, run by `cohortflow run`."""
    root = tmp_path_factory.mktemp("small")
    cdm = root / "cdm"
    synth.generate(600, seed=3, out=cdm, progress=False)
    _move_person_ids(cdm)
    study = write_study(root / "small.yaml", name="small", shards=2,
                        source={"omop": {"path": str(cdm)}},
                        model={"family": "logistic_l2", "C": 1.0})
    done = subprocess.run([sys.executable, "-m", "cohortflow", "run", str(study)],
                          cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return root, root / "results" / "small", done.stdout + done.stderr


def _analysis(root: Path) -> str:
    """The id of the small study's one analysis (its files are under analyses/<id>/)."""
    [analysis] = load_study(root / "small.yaml").analysis_list()
    return analysis.id


@pytest.mark.e2e
def test_no_shared_output_shows_a_small_count_an_id_or_a_birth_date(
        small_run: tuple[Path, Path, str]) -> None:
    root, results, console = small_run
    person = pl.read_parquet(root / "cdm" / "person")
    ids = set(person["person_id"].to_list())
    births = {b.strftime("%Y-%m-%d") for b in person["birth_datetime"].drop_nulls()}
    death_rows = pl.read_parquet(root / "cdm" / "death").height
    lay = Layout(results)
    test = pl.read_parquet(lay.model_predictions(_analysis(root))).filter(
        pl.col("split") == "test")
    deciles = np.array_split(test.sort("prediction")["label"].cast(pl.Int64).to_numpy(), 10)
    # the data do hold small counts: the scan below has something to find if it leaks
    assert 0 < death_rows < K
    assert privacy.small(int(test["label"].sum()), K) or any(
        privacy.small(int(d.sum()), K) for d in deciles)
    files = shared_files(results)
    kinds = {p.suffix for p in files}
    assert len(files) >= 20 and {".html", ".json", ".log", ".tsv", ".parquet"} <= kinds
    snakemake_logs = sorted((root / ".snakemake" / "log").glob("*.log"))
    assert snakemake_logs
    console_file = root / "console.txt"
    console_file.write_text(console)
    assert scan([*files, *snakemake_logs, console_file], K, ids, births) == []
    # the scan does read the counts: with a huge threshold every file with counts is flagged
    flagged = {leak.split(": ")[0] for leak in scan(files, 10**9, set(), set())}
    for path in (lay.report, lay.manifest, lay.export_attrition(_analysis(root)),
                 lay.log("ingest")):
        assert str(path) in flagged, path
    manifest = json.loads((results / "manifest.json").read_text())
    assert manifest["inputs"]["death"]["rows"] == f"<{K}"
    # and every one of them came through the disclosure gate, unchanged since
    assert audit(Layout(results)) == []
    assert manifest["inputs"]["person"]["rows"] == 600


@pytest.mark.e2e
def test_exported_predictions_carry_keyed_pseudonyms_only(
        small_run: tuple[Path, Path, str]) -> None:
    root, results, _ = small_run
    lay, analysis = Layout(results), _analysis(root)
    internal = pl.read_parquet(lay.model_predictions(analysis))
    exported = pl.read_parquet(lay.export_predictions(analysis))
    assert exported.columns == ["person", "split", "label", "prediction"]
    expected = privacy.pseudonyms(internal["subject_id"].to_list(),
                                  key=os.environ[privacy.PSEUDONYM_KEY_ENV])
    assert sorted(exported["person"].to_list()) == sorted(expected)
    assert exported["person"].to_list() == sorted(expected)  # not in subject-id order
    by_person = dict(zip(expected, internal["prediction"].to_list(), strict=True))
    assert all(by_person[p] == v for p, v in exported.select("person", "prediction").rows())
    attrition = json.loads(lay.export_attrition(analysis).read_text())
    assert [a["step"] for a in attrition] == [
        a["step"] for a in json.loads(lay.attrition(analysis).read_text())]


@pytest.mark.e2e
def test_report_draws_no_roc_curve_over_a_small_count(small_run: tuple[Path, Path, str]
                                                      ) -> None:
    root, results, _ = small_run
    lay, analysis = Layout(results), _analysis(root)
    test = pl.read_parquet(lay.model_predictions(analysis)).filter(pl.col("split") == "test")
    page = " ".join((results / "report.html").read_text().split())
    drawn = 'alt="ROC curve of the test split"' in page
    assert drawn == privacy.curve_shown(test["label"].cast(pl.Int64).to_list(), K)
    if not drawn:
        assert "Not drawn: the test split has fewer than 11 persons" in page
    metrics = json.loads(lay.model_metrics(analysis).read_text())
    shown = models.pool_calibration(metrics["calibration"]["test"], K)
    assert 1 <= len(shown) < len(metrics["calibration"]["test"])  # pooled: some were small


def test_run_without_a_pseudonym_key_stops_before_doing_anything(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s.yaml", name="nokey",
                        source__synth__persons=100)
    env = {k: v for k, v in os.environ.items() if k != privacy.PSEUDONYM_KEY_ENV}
    done = subprocess.run([sys.executable, "-m", "cohortflow", "run", str(study)],
                          cwd=tmp_path, capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 2, done.stderr
    assert "fix: export COHORTFLOW_PSEUDONYM_KEY=" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()
