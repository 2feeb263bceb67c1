"""Cohort work grows with the number of distinct cohorts a study uses, not with its analyses.

One synthetic source (``source.synth``, ``--persons``) is generated and ingested once; then
three studies over that same event store are run, with the laptop profile through
``cohortflow run``, up to the cohort step and the labels (the targets are every used
cohort's attrition and every analysis's labels; no features, models or report):

- ``1 analysis``: asthma x exacerbation x 1y, which reads 2 cohorts;
- ``5 paired``: 5 targets, each with its own concept-set outcome, one time at risk: 5
  analyses reading 10 cohorts (5 targets + 5 outcome cohorts);
- ``5x5x2 grid``: the same 5 targets x the same 5 outcomes x 2 times at risk: 50 analyses
  reading the same 10 cohorts.

A concept-set outcome is a cohort of its own (``Study.library``), so an analysis always
reads two cohorts: "5 cohorts used by 1 analysis" cannot be built, and the paired study is
the few-analyses reference with the grid's exact cohort set.  The studies share the name
(``reuse``) and the results folder, so each reuses the store (its synth and ingest keys do
not change); the cohort tables, labels and their timing files of the previous study are
deleted before each run, so every study builds its own cohorts.  Printed per study:
analyses, cohorts used, ``cohort_shard`` jobs and the sum of their wall seconds (column
``s`` of ``results/reuse/benchmarks/cohort_shard/**.tsv``), the same for ``attrition`` and
``labels``, and the whole run's wall seconds (Snakemake's start and planning included).
Times are printed, never checked.

    python benchmarks/bench_cohort_reuse.py                      # 200000 persons
    python benchmarks/bench_cohort_reuse.py --persons 1000000 --keep /tmp/reuse
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
NAME = "reuse"

#: Targets: each person's first event of a concept set, 365 days observed before it.
TARGETS = {"asthma": ("asthma", 317009, "CONDITION"),
           "albuterol_new_users": ("albuterol", 1154343, "DRUG"),
           "otitis_media": ("otitis_media", 372328, "CONDITION"),
           "pharyngitis": ("pharyngitis", 4112343, "CONDITION"),
           "amoxicillin_new_users": ("amoxicillin", 1713332, "DRUG")}
#: Concept-set outcomes (each a cohort of its own in the library).
OUTCOMES = {"exacerbation": ("asthma_exacerbation", 2000000003, "CONDITION"),
            "bronchitis": ("bronchitis", 260139, "CONDITION"),
            "strep_throat": ("strep_throat", 28060, "CONDITION"),
            "fever": ("fever", 2000000006, "CONDITION"),
            "er_visit": ("er_visit", 9203, "VISIT")}
#: The study's analyses grids, by label.
DESIGNS: dict[str, list[dict[str, Any]]] = {
    "1 analysis": [{"target": "asthma", "outcome": "exacerbation", "time_at_risk": "1y"}],
    "5 paired": [{"target": t, "outcome": o, "time_at_risk": "1y"}
                 for t, o in zip(TARGETS, OUTCOMES, strict=True)],
    "5x5x2 grid": [{"targets": list(TARGETS), "outcomes": list(OUTCOMES),
                    "times_at_risk": ["1y", "2y_first"]}],
}


def study(persons: int, analyses: list[dict[str, Any]]) -> dict[str, Any]:
    """seeds/studies/many.yaml with the library above, ``persons`` persons and these
    analyses (source, shards, name and concept sets identical for every design)."""
    base = yaml.safe_load((REPO / "seeds" / "studies" / "many.yaml").read_text())
    base["name"] = NAME
    base["source"]["synth"]["persons"] = persons
    concepts = {**TARGETS, **OUTCOMES}.values()
    base["concept_sets"] = {
        name: {"domain": domain, "include": [{"concept_id": cid, "descendants": domain != "VISIT"}]}
        for name, cid, domain in sorted(concepts)}
    base["cohorts"] = {target: {"entry": {"concept_set": concept, "first_only": True},
                                "prior_observation_days": 365}
                       for target, (concept, _, _) in TARGETS.items()}
    base["outcomes"] = {name: {"concept_set": concept}
                        for name, (concept, _, _) in OUTCOMES.items()}
    base["times_at_risk"] = {k: v for k, v in base["times_at_risk"].items()
                             if k in ("1y", "2y_first")}
    base["analyses"] = analyses
    return base


def run(study_file: Path, root: Path, targets: list[str]) -> float:
    """Wall seconds of ``cohortflow run STUDY -- TARGETS`` (laptop profile) in ``root``."""
    env = {**os.environ, "COHORTFLOW_PSEUDONYM_KEY": "bench-only-key"}
    cmd = [sys.executable, "-m", "cohortflow", "run", str(study_file), "--profile", "laptop",
           "--results", str(root / "results"), "--", *targets]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:6])} ... failed:\n{done.stderr[-3000:]}")
    return wall


def seconds(folder: Path) -> tuple[int, float]:
    """Jobs (timing files) under ``folder`` and the sum of their ``s`` column."""
    total, jobs = 0.0, 0
    for tsv in sorted(folder.rglob("*.tsv")):
        with tsv.open() as handle:
            total += sum(float(row["s"]) for row in csv.DictReader(handle, delimiter="\t"))
        jobs += 1
    return jobs, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=200_000)
    parser.add_argument("--keep", type=Path, help="work here and keep it (a store already "
                        "there for the same persons is reused)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from cohortflow.layout import Layout
    from cohortflow.study import load_study

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_cohort_reuse_"))
    root.mkdir(parents=True, exist_ok=True)
    layout = Layout.of(root / "results", NAME)
    try:
        prep = root / "prepare.yaml"
        prep.write_text(yaml.safe_dump(study(args.persons, DESIGNS["1 analysis"])))
        prep_wall = run(prep, root, [str(layout.store)])
        source = {step: seconds_of(layout.benchmark(step)) for step in ("synth", "ingest")}
        rows = []
        for label, analyses in DESIGNS.items():
            for stale in (layout.root / "cohorts", layout.root / "analyses",
                          layout.benchmarks / "cohort_shard", layout.benchmarks / "attrition",
                          layout.benchmarks / "labels"):
                shutil.rmtree(stale, ignore_errors=True)
            file = root / f"{label.replace(' ', '_')}.yaml"
            file.write_text(yaml.safe_dump(study(args.persons, analyses)))
            loaded = load_study(file)
            used = loaded.cohorts_used()
            targets = [str(layout.cohort_attrition(c)) for c in used]
            targets += [str(layout.labels(a.id)) for a in loaded.analysis_list()]
            wall = run(file, root, targets)
            rows.append((label, len(loaded.analysis_list()), len(used),
                         seconds(layout.benchmarks / "cohort_shard"),
                         seconds(layout.benchmarks / "attrition"),
                         seconds(layout.benchmarks / "labels"), wall))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    shards = load_study(prep).shards
    print(f"{args.persons} persons, {shards} shards, laptop profile, "
          f"{os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.2f}")
    print(f"source once: synth {source['synth']:.1f} s + ingest {source['ingest']:.1f} s "
          f"(jobs' wall); run {prep_wall:.1f} s")
    print(f"{'study':<12}{'analyses':>9}{'cohorts':>8}{'shard jobs':>11}{'shard s':>9}"
          f"{'attr jobs':>10}{'attr s':>8}{'label jobs':>11}{'labels s':>9}{'run s':>8}")
    for label, analyses_n, cohorts_n, shard, attr, labels, wall in rows:
        print(f"{label:<12}{analyses_n:>9}{cohorts_n:>8}{shard[0]:>11}{shard[1]:>9.1f}"
              f"{attr[0]:>10}{attr[1]:>8.1f}{labels[0]:>11}{labels[1]:>9.1f}{wall:>8.1f}")


def seconds_of(tsv: Path) -> float:
    """The ``s`` column of one job's timing file."""
    with tsv.open() as handle:
        return sum(float(row["s"]) for row in csv.DictReader(handle, delimiter="\t"))


if __name__ == "__main__":
    main()
