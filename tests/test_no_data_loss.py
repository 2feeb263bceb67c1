"""No command deletes or replaces a directory it did not itself write as its output.

Each place that removes or replaces a directory (the event store, its working directory,
the feature store, the synthetic CDM) is given a directory that is not its own, and must
refuse it before any work, leaving every file in place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from cohortflow import events, features, omop, store_guard, synth
from cohortflow.cli import app
from cohortflow.errors import CohortflowError, StoreError

BASE = Path(__file__).parent / "bad_inputs" / "omop_base"


def _cdm(root: Path) -> Path:
    cdm = root / "cdm"
    shutil.copytree(BASE, cdm)
    return cdm


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _ingest(source: Path, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["ingest", str(source), "--out", str(out), "--shards", "2"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("where", ["the source", "a folder holding the source",
                                   "a folder inside the source"])
def test_ingest_never_writes_over_or_into_its_source(tmp_path: Path, where: str) -> None:
    cdm = _cdm(tmp_path)
    (tmp_path / "notes.txt").write_text("unrelated work of the user")
    (cdm / "sub").mkdir()
    out = {"the source": cdm, "a folder holding the source": tmp_path,
           "a folder inside the source": cdm / "sub"}[where]
    before = _files(tmp_path)
    code, message = _ingest(cdm, out)
    assert code == 2
    assert "would overlap the OMOP source" in message and "fix:" in message
    assert _files(tmp_path) == before
    assert not list(tmp_path.rglob(".*partial*"))


def test_ingest_refuses_a_linked_table_inside_out(tmp_path: Path) -> None:
    """A table linked from elsewhere counts as source: its real folder is not replaced."""
    data = tmp_path / "warehouse"
    data.mkdir()
    cdm = _cdm(tmp_path)
    shutil.move(cdm / "person.csv", data / "person.csv")
    (cdm / "person.csv").symlink_to(data / "person.csv")
    code, message = _ingest(cdm, data)
    assert code == 2 and "would overlap the OMOP source" in message
    assert (data / "person.csv").is_file()


def test_ingest_refuses_a_foreign_directory_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "events"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, message = _ingest(_cdm(tmp_path), out)
    assert code == 2
    assert "is not an event store written by cohortflow" in message and "fix:" in message
    assert _files(out) == {"thesis.tex": b"years of work"}
    assert not list(tmp_path.glob(".*partial*"))


def test_ingest_refuses_a_symbolic_link_as_out(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    (tmp_path / "events").symlink_to(target)
    code, message = _ingest(_cdm(tmp_path), tmp_path / "events")
    assert code == 2 and "is a symbolic link" in message
    assert (target / "keep.txt").read_text() == "x"


def test_ingest_replaces_its_own_store_and_fills_an_empty_directory(tmp_path: Path) -> None:
    cdm, out = _cdm(tmp_path), tmp_path / "events"
    out.mkdir()  # empty: nothing to lose
    assert _ingest(cdm, out)[0] == 0
    first = _files(out)
    assert store_guard.is_event_store(out)
    assert _ingest(cdm, out)[0] == 0  # an event store this tool wrote: replaced
    assert _files(out) == first
    assert store_guard.WORK_MARKER not in " ".join(first)  # the finished store has no work mark
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdm", "events"]


def test_a_store_of_another_tool_is_not_replaced(tmp_path: Path) -> None:
    cdm, out = _cdm(tmp_path), tmp_path / "events"
    omop.ingest(omop.open_source(cdm), out, shards=2)
    events.write_json({"etl_name": "some-other-etl"}, events.dataset_json_path(out))
    before = _files(out)
    with pytest.raises(StoreError, match="not an event store written by cohortflow"):
        omop.ingest(omop.open_source(cdm), out, shards=2)
    assert _files(out) == before


def test_a_stale_working_directory_is_removed_only_when_an_ingest_left_it(
        tmp_path: Path) -> None:
    cdm, out = _cdm(tmp_path), tmp_path / "events"
    work = tmp_path / ".events.partial"
    work.mkdir()
    (work / "mine.txt").write_text("not cohortflow's")
    with pytest.raises(StoreError, match="not left by an earlier ingest"):
        omop.ingest(omop.open_source(cdm), out, shards=2)
    assert (work / "mine.txt").read_text() == "not cohortflow's"
    assert not out.exists()
    (work / "mine.txt").unlink()
    (work / store_guard.WORK_MARKER).write_text("")  # what a killed ingest leaves
    (work / "data").mkdir()
    omop.ingest(omop.open_source(cdm), out, shards=2)
    assert not work.exists() and events.list_shards(out) == ["0", "1"]


def test_a_failed_ingest_removes_only_its_own_working_directory(tmp_path: Path) -> None:
    cdm, out = _cdm(tmp_path), tmp_path / "events"
    (cdm / "person.csv").write_text("person_id,gender_concept_id,year_of_birth\n1,8532,\n")
    with pytest.raises(CohortflowError, match="year_of_birth"):
        omop.ingest(omop.open_source(cdm), out, shards=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdm"]


def test_the_feature_store_replaces_only_a_feature_store(tmp_path: Path) -> None:
    out = tmp_path / "features.zarr"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    partial, _, _ = features.work_paths(out)
    xr.Dataset({"values": (("subject", "feature"), np.zeros((2, 2), np.float32))}).to_zarr(
        partial, zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match="is not a feature store"):
        features.finish(partial, out)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()  # an empty directory (as Snakemake may leave) is replaced
    features.finish(partial, out)
    assert features.open_features(out)["values"].shape == (2, 2)
    xr.Dataset({"values": (("subject", "feature"), np.ones((3, 2), np.float32))}).to_zarr(
        partial, zarr_format=3, consolidated=False)
    features.finish(partial, out)  # a finished feature store is replaced
    assert features.open_features(out)["values"].shape == (3, 2)


def test_synth_keeps_what_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "cdm"
    synth.generate(20, 1, out, progress=False)
    (out / "README.txt").write_text("notes of the user")
    synth.generate(20, 2, out, progress=False)  # its own output: the tables are replaced
    assert (out / "README.txt").read_text() == "notes of the user"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.parquet").write_text("x")
    shutil.rmtree(out / "person")
    (out / "person").symlink_to(elsewhere)
    with pytest.raises(CohortflowError, match="not a table directory"):
        synth.generate(20, 3, out, progress=False)
    assert (elsewhere / "keep.parquet").read_text() == "x"


def test_a_foreign_directory_where_the_old_store_goes_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cdm, out = _cdm(tmp_path), tmp_path / "events"
    omop.ingest(omop.open_source(cdm), out, shards=2)

    def no_work(*args: object) -> None:
        raise AssertionError("the ingest started before refusing")

    source = omop.open_source(cdm)  # reading any table of it is work
    monkeypatch.setattr(source, "tables", no_work)
    monkeypatch.setattr(source, "batches", no_work)
    trash = tmp_path / ".events.old"
    trash.mkdir()
    (trash / "mine.txt").write_text("not cohortflow's")
    before = _files(tmp_path)
    with pytest.raises(StoreError, match="not left by an earlier ingest"):
        omop.ingest(source, out, shards=2)
    assert _files(tmp_path) == before and not (tmp_path / ".events.partial").exists()


def test_out_below_a_file_is_one_message(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_text("x")
    code, message = _ingest(_cdm(tmp_path), tmp_path / "report.pdf" / "events")
    assert code == 2 and "report.pdf is not a directory; fix:" in message
