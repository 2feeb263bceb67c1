"""Benchmark ``cohortflow export-mart``: a cohort's de-identified OMOP CDM subset (Parquet
tables and one DuckDB file) with its de-identification record.

Per size, not timed: ``cohortflow synth`` (demo preset), the ingest, and a cohort of every
person with a visit (or, with ``--cohort demo``, the demo study's asthma cohort, about a
quarter of the persons), built shard by shard as the workflow builds it.  Then, timed in its
own process with ``os.wait4`` (wall seconds, peak RSS): ``cohortflow export-mart`` as a user
types it.  Rows written count every table of the mart (vocabulary included).

    python benchmarks/bench_mart.py                    # 20000 persons
    python benchmarks/bench_mart.py 100000 --shards 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml
from _measure import measure  # beside this script

REPO = Path(__file__).resolve().parents[1]
COHORTFLOW = [sys.executable, "-m", "cohortflow"]

BUILD = """
import sys
from pathlib import Path
from cohortflow import cohorts, events
from cohortflow.layout import Layout
from cohortflow.study import load_study
study, store, results = load_study(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
layout = Layout.of(results, study.name)
for s in events.list_shards(store):
    cohorts.write_shard(study, "cohort", store, s, layout.cohort_table("cohort", s),
                        layout.cohort_shard_attrition("cohort", s))
"""


def study_file(root: Path, cdm: Path, shards: int, everyone: bool) -> Path:
    """The demo study on the synthetic CDM; with ``everyone``, its cohort is every person
    with a visit (entered at the first), no prior observation needed."""
    raw = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
    raw["name"], raw["shards"] = "bench_mart", shards
    raw["source"] = {"omop": {"path": str(cdm)}}
    if everyone:
        raw["concept_sets"]["visit"] = {"domain": "VISIT", "include": [
            {"concept_id": c} for c in (9201, 9202, 9203)]}
        raw["cohort"]["entry"] = {"concept_set": "visit", "first_only": True}
        raw["cohort"]["prior_observation_days"] = 0
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def bench(persons: int, root: Path, shards: int, everyone: bool) -> dict[str, float]:
    cdm, results = root / "omop", root / "results"
    store = results / "bench_mart" / "events"
    measure([*COHORTFLOW, "synth", "--persons", str(persons), "--seed", "7", "--out",
             str(cdm), "--no-progress"], root)
    measure([*COHORTFLOW, "ingest", str(cdm), "--out", str(store), "--shards", str(shards)],
            root)
    study = study_file(root, cdm, shards, everyone)
    measure([sys.executable, "-c", BUILD, str(study), str(store), str(results)], root)
    wall, rss = measure([*COHORTFLOW, "export-mart", str(study), "--cohort", "cohort",
                         "--out", str(root / "mart"), "--results", str(results)], root)
    record = json.loads((root / "mart" / "deid_report.json").read_text())
    rows = sum(int(t["rows"]) for t in record["tables"] if isinstance(t["rows"], int))
    return {"persons": float(record["persons"]), "rows": float(rows), "wall": wall, "rss": rss,
            "k_reached": float(record["k_reached"] or 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[20_000],
                        help="synthetic persons per run")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--cohort", choices=["everyone", "demo"], default="everyone")
    args = parser.parse_args()
    os.environ.setdefault("COHORTFLOW_PSEUDONYM_KEY", "bench-mart-key")
    print(f"\ncohortflow export-mart of a cohort ({args.cohort}) of a synthetic demo CDM, "
          f"{args.shards} shards\n")
    print(f"| {'synth persons':>13} | {'in cohort':>9} | {'rows written':>12} | {'wall s':>7} | "
          f"{'persons/s':>9} | {'rows/s':>9} | {'peak RSS MB':>11} | {'k reached':>9} |")
    print(f"|{'-' * 15}|{'-' * 11}|{'-' * 14}|{'-' * 9}|{'-' * 11}|{'-' * 11}|{'-' * 13}|"
          f"{'-' * 11}|")
    for persons in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench_mart_") as tmp:
            r = bench(persons, Path(tmp), args.shards, args.cohort == "everyone")
        print(f"| {persons:>13,} | {r['persons']:>9,.0f} | {r['rows']:>12,.0f} | "
              f"{r['wall']:>7.2f} | {r['persons'] / r['wall']:>9,.0f} | "
              f"{r['rows'] / r['wall']:>9,.0f} | {r['rss']:>11,.0f} | {r['k_reached']:>9,.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
