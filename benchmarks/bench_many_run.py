"""The whole run of seeds/studies/many.yaml (25 analyses), and where its time goes, per rule.

The seed study of many analyses (3 targets x 4 outcomes x 2 times at risk, and one more;
two model configurations each) is run end to end with the laptop profile through
``cohortflow run``, at ``--persons`` synthetic persons, from an empty results folder:
synth, ingest, cohorts, features, labels, the sweep, models, exports, report, manifest.
Printed: the whole run's wall seconds, then per rule its jobs, the sum of their wall seconds
(column ``s`` of ``results/many/benchmarks/**.tsv``) and its share of that sum.  The laptop
profile runs jobs as threads of one process, so a job's ``cpu_time`` there is the whole
process's; only wall seconds are printed.  Jobs run side by side, so the sum can exceed the
run's wall.  Times are printed, never checked.

    python benchmarks/bench_many_run.py                     # 100000 persons
    python benchmarks/bench_many_run.py --persons 20000 --keep /tmp/many
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
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

#: The rule of each benchmarks/ folder (or top-level file) whose name is not the rule's.
RULE_OF = {"sweep": "sweep_config"}


def rule_seconds(benchmarks: Path) -> dict[str, tuple[int, float]]:
    """Per rule, its jobs (timing files) and the sum of their ``s`` column, by rule name."""
    out: dict[str, list[float]] = defaultdict(list)
    for tsv in sorted(benchmarks.rglob("*.tsv")):
        first = tsv.relative_to(benchmarks).parts[0].removesuffix(".tsv")
        with tsv.open() as handle:
            wall = sum(float(row["s"]) for row in csv.DictReader(handle, delimiter="\t"))
        out[RULE_OF.get(first, first)].append(wall)
    return {rule: (len(walls), sum(walls)) for rule, walls in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="run here and keep the results")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_many_run_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        study = yaml.safe_load((REPO / "seeds" / "studies" / "many.yaml").read_text())
        study["source"]["synth"]["persons"] = args.persons
        file = root / "many.yaml"
        file.write_text(yaml.safe_dump(study, sort_keys=False))
        env = {**os.environ, "COHORTFLOW_PSEUDONYM_KEY": "bench-only-key"}
        cmd = [sys.executable, "-m", "cohortflow", "run", str(file), "--profile", "laptop",
               "--results", str(root / "results")]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        rules = rule_seconds(root / "results" / study["name"] / "benchmarks")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    total = sum(s for _, s in rules.values())
    print(f"seeds/studies/many.yaml, {args.persons} persons, laptop profile, "
          f"{os.cpu_count()} cores; load average {load:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end")
    print(f"whole run: {wall:.1f} s wall")
    print(f"{'rule':<14}{'jobs':>6}{'sum of job wall s':>19}{'share':>8}")
    for rule, (jobs, seconds) in sorted(rules.items(), key=lambda kv: -kv[1][1]):
        print(f"{rule:<14}{jobs:>6}{seconds:>19.1f}{seconds / total:>8.1%}")
    print(f"{'total':<14}{sum(j for j, _ in rules.values()):>6}{total:>19.1f}{1:>8.1%}")


if __name__ == "__main__":
    main()
