"""Helpers the test files share: tiny event frames, study files, the CLI in a subprocess.

Fixtures live in ``tests/conftest.py``; plain functions and constants live here, so a test
file imports them from one place instead of keeping its own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from cohortflow import cohorts, events, manifest
from cohortflow.cli import app
from cohortflow.layout import Layout, shard_attrition, shard_table
from cohortflow.study import SINGLE_TARGET, Study, demo_study_path, load_study

REPO = Path(__file__).resolve().parents[1]
MANY_STUDY = REPO / "seeds" / "studies" / "many.yaml"
"""The multi-analysis seed study (3 targets x 4 outcomes x 2 times at risk, and one more)."""
MANY_PERSONS, MANY_SHARDS = 3_000, 2
"""The size the suite runs it at (``many_run``)."""

DEMO_ANALYSIS = "cohort__asthma_exacerbation__tar"
"""The demo study's one analysis (target ``cohort``, its outcome, its time at risk)."""
PERSONS = 20_000  # enough held-out persons for a stable AUROC; about a minute per run

# ---- tiny hand-built frames ----------------------------------------------------------------

INDEX = datetime(2015, 1, 10, 9, 30)  # the index time of every subject of ``cohort()``


def ev(*rows: tuple[Any, ...]) -> pl.LazyFrame:
    """Events from (subject_id, ISO time or None, code[, numeric value[, unit]]) rows, in the
    event store's schema."""
    full = [(*r, None, None)[:5] for r in rows]
    return pl.LazyFrame(
        {"subject_id": [r[0] for r in full],
         "time": [datetime.fromisoformat(r[1]) if r[1] else None for r in full],
         "code": [r[2] for r in full], "numeric_value": [r[3] for r in full],
         "unit": [r[4] for r in full]},
        schema=events.POLARS_EVENT_SCHEMA,
    )


def cohort(*subjects: int) -> pl.LazyFrame:
    """A cohort table of ``subjects``, every one indexed at ``INDEX``."""
    return pl.LazyFrame({"subject_id": list(subjects), "index_time": [INDEX] * len(subjects)},
                        schema={"subject_id": pl.Int64, "index_time": pl.Datetime("us")})


# ---- studies -------------------------------------------------------------------------------

