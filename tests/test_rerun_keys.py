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
from cohortflow.study import Study, load_study
from tests.helpers import run_study, write_many_study

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


# ---- many analyses: each edit reruns the cohorts, tensors and analyses that read it --------

@pytest.fixture(scope="module")
def many_finished(many_run: Path) -> tuple[Path, Path]:
    """(study file, Snakemake's working directory) of the finished multi-analysis study."""
    return many_run.parents[2] / "many.yaml", many_run.parents[1]


def _jobs_of(jobs: list[tuple[str, str]], rule: str, key: str) -> set[str]:
    """The values of wildcard ``key`` over the jobs of ``rule``."""
    found = set()
    for r, wildcards in jobs:
        if r == rule:
            values = dict(part.split("=", 1) for part in wildcards.split(", "))
            found.add(values[key])
    return found


def _expected(study: Study, cohorts: set[str], targets: set[str], analyses: set[str],
              configs: set[str], display: bool = False) -> dict[str, set[str]]:
    """The jobs an edit must rerun, rule by rule: the cohorts it changed (and every shard of
    them), the tensors, the analyses' labels, the configurations; then, for every analysis
    whose labels or configurations reran, its model and export, and the report."""
    every = {a.id for a in study.analysis_list()}
    retrained = analyses | {c.analysis for c in models.configurations(study).values()
                            if c.id in configs}
    out = {"cohort_shard": cohorts, "attrition": cohorts, "features": targets,
           "labels": analyses, "sweep_config": configs, "model": retrained,
           "export": every if display else retrained}
    return {rule: names for rule, names in out.items() if names}


def _observed(jobs: list[tuple[str, str]]) -> dict[str, set[str]]:
    keys = {"cohort_shard": "cohort", "attrition": "cohort", "features": "target",
            "labels": "analysis", "sweep_config": "config", "model": "analysis",
            "export": "analysis"}
    return {rule: names for rule, key in keys.items() if (names := _jobs_of(jobs, rule, key))}


def _configs_of(study: Study, analyses: set[str]) -> set[str]:
    return {c.id for c in models.configurations(study).values() if c.analysis in analyses}


def _many_edits(study: Study) -> dict[str, tuple[Callable[[dict[str, Any]], None],
                                               dict[str, set[str]], set[str]]]:
    """Edit name -> (edit, expected jobs by rule, other rules expected)."""
    analyses = study.analysis_list()
    configs = set(models.configurations(study))
    outcome = "bronchitis"  # a concept-set outcome; its concept set is read by nothing else
    of_outcome = {a.id for a in analyses if a.outcome == outcome}
    target = "otitis_media"  # a target cohort, not an outcome
    of_target = {a.id for a in analyses if a.target == target}
    risk = "2y_first"
    of_risk = {a.id for a in analyses if a.time_at_risk == risk}
    after_model = {"report", "manifest"}

    def outcome_concept(raw: dict[str, Any]) -> None:
        raw["concept_sets"]["bronchitis"]["include"].append({"concept_id": EXACERBATION_LOCAL})

    def target_definition(raw: dict[str, Any]) -> None:
        raw["cohorts"][target]["prior_observation_days"] = 180

    def risk_window(raw: dict[str, Any]) -> None:
        raw["times_at_risk"][risk]["end_days"] = 700

    return {
        "outcome concept": (outcome_concept, _expected(
            study, {outcome}, set(), of_outcome, _configs_of(study, of_outcome)), after_model),
        "target definition": (target_definition, _expected(
            study, {target}, {target}, of_target, _configs_of(study, of_target)),
            after_model),
        "time at risk": (risk_window, _expected(
            study, set(), set(), of_risk, _configs_of(study, of_risk)), after_model),
        "feature window": (_window, _expected(
            study, set(), set(study.targets()), set(), configs), after_model),
        "study seed": (_seed, _expected(study, set(), set(), set(), configs), after_model),
        "min_cell_count": (_min_cell_count, _expected(
            study, set(), set(), set(), set(), display=True), after_model | {"data_quality"}),
        "nothing": (lambda raw: None, {}, set()),
    }


MANY_EDITS = ["outcome concept", "target definition", "time at risk", "feature window",
              "study seed", "min_cell_count", "nothing"]


@pytest.mark.parametrize("name", MANY_EDITS)
def test_many_analyses_an_edit_reruns_exactly_what_reads_it(
        name: str, many_finished: tuple[Path, Path], tmp_path: Path) -> None:
    study_file, workdir = many_finished
    study = load_study(study_file)
    edit, expected, others = _many_edits(study)[name]
    jobs = _dry_run(_edited(study_file, tmp_path, edit), workdir)
    assert _observed(jobs) == expected
    assert _rules(jobs) - set(_observed(jobs)) == others
    for cohort in expected.get("cohort_shard", set()):  # every shard of a changed cohort
        assert sum(1 for r, w in jobs if r == "cohort_shard" and f"cohort={cohort}," in w) \
            == study.shards
    assert len(jobs) == len(set(jobs))


@pytest.mark.e2e
def test_adding_an_outcome_builds_its_cohort_and_new_analyses_only(tmp_path: Path) -> None:
    """A finished study of one analysis gets one more outcome in its analysis list: the run
    builds that outcome's cohort and the new analysis only, and leaves every cohort, tensor
    and label table already built untouched (same mtimes).  Its own small run: Snakemake's
    records of a run are kept by absolute path, so a copy of another run would not do."""
    study = write_many_study(tmp_path / "many.yaml")
    raw = yaml.safe_load(study.read_text())
    raw["analyses"] = [{"target": "asthma", "outcomes": ["exacerbation"], "time_at_risk": "1y"}]
    study.write_text(yaml.safe_dump(raw, sort_keys=False))
    results = run_study(study, tmp_path / "run", name="many")
    built = {p: p.stat().st_mtime_ns for tree in ("cohorts", "features", "analyses")
             for p in (results / tree).rglob("*") if p.is_file()}
    assert any(p.name == "labels.parquet" for p in built)

    def add_outcome(raw: dict[str, Any]) -> None:
        raw["analyses"][0]["outcomes"].append("bronchitis")

    edited = _edited(study, tmp_path, add_outcome)
    new = {"asthma__bronchitis__1y"}
    jobs = _dry_run(edited, tmp_path / "run")
    assert _observed(jobs) == {"cohort_shard": {"bronchitis"}, "attrition": {"bronchitis"},
                               "labels": new, "sweep_config": _configs_of(
                                   load_study(edited), new), "model": new, "export": new}
    assert _rules(jobs) - set(_observed(jobs)) == {"report", "manifest"}
    run_study(edited, tmp_path / "run", name="many")
    assert (results / "analyses" / "asthma__bronchitis__1y" / "labels.parquet").is_file()
    assert {p: p.stat().st_mtime_ns for p in built} == built
