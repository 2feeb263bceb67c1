"""Benchmark the planted rare disease found and matched: ``seeds/studies/rare_disease.yaml``
through Snakemake (laptop profile) up to its analysis's ``match`` step, then an independent
check of every matched pair.

The run: synth (with ``rare_disease_per_million`` scaled to keep about as many planted cases
as the seed study at any size), ingest, the cohorts' shards, labels, match — Snakemake with
the analysis's ``matched.parquet`` as its target, measured with ``os.wait4`` (wall, peak
RSS); each step's wall seconds and peak RSS from its Snakemake benchmark file.

The check (exit 1 on any failure), by plain Python over the event store and the labels, not
the matcher's code: every planted case (``oracle.json``) is a case of the target's labels
and no other person is; each matched set is one case and at most ``k`` label-false rows, no
row in two sets; every (case, control) pair has the same sex, ages at index within
``age_years``, index dates within ``index_days`` and prior observations within
``observation_days``, each read from the store's birth, gender and observation-period
events; a case left with fewer than ``k`` controls has no unused eligible control left; the
counts of ``matching.json`` are the ones recomputed here.

    python benchmarks/bench_rare.py                  # 1,000,000 persons (10-20 min, 2 cores)
    python benchmarks/bench_rare.py 200000 --keep /tmp/rare   # keep the results folder
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from _measure import measure  # beside this script

REPO = Path(__file__).resolve().parents[1]
SEED_STUDY = REPO / "seeds" / "studies" / "rare_disease.yaml"
DAYS_PER_YEAR = 365.25  # an age is whole days from the birth to the index over this
COUNTS = ["cases", "cases_with_k", "cases_with_fewer", "cases_with_none", "controls"]
STEPS = ["synth", "ingest", "cohort_shard", "attrition", "labels", "match"]


def study_file(root: Path, persons: int) -> tuple[Path, dict[str, Any]]:
    """The seed study with ``persons`` persons and the plant's rate scaled so that the
    expected planted count stays the seed study's."""
    raw = yaml.safe_load(SEED_STUDY.read_text())
    synth = raw["source"]["synth"]
    expected = synth["rare_disease_per_million"] * synth["persons"] / 1e6
    synth["persons"] = persons
    rate = expected * 1e6 / persons
    synth["rare_disease_per_million"] = int(rate) if rate == int(rate) else round(rate, 6)
    path = root / "rare_disease.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, raw


def run_to_match(study: Path, root: Path, target: Path) -> tuple[float, float]:
    """Snakemake up to ``target`` (the analysis's matched rows): wall s and peak RSS MiB."""
    return measure([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                    "--workflow-profile", str(REPO / "profiles" / "laptop"), "--directory",
                    str(root), "--config", f"study={study}", f"results={root / 'results'}",
                    "--", str(target)], root)


def step_costs(benchmarks: Path) -> list[tuple[str, int, float, float, float]]:
    """Per step: jobs, summed wall s, slowest job's s and the largest max_rss (MiB) of its
    Snakemake benchmark files (``<step>.tsv`` or ``<step>/**/*.tsv``)."""
    rows = []
    for step in STEPS:
        files = sorted([*benchmarks.glob(f"{step}.tsv"), *(benchmarks / step).rglob("*.tsv")])
        records = []
        for f in files:
            with f.open() as handle:
                records.extend(csv.DictReader(handle, delimiter="\t"))
        if not records:
            continue
        seconds = [float(r["s"]) for r in records]
        rss = [float(r["max_rss"]) for r in records if r["max_rss"] not in ("", "NA", "-")]
        rows.append((step, len(records), sum(seconds), max(seconds), max(rss, default=0.0)))
    return rows


def person_facts(store: Path, subjects: list[int]) -> dict[int, dict[str, Any]]:
    """Each subject's gender codes, earliest birth and observation periods ((start, end)
    dates, the n-th start paired with the n-th end), from the store's events."""
    codes = ["MEDS_BIRTH", "OBSERVATION_PERIOD//START", "OBSERVATION_PERIOD//END"]
    ev = (pl.scan_parquet(store / "data" / "*.parquet")
          .filter(pl.col("subject_id").is_in(pl.Series(subjects).implode())
                  & (pl.col("code").is_in(codes) | pl.col("code").str.starts_with("GENDER//")))
          .select("subject_id", "time", "code").collect().sort("subject_id", "time", "code"))
    facts: dict[int, dict[str, Any]] = {
        s: {"sex": set(), "birth": None, "starts": [], "ends": []} for s in subjects}
    for subject, time, code in ev.iter_rows():
        f = facts[subject]
        if code.startswith("GENDER//"):
            f["sex"].add(code)
        elif code == "MEDS_BIRTH":
            f["birth"] = time if f["birth"] is None else min(f["birth"], time)
        else:
            f["starts" if code.endswith("START") else "ends"].append(time.date())
    for f in facts.values():
        f["periods"] = list(zip(f.pop("starts"), f.pop("ends"), strict=False))
    return facts


