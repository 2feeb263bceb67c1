"""The bad-input corpus (``tests/bad_inputs/``): one test per case, through the CLI.

Every case must produce one message holding the case's expected fragments, the expected
exit status (2 for an error), and leave no output a rerun would trust.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

from cohortflow import events, omop
from cohortflow.cli import app
from cohortflow.errors import CohortflowError, StoreError

CORPUS = Path(__file__).parent / "bad_inputs"
BASE = CORPUS / "omop_base"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "case.yaml").is_file())


def _case(name: str) -> dict[str, Any]:
    case = yaml.safe_load((CORPUS / name / "case.yaml").read_text())
    assert case["kind"] in ("omop", "study", "store", "disk"), name
    return case


def _omop_input(name: str, case: dict[str, Any], root: Path) -> Path:
    if "source" in case:  # the case's own file is the whole source
        return Path(shutil.copy(CORPUS / name / case["source"], root / case["source"]))
    cdm = root / "cdm"
    cdm.mkdir()
    for file in BASE.iterdir():
        if file.name not in case.get("remove", []):
            if case.get("format") == "parquet":
                pq.write_table(pacsv.read_csv(file), cdm / f"{file.stem}.parquet")
            else:
                shutil.copy(file, cdm / file.name)
    for file in (CORPUS / name).iterdir():
        if file.name != "case.yaml":
            shutil.copy(file, cdm / file.name)
    return cdm


def _make(make: str, cdm: Path, out: Path) -> None:
    """Damage that git cannot store, built at run time: ``truncate FILE`` (cut to half),
    ``fifo FILE``, ``symlink_loop FILE`` (a link to itself), ``out_file`` (--out is a file)."""
    action, _, file = make.partition(" ")
    target = cdm / file
    if action == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif action in ("fifo", "symlink_loop"):
        target.unlink(missing_ok=True)
        os.mkfifo(target) if action == "fifo" else target.symlink_to(target.name)
    elif action == "out_file":
        out.write_text("a file of the user's\n")
    else:
        raise AssertionError(f"unknown damage {make!r}")


def _cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bare traceback is a failure of the case
    return result.exit_code, result.output


def _damaged_store(make: str, root: Path) -> tuple[Path, Any]:
    """Build a damaged store; return it and the function that must refuse it."""
    from cohortflow.features import open_features

    if make in ("zarr_without_marker", "zarr_corrupt_metadata"):
        store = root / "features.zarr"
        values = np.arange(8, dtype=np.float32).reshape(4, 2)
        xr.Dataset({"values": (("subject", "feature"), values)}).to_zarr(
            store, zarr_format=3, consolidated=False)
        if make == "zarr_corrupt_metadata":
            meta = store / "zarr.json"
            meta.write_bytes(meta.read_bytes()[:17])  # a copy cut short
        return store, open_features
    if make == "meds_without_metadata":
        store = root / "events"
        omop.ingest(omop.open_source(BASE), store, shards=2)
        shutil.rmtree(store / "metadata")
        return store, events.read_codes
    raise AssertionError(f"unknown store damage {make!r}")


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name: str, tmp_path: Path, request: pytest.FixtureRequest,
                   caplog: pytest.LogCaptureFixture) -> None:
    case = _case(name)
    out = tmp_path / "events"
    if case["kind"] == "omop":
        cdm = _omop_input(name, case, tmp_path)
        if "make" in case:
            _make(case["make"], cdm, out)
        code, message = _cli(["ingest", str(cdm), "--out", str(out), "--shards", "2"])
    elif case["kind"] == "study":
        code, message = _cli(["validate", str(CORPUS / name / "study.yaml")])
    elif case["kind"] == "store":
        store, reader = _damaged_store(case["make"], tmp_path)
        with pytest.raises(StoreError) as refused:
            reader(store)
        assert isinstance(refused.value, CohortflowError)  # the CLI turns it into exit 2
        code, message = 2, str(refused.value)
    else:
        code, message = _ingest_onto_full_disk(case, tmp_path, request)
        out = tmp_path / "disk" / "events"
    message += caplog.text  # warnings go through logging
    flat = " ".join(message.split())
    for fragment in case["expect"]:
        assert fragment in flat, f"{name}: {fragment!r} not in:\n{message}"
    for fragment in case.get("absent", []):
        assert fragment not in message, f"{name}: {fragment!r} leaked"
    assert code == case.get("exit", 2), message
    assert "Traceback" not in message
    if code != 0 and case["kind"] in ("omop", "disk"):
        assert message.count("error:") == 1
        if case.get("make") == "out_file":
            assert out.read_text() == "a file of the user's\n", "the user's file was changed"
        else:
            assert not out.exists(), "a failed ingest left an event store behind"
        assert not list(out.parent.glob(".*partial*")), "a partial store was left behind"
    elif case["kind"] == "omop":
        assert events.list_shards(out) == ["0", "1"]  # a warning: the store is written


def _ingest_onto_full_disk(case: dict[str, Any], tmp_path: Path,
                           request: pytest.FixtureRequest) -> tuple[int, str]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={case['size']}", "tmpfs",
                              str(disk)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}"
        if _ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        synth_omop: Path = request.getfixturevalue("synth_omop")
        code, message = _cli(["ingest", str(synth_omop), "--out", str(disk / "events"),
                              "--shards", "2"])
        assert list(disk.iterdir()) == []  # nothing at all is left on the full disk
        return code, message
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_corpus_covers_every_kind() -> None:
    kinds = [_case(name)["kind"] for name in CASES]
    assert {k: kinds.count(k) for k in sorted(set(kinds))} == {
        "disk": 1, "omop": 24, "store": 3, "study": 12}


def test_the_command_itself_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    cdm = _omop_input("omop_duplicate_person", _case("omop_duplicate_person"), tmp_path)
    done = subprocess.run([sys.executable, "-m", "cohortflow", "ingest", str(cdm), "--out",
                           str(tmp_path / "events")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "appear more than once" in errors[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "events").exists()
