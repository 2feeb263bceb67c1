"""Rerun keys follow what each step reads: editing one thing of a finished study reruns
exactly the steps that read it, and those downstream of their outputs.

One finished study (the session's ``laptop_run``, the demo study) is edited one thing at a
time; for each edit Snakemake is asked, in a dry run, which jobs it would run, and the
test asserts the exact set of rules (and, for the sweep, of configurations).  Dry runs
change nothing in the results.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cohortflow import models, runner
from cohortflow.study import load_study

EXACERBATION_LOCAL = 2_000_000_004  # any condition concept of the synthetic vocabulary
OUTCOME_SET = "asthma_exacerbation"  # the demo's outcome concept set

DOWNSTREAM_OF_MODEL = {"model", "report", "export", "manifest"}


def _rule_jobs(stdout: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a ``snakemake --dry-run`` listed, ``all`` left out
    (a grouped job, such as a sweep configuration, is listed indented)."""
    jobs: list[tuple[str, str]] = []
    for block in re.split(r"\n(?=[ \t]*(?:local)?rule \w+:\n)", stdout):
        head = re.match(r"\s*(?:local)?rule (\w+):\n", block)
        if head is None or head[1] == "all":
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
        jobs.append((head[1], wildcards[1] if wildcards else ""))
    return jobs


def _dry_run(study: Path, workdir: Path) -> list[tuple[str, str]]:
    """The jobs Snakemake would run for ``study`` over the results in ``workdir``."""
    done = subprocess.run(
        runner.snakemake_command(study, "laptop", workdir / "results", ["--dry-run"]),
        cwd=workdir, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return _rule_jobs(done.stdout)


def _rules(jobs: list[tuple[str, str]]) -> set[str]:
    return {rule for rule, _ in jobs}


def _configs(jobs: list[tuple[str, str]]) -> set[str]:
    return {wildcards.removeprefix("config=") for rule, wildcards in jobs
            if rule == "sweep_config"}


def _edited(study_file: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    raw = yaml.safe_load(study_file.read_text())
    edit(raw)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(laptop_run: tuple, study_file: Path) -> tuple[Path, Path]:
    """(study file, Snakemake's working directory) of the finished demo study."""
    results, _ = laptop_run
    return study_file, results.parents[1]


def test_the_unchanged_study_reruns_nothing(finished: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    study_file, workdir = finished
    assert _dry_run(_edited(study_file, tmp_path, lambda raw: None), workdir) == []


def _window(raw: dict[str, Any]) -> None:
    raw["features"]["windows_days"] = [30, 180]


def _outcome_concept(raw: dict[str, Any]) -> None:
    raw["concept_sets"][OUTCOME_SET]["include"].append({"concept_id": EXACERBATION_LOCAL})


def _min_cell_count(raw: dict[str, Any]) -> None:
    raw["min_cell_count"] = 5


def _seed(raw: dict[str, Any]) -> None:
    raw["seed"] += 1


EVERY_CONFIG = "every"
EDITS = {
    # the feature spec: the tensor, every configuration trained on it, and what follows
    "feature window": (_window, {"features", "sweep_config"} | DOWNSTREAM_OF_MODEL,
                       EVERY_CONFIG),
    # the outcome's concept set: the outcome cohort's shards, the labels and what reads
    # them; the target cohort and its tensor are left alone
    "outcome concept": (_outcome_concept,
                        {"cohort_shard", "attrition", "labels", "sweep_config"}
                        | DOWNSTREAM_OF_MODEL, EVERY_CONFIG),
    # a display threshold: suppression only; no model, no cohort, no ingest
    "min_cell_count": (_min_cell_count, {"data_quality", "report", "export", "manifest"},
                       set()),
    # the study seed: the split and the configurations' seeds; no data step reads it
    "study seed": (_seed, {"sweep_config"} | DOWNSTREAM_OF_MODEL, EVERY_CONFIG),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_an_edit_reruns_exactly_what_reads_it(name: str, finished: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    study_file, workdir = finished
    edit, rules, configs = EDITS[name]
    jobs = _dry_run(_edited(study_file, tmp_path, edit), workdir)
    assert _rules(jobs) == rules
    every = set(models.configurations(load_study(study_file)))
    assert _configs(jobs) == (every if configs == EVERY_CONFIG else configs)
    shards = [w for r, w in jobs if r == "cohort_shard"]
    assert len(shards) == (load_study(study_file).shards if "cohort_shard" in rules else 0)
    assert all(f"cohort={OUTCOME_SET}" in w for w in shards)  # the outcome's cohort only
    assert len(jobs) == len(set(jobs))


def test_one_hyperparameter_reruns_only_its_configuration(finished: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    study_file, workdir = finished

    def c_of_the_l1_logistic(raw: dict[str, Any]) -> None:
        family = next(f for f in raw["model"]["sweep"]["families"]
                      if f["family"] == "logistic" and f["penalty"] == ["l1"])
        family["C"] = [c * 2 for c in family["C"]]

    edited = _edited(study_file, tmp_path, c_of_the_l1_logistic)
    before = set(models.configurations(load_study(study_file)))
    after = set(models.configurations(load_study(edited)))
    assert len(after - before) == 1 and len(before - after) == 1
    jobs = _dry_run(edited, workdir)
    assert _rules(jobs) == {"sweep_config"} | DOWNSTREAM_OF_MODEL
    assert _configs(jobs) == after - before  # the other configurations' jobs are left alone
