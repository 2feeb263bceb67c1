"""How long Snakemake takes to plan a study of many analyses (dry run), and its jobs per rule.

A generated study of 20 target cohorts x 25 outcomes x 2 times at risk (1,000 analyses),
each trained with 4 model configurations, is dry-run from an empty results directory with
the laptop profile, so every job is planned: synth, ingest, every cohort's shards and
attrition, one feature tensor per target, one label table per analysis, every
configuration, each analysis's model and export, the report and the manifest.  The
references, measured in the same run, are the one-analysis demo and the seed study
seeds/studies/many.yaml.  The study's own expansion (``Study.analysis_list``,
``models.configurations``) is timed in-process.

    python benchmarks/bench_analyses.py                  # 20 x 25 x 2, 4 configurations
    python benchmarks/bench_analyses.py --targets 5 --outcomes 5

The CPU seconds (user + system of the dry run's process tree) are the figure to compare on
a busy machine; the wall seconds also hold the waits for the CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

# Concepts the synthetic data hold (cohortflow.synth.vocab): (name, concept id, domain).
CONCEPTS = [
    ("asthma", 317009, "CONDITION"), ("allergic_rhinitis", 257007, "CONDITION"),
    ("atopic_dermatitis", 133834, "CONDITION"), ("pharyngitis", 4112343, "CONDITION"),
    ("bronchitis", 260139, "CONDITION"), ("otitis_media", 372328, "CONDITION"),
    ("strep_throat", 28060, "CONDITION"), ("ankle_sprain", 81151, "CONDITION"),
    ("gastroenteritis", 2000000004, "CONDITION"), ("conjunctivitis", 2000000005, "CONDITION"),
    ("fever", 2000000006, "CONDITION"), ("urti", 2000000007, "CONDITION"),
    ("exacerbation", 2000000003, "CONDITION"), ("albuterol", 1154343, "DRUG"),
    ("amoxicillin", 1713332, "DRUG"), ("acetaminophen", 1125315, "DRUG"),
    ("ibuprofen", 1177480, "DRUG"), ("inhaled_steroid", 2000000105, "DRUG"),
    ("spirometry", 2000000301, "PROCEDURE"), ("nebulizer", 2000000302, "PROCEDURE"),
    ("er_visit", 9203, "VISIT"), ("inpatient_visit", 9201, "VISIT"),
]


def generated_study(targets: int, outcomes: int, configs: int) -> dict[str, Any]:
    """The demo study turned into a library: ``targets`` first-event cohorts (a concept,
    and a prior observation of 365 or 730 days), ``outcomes`` outcomes (concept sets, every
    fifth a cohort of visits of the library), two times at risk, one cross-product analysis,
    and a sweep of ``configs`` logistic regressions (C values)."""
    study = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
    del study["cohort"]
    study["name"] = "bench_analyses"
    study["concept_sets"] = {name: {"domain": domain, "include": [{"concept_id": cid}]}
                             for name, cid, domain in CONCEPTS}
    cohorts: dict[str, Any] = {}
    for i in range(targets):
        name = CONCEPTS[i % len(CONCEPTS)][0]
        prior = 365 * (1 + i // len(CONCEPTS) % 2)
        cohorts[f"first_{name}_{prior}d"] = {
            "entry": {"concept_set": name, "first_only": True},
            "prior_observation_days": prior}
    library_outcomes: dict[str, Any] = {}
    for i in range(outcomes):
        name = CONCEPTS[(i + 3) % len(CONCEPTS)][0]
        key = f"o{i:02d}_{name}"
        if i % 5 == 4:  # a cohort outcome: every such event inside observation
            cohorts[f"{key}_events"] = {
                "entry": {"concept_set": name, "first_only": False},
                "prior_observation_days": 0,
                "exit": {"strategy": "date_offset", "date_field": "end"}}
            library_outcomes[key] = {"cohort": f"{key}_events"}
        else:
            library_outcomes[key] = {"concept_set": name, "first_occurrence": i % 2 == 1}
    study["cohorts"] = cohorts
    study["outcomes"] = library_outcomes
    study["times_at_risk"] = {
        "1y": {"start_days": 1, "end_days": 365},
        "2y_first": {"start_days": 1, "end_days": 730, "exclude_prior_outcome": True,
                     "min_days_at_risk": 365}}
    targets_ = [n for n in cohorts if n.startswith("first_")]
    study["analyses"] = [{"targets": targets_, "outcomes": list(library_outcomes),
                          "times_at_risk": ["1y", "2y_first"]}]
    study["model"] = {"sweep": {
        "families": [{"family": "logistic", "penalty": ["l2"],
                      "C": [round(0.01 * 10 ** (3 * i / max(configs - 1, 1)), 6)
                            for i in range(configs)]}],
        "search": {"method": "grid"}}}
    return study


def dry_run(study: Path, workdir: Path) -> tuple[float, float, float, dict[str, int]]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MiB) and jobs per rule of a dry
    run from empty results."""
    workdir.mkdir()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--workflow-profile", str(REPO / "profiles" / "laptop"), "--directory",
           str(workdir), "--config", f"study={study}", "results=results", "--dry-run",
           "--quiet", "rules"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, job_counts(out)


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's ``Job stats`` table (rule, count), in its order, without the total.

    >>> job_counts("Job stats:\\njob  count\\n---  -----\\nsynth 1\\nlabels 25\\ntotal 26\\n")
    {'synth': 1, 'labels': 25}
    """
    table = output.split("Job stats:", 1)[1]
    counts: dict[str, int] = {}
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if match is None or match[1] == "total":
            break
        counts[match[1]] = int(match[2])
    return counts


def expand_seconds(study: Path) -> tuple[float, int, int]:
    """Seconds to load the study and expand its analyses and configurations, in-process
    (imports not counted)."""
    code = ("import time, sys; from cohortflow.study import load_study; "
            "from cohortflow import models; t = time.perf_counter(); "
            "s = load_study(sys.argv[1]); a = len(s.analysis_list()); "
            "c = len(models.configurations(s)); print(time.perf_counter() - t, a, c)")
    out = subprocess.run([sys.executable, "-c", code, str(study)], capture_output=True,
                         text=True, check=True, cwd=REPO).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--outcomes", type=int, default=25)
    parser.add_argument("--configs", type=int, default=4, help="configurations per analysis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_analyses_") as tmp:
        root = Path(tmp)
        big = root / "bench_analyses.yaml"
        big.write_text(yaml.safe_dump(generated_study(args.targets, args.outcomes,
                                                      args.configs), sort_keys=False))
        studies = {"demo": REPO / "seeds" / "studies" / "demo.yaml",
                   "many.yaml": REPO / "seeds" / "studies" / "many.yaml",
                   f"{args.targets}x{args.outcomes}x2": big}
        rows = {}
        for label, path in studies.items():
            expand, analyses, configs = expand_seconds(path)
            wall, cpu, rss, counts = dry_run(path, root / f"run_{len(rows)}")
            rows[label] = (analyses, configs, expand, wall, cpu, rss, counts)
    width = max(len(s) for s in rows) + 2
    print(f"{'study':<{width}}{'analyses':>9}{'configs':>9}{'jobs':>8}{'expand s':>10}"
          f"{'dry-run s':>11}{'CPU s':>8}{'CPU ms/job':>12}{'RSS MiB':>9}")
    for label, (analyses, configs, expand, wall, cpu, rss, counts) in rows.items():
        jobs = sum(counts.values())
        print(f"{label:<{width}}{analyses:>9}{configs:>9}{jobs:>8}{expand:>10.2f}"
              f"{wall:>11.2f}{cpu:>8.1f}{1000 * cpu / jobs:>12.1f}{rss:>9.0f}")
    print("\njobs per rule")
    rules = list(dict.fromkeys(r for *_, counts in rows.values() for r in counts))
    print(f"{'rule':<14}" + "".join(f"{label:>{width}}" for label in rows))
    for rule in rules:
        print(f"{rule:<14}" + "".join(f"{row[-1].get(rule, 0):>{width}}"
                                      for row in rows.values()))


if __name__ == "__main__":
    main()
