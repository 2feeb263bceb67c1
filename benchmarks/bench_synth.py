"""Benchmark `cohortflow.synth.generate`: rows/s and peak RSS per size.

Each size runs in a fresh subprocess, so peak RSS (``ru_maxrss``) is per size.

    python benchmarks/bench_synth.py                 # 100000 persons
    python benchmarks/bench_synth.py 10000 1000000   # several sizes
"""

from __future__ import annotations

import argparse

from _measure import run_child  # beside this script

CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
from cohortflow import synth
persons, seed = int(sys.argv[1]), int(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    s = synth.generate(persons, seed, Path(tmp) / "cdm", progress=False)
    wall = time.perf_counter() - start
    disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
print(json.dumps({"persons": persons, "rows": s.total_rows, "wall_s": wall,
                  "rss_mb": rss_mb, "disk_mb": disk / 2**20, "auroc": s.oracle_auroc,
                  "prevalence": s.n_outcomes / max(s.n_eligible, 1)}))
"""


def run(persons: int, seed: int) -> dict[str, float]:
    return run_child(CHILD, persons, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100_000])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"{'persons':>10} {'rows':>12} {'wall s':>8} {'rows/s':>12} {'peak RSS MB':>12} "
          f"{'disk MB':>8} {'oracle AUROC':>12} {'prevalence':>10}")
    for size in args.sizes:
        r = run(size, args.seed)
        print(f"{r['persons']:>10,} {r['rows']:>12,} {r['wall_s']:>8.2f} "
              f"{r['rows'] / r['wall_s']:>12,.0f} {r['rss_mb']:>12,.0f} {r['disk_mb']:>8,.0f} "
              f"{r['auroc']:>12.4f} {r['prevalence']:>10.3f}", flush=True)


if __name__ == "__main__":
    main()