def row_facts(label: dict[str, Any], person: dict[str, Any]) -> dict[str, Any]:
    """A labelled row's matching facts: sex (None unless exactly one gender code), age at
    index in years, index date and days of observation before it (None outside a period)."""
    index: dt.datetime = label["index_time"]
    prior = [(index.date() - a).days for a, b in person["periods"] if a <= index.date() <= b]
    birth = person["birth"]
    return {"row": label["row"], "label": label["label"],
            "sex": next(iter(person["sex"])) if len(person["sex"]) == 1 else None,
            "age": None if birth is None else (index - birth).days / DAYS_PER_YEAR,
            "day": index.date(), "prior": prior[0] if len(prior) == 1 else None}


def broken(case: dict[str, Any], control: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """The constraints of ``spec`` (the analysis's matching block) the pair breaks."""
    out = []
    if spec["sex"] and (case["sex"] is None or case["sex"] != control["sex"]):
        out.append(f"sex {case['sex']} vs {control['sex']}")
    for key, tol, unit in (("age", spec["age_years"], "y"),
                           ("day", spec["index_days"], "d"),
                           ("prior", spec["observation_days"], "d")):
        if tol is None:
            continue
        a, b = case[key], control[key]
        if a is None or b is None:
            out.append(f"{key} unknown ({a} vs {b})")
            continue
        gap = abs((a - b).days) if key == "day" else abs(a - b)
        if gap > tol:
            out.append(f"{key} {a} vs {b}: {gap} > {tol}{unit}")
    return out


def check(labels: pl.DataFrame, matched: pl.DataFrame, record: dict[str, Any],
          store: Path, oracle: dict[str, Any], prior_days: int) -> tuple[list[str], Counter[str]]:
    """Every failure of the checks of the module docstring, and the counts recomputed."""
    spec, k = record["matching"], record["matching"]["controls"]
    problems: list[str] = []
    planted = set(pl.scan_parquet(store / "data" / "*.parquet")
                  .filter(pl.col("code") == f"CONDITION//{oracle['concept_id']}")
                  .select("subject_id").unique().collect()["subject_id"].to_list())
    cases = labels.filter(pl.col("label"))
    if len(planted) != oracle["planted_cases"]:
        problems.append(f"{len(planted)} persons carry the planted code, oracle.json says "
                        f"{oracle['planted_cases']}")
    if set(cases["subject_id"].to_list()) != planted or cases.height != len(planted):
        problems.append(f"labels' cases ({cases.height}) are not the planted persons "
                        f"({len(planted)})")
    person = person_facts(store, sorted(set(labels["subject_id"].to_list())))
    rows = {r["row"]: row_facts(r, person[r["subject_id"]])
            for r in labels.rows(named=True)}
    counts: Counter[str] = Counter(cases=cases.height)
    seen: set[int] = set()
    for (set_id,), members in matched.group_by("match_set", maintain_order=True):
        case = rows[int(set_id)]
        controls = [rows[r] for r in members["row"].to_list() if r != set_id]
        if not case["label"] or set_id not in members["row"].to_list():
            problems.append(f"set {set_id}: its case is not a label-true member")
        if not 1 <= len(controls) <= k:
            problems.append(f"set {set_id}: {len(controls)} controls, not 1..{k}")
        counts["cases_with_k" if len(controls) == k else "cases_with_fewer"] += 1
        counts["controls"] += len(controls)
        for control in controls:
            if control["label"]:
                problems.append(f"set {set_id}: control {control['row']} is label-true")
            if control["row"] in seen:
                problems.append(f"control {control['row']} in two sets")
            seen.add(control["row"])
            problems += [f"set {set_id}, control {control['row']}: {b}"
                         for b in broken(case, control, spec)]
    counts["cases_with_none"] = cases.height - counts["cases_with_k"] - counts[
        "cases_with_fewer"]
    problems += [f"row {r['row']}: {r['prior']} days of prior observation < {prior_days}"
                 for r in rows.values() if r["prior"] is None or r["prior"] < prior_days]
    pool = sorted((r for r in rows.values() if not r["label"] and r["row"] not in seen),
                  key=lambda r: r["day"])
    days = [r["day"] for r in pool]
    reach = dt.timedelta(days=spec["index_days"] if spec["index_days"] is not None else 10**5)
    for case in (rows[r] for r in cases["row"].to_list()):
        size = matched.filter(pl.col("match_set") == case["row"]).height - 1
        near = pool[bisect.bisect_left(days, case["day"] - reach):
                    bisect.bisect_right(days, case["day"] + reach)]
        if size < k and (left := [c["row"] for c in near if not broken(case, c, spec)]):
            problems.append(f"case {case['row']}: {max(size, 0)} controls but unused "
                            f"eligible controls left, e.g. {left[:3]}")
    recorded = {key: record["counts"][key] for key in COUNTS}
    if recorded != {key: counts[key] for key in COUNTS}:
        problems.append(f"matching.json counts {recorded} != recomputed {dict(counts)}")
    return problems, counts


def num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("persons", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="results folder to use and keep (default: "
                        "a temporary folder, deleted); over kept results Snakemake reruns, "
                        "and times, only what changed, while the step table keeps the "
                        "benchmark files of the run that made each output")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_rare_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        problems = report(args.persons, root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if problems:
        print(f"\nFAILED: {len(problems)} problem(s)", *problems[:50], sep="\n  ")
        sys.exit(1)
    print("\nOK: every planted case found; every matched pair meets every constraint")


def report(persons: int, root: Path) -> list[str]:
    """Run, print the tables, and return the check's problems."""
    from cohortflow.layout import Layout
    from cohortflow.study import load_study

    study_path, raw = study_file(root, persons)
    study = load_study(study_path)
    analysis = next(a for a in study.analysis_list() if a.matching is not None)
    layout = Layout(root / "results" / study.name)
    wall, rss = run_to_match(study_path, root, layout.matched(analysis.id))
    oracle = json.loads((layout.root / "omop" / "oracle.json").read_text())["rare_disease"]
    labels = pl.read_parquet(layout.labels(analysis.id))
    matched = pl.read_parquet(layout.matched(analysis.id))
    record = json.loads(layout.matching(analysis.id).read_text())
    prior = int(raw["cohorts"][analysis.target].get("prior_observation_days", 0))
    problems, counts = check(labels, matched, record, layout.store, oracle, prior)

    synth = raw["source"]["synth"]
    print(f"{persons:,} persons, {study.shards} shards, rare_disease_per_million "
          f"{synth['rare_disease_per_million']:g}; analysis {analysis.id}, matching "
          f"{json.dumps(record['matching'])}")
    print(f"Snakemake to match: {wall:.0f} s wall, {rss:.0f} MiB peak RSS (largest process)")
    print(f"\n{'planted cases (oracle.json)':<40} {oracle['planted_cases']:>9}"
          f"   (expected {oracle['expected_cases']})")
    for key, name in (("cases", "cases in the target's labels"),
                      ("cases_with_k", f"cases matched with {record['matching']['controls']}"
                                       " controls"),
                      ("cases_with_fewer", "cases matched with fewer"),
                      ("cases_with_none", "cases with no control"),
                      ("controls", "controls used")):
        print(f"{name:<40} {counts[key]:>9}")
    print(f"{'label-false rows (candidate controls)':<40} "
          f"{labels.height - counts['cases']:>9}")
    print(f"\n{'variable':<28} {'cases':>10} {'ctrl before':>12} {'ctrl after':>11} "
          f"{'SMD before':>11} {'SMD after':>10}")
    for b in record["balance"]:
        print(f"{b['variable']:<28} {num(b['cases_mean'], 2):>10} "
              f"{num(b['controls_mean_before'], 2):>12} {num(b['controls_mean_after'], 2):>11} "
              f"{num(b['smd_before'], 3):>11} {num(b['smd_after'], 3):>10}")
    print(f"\n{'step':<14} {'jobs':>5} {'wall s':>9} {'slowest s':>10} {'max RSS MiB':>12}")
    for step, jobs, seconds, slowest, max_rss in step_costs(layout.benchmarks):
        print(f"{step:<14} {jobs:>5} {seconds:>9.1f} {slowest:>10.1f} {max_rss:>12.0f}")
    return problems


if __name__ == "__main__":
    main()
