"""Benchmark `cohortflow synth --preset warehouse`: size, shape and speed of the warehouse.

Each size runs in a fresh subprocess, so peak RSS (``ru_maxrss``) is per size.  Events are
the rows of the six clinical event tables (visits, conditions, drugs, procedures,
measurements, observations); depth is the largest ``max_levels_of_separation``.

    python benchmarks/synth_warehouse.py                # 20000 persons
    python benchmarks/synth_warehouse.py 2000 100000    # several sizes
"""

from __future__ import annotations

import argparse

from _measure import run_child  # beside this script

CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
import numpy as np, polars as pl
from cohortflow import synth
persons, seed = int(sys.argv[1]), int(sys.argv[2])
tables = ["visit_occurrence", "condition_occurrence", "drug_exposure",
          "procedure_occurrence", "measurement", "observation"]
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "cdm"
    start = time.perf_counter()
    s = synth.generate(persons, seed, out, progress=False, preset="warehouse")
    wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    per_person = np.zeros(persons, np.int64)
    codes = set()
    for t in tables:
        prefix = {"visit_occurrence": "visit", "condition_occurrence": "condition",
                  "drug_exposure": "drug", "procedure_occurrence": "procedure"}.get(t, t)
        frame = pl.scan_parquet(out / t / "*.parquet")
        per_person += np.bincount(frame.select("person_id").collect()["person_id"].to_numpy()
                                  - 1, minlength=persons)
        codes |= set(frame.select(pl.col(f"{prefix}_concept_id").unique()).collect()
                     .to_series().to_list())
    depth = pl.read_parquet(out / "concept_ancestor.parquet")["max_levels_of_separation"].max()
    vocabulary = pl.scan_parquet(out / "concept.parquet").select(pl.len()).collect().item()
print(json.dumps({"persons": persons, "events": int(per_person.sum()),
                  "codes": len(codes), "vocabulary": vocabulary, "depth": depth,
                  "median": float(np.median(per_person)),
                  "p99": float(np.quantile(per_person, 0.99)), "wall_s": wall,
                  "rss_mb": rss_mb, "auroc": s.oracle_auroc}))
"""


def run(persons: int, seed: int) -> dict[str, float]:
    return run_child(CHILD, persons, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[20_000])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"{'persons':>9} {'events':>12} {'codes':>7} {'vocab':>7} {'depth':>5} "
          f"{'ev/p med':>8} {'ev/p p99':>8} {'wall s':>7} {'events/s':>10} "
          f"{'peak RSS MB':>11} {'oracle':>6}")
    for size in args.sizes:
        r = run(size, args.seed)
        print(f"{r['persons']:>9,} {r['events']:>12,} {r['codes']:>7,} {r['vocabulary']:>7,} "
              f"{r['depth']:>5} {r['median']:>8.0f} {r['p99']:>8.0f} {r['wall_s']:>7.1f} "
              f"{r['events'] / r['wall_s']:>10,.0f} {r['rss_mb']:>11,.0f} "
              f"{r['auroc']:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