def write_study(path: Path, **changes: object) -> Path:
    """The demo study with top-level or dotted-key changes, written to ``path``.

    A key ``a__b`` sets ``b`` inside ``a`` (``source__synth__persons=100``).
    """
    raw = yaml.safe_load(demo_study_path().read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def make_omop_study(source: Path, root: Path) -> Path:
    """A study reading its own copy of an OMOP Parquet directory (so a test may alter it)."""
    root.mkdir(parents=True)
    shutil.copytree(source, root / "cdm")
    return write_study(root / "study.yaml", shards=2, source={"omop": {"path": "cdm"}})


def build_cohorts(study_path: Path, store: Path, cohort_dir: Path,
                  cohort: str = SINGLE_TARGET) -> Study:
    """The episode tables of cohort ``cohort`` (default: a single-cohort study's target) on
    every shard of ``store`` for a study file; returns the study."""
    study = load_study(study_path)
    for shard in events.list_shards(store):
        cohorts.write_shard(study, cohort, store, shard, shard_table(cohort_dir, shard),
                            shard_attrition(cohort_dir, shard))
    return study


def build_labels(study_path: Path, store: Path, results: Path) -> tuple[Study, pl.DataFrame]:
    """Every cohort the study's first analysis reads, its attrition and its labels under
    ``results`` (a study's results tree), as the workflow's rules build them; returns the
    study and the label table."""
    study = load_study(study_path)
    layout, analysis = Layout(Path(results)), study.analysis_list()[0]
    shards = events.list_shards(store)
    for name in sorted({analysis.target, analysis.outcome_cohort}):
        build_cohorts(study_path, store, layout.cohort(name), name)
        cohorts.write_attrition([layout.cohort_shard_attrition(name, s) for s in shards],
                                layout.cohort_attrition(name))
    cohorts.write_labels(study, analysis, layout.cohort(analysis.target),
                         layout.cohort(analysis.outcome_cohort), shards,
                         layout.labels(analysis.id), layout.attrition(analysis.id))
    return study, pl.read_parquet(layout.labels(analysis.id))


def write_many_study(path: Path) -> Path:
    """The multi-analysis seed study at the suite's size (one model per analysis)."""
    raw = yaml.safe_load(MANY_STUDY.read_text())
    raw["source"]["synth"]["persons"] = MANY_PERSONS
    raw["shards"] = MANY_SHARDS
    raw["model"] = {"family": "logistic_l2", "C": 1.0}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def digests(results: Path) -> dict[str, str]:
    """Checksums of the cohort tables, the labels and the feature tensors of a study's
    results (each tree as Snakemake wrote it, its timestamps left out)."""
    out: dict[str, str] = {}
    for tree in ("cohorts", "features", "analyses"):
        for key, value in manifest.tree_digests(results / tree).items():
            name = Path(key).name
            if name == ".snakemake_timestamp" or (tree == "analyses" and not (
                    name == "labels.parquet" or name == "attrition.json")):
                continue
            out[f"{tree}/{key}"] = value
    return out


# ---- the command line ----------------------------------------------------------------------

def verify_with_rerun(recorded: Path, rerun: dict[str, Any],
                      monkeypatch: pytest.MonkeyPatch) -> Result:
    """``cohortflow verify RECORDED`` (in-process) whose rerun of study ``s`` writes the
    manifest ``rerun`` instead of running Snakemake."""

    def snakemake(command: list[str], **_: object) -> int:
        out = Path(command[command.index("--directory") + 1]) / "results" / "s"
        out.mkdir(parents=True)
        (out / "manifest.json").write_text(json.dumps(rerun))
        return 0

    monkeypatch.setattr(subprocess, "call", snakemake)
    return CliRunner().invoke(app, ["verify", str(recorded)])



def cohortflow(*args: str, cwd: Path, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """``cohortflow ARGS`` in a subprocess (as a user types it), output captured; never raises.

    ``env`` adds to (or overrides) this process's environment; output is unbuffered, so a
    killed run's output is whole up to the kill.
    """
    return subprocess.run([sys.executable, "-m", "cohortflow", *args], cwd=cwd,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def run_study(study: Path, workdir: Path, *extra: str, env: dict[str, str] | None = None,
              name: str = "demo") -> Path:
    """`cohortflow run STUDY --results results` in ``workdir``; returns ``results/<name>``.

    Fails the test with the end of the output when the run fails.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    done = cohortflow("run", str(study), "--results", "results", *extra, cwd=workdir, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return workdir / "results" / name


def cut_omop(source: Path, out: Path, before: date) -> Path:
    """An OMOP Parquet extract as a warehouse would have given it on the day before
    ``before``: every row of a clinical table dated (its first date column) before
    ``before``, its end dates cut to the day before; observation periods that began before
    it, ended there at the latest; deaths before it; person, vocabulary and other tables
    as they are.  For a training extract cut from a longer one."""
    last = before - timedelta(days=1)
    out.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.suffix == ".json":
            continue
        if path.is_file():
            shutil.copy(path, out / path.name)
            continue
        frame = pl.read_parquet(path / "*.parquet")
        dates = [c for c, t in frame.schema.items() if c.endswith(("_date", "_datetime"))
                 and t in (pl.Date, pl.Datetime("us"), pl.Datetime("ns"), pl.Datetime("ms"))]
        if path.name != "person" and dates:
            first = pl.col(dates[0]).cast(pl.Date)
            frame = frame.filter(first.is_null() | (first < before))
            frame = frame.with_columns(
                pl.when(pl.col(c).cast(pl.Date) > last).then(
                    pl.lit(last).cast(frame.schema[c])).otherwise(pl.col(c)).alias(c)
                for c in dates[1:])
        (out / path.name).mkdir()
        frame.write_parquet(out / path.name / "part-00000.parquet")
    return out
