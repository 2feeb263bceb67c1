"""How long Snakemake takes to build the DAG of a large model sweep (dry run).

For each size, a study whose sweep is a random search of that many configurations is
dry-run from an empty results directory (so every job is planned: synth, ingest, cohort
shards, labels, features, every configuration, leaderboard, report, manifest).  The
reference, measured in the same run, is the dry run of the one-model study; the
parameter-space expansion alone (``models.configurations``) is timed in-process.

    python benchmarks/bench_sweep_dag.py                # 100, 1000, 10000 configurations
    python benchmarks/bench_sweep_dag.py 10000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from _measure import measure  # beside this script

REPO = Path(__file__).resolve().parents[1]
# synth, ingest, 4 shards of each of the demo's 2 cohorts (its target and its outcome's),
# their 2 attritions, data_quality, labels, features, model, export, report, manifest, all
UPSTREAM_JOBS = 20


def write_study(root: Path, configs: int) -> Path:
    study = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
    if configs == 1:
        study["model"] = {"family": "logistic_l2", "C": 1.0}
    else:
        study["model"]["sweep"] = {
            "search": {"method": "random", "samples": configs},
            "families": [{"family": "gradient_boosting",
                          "learning_rate": {"low": 0.001, "high": 0.5, "log": True}}]}
    path = root / f"study_{configs}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def dry_run(study: Path, root: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a dry run."""
    workdir = root / f"run_{study.stem}"
    workdir.mkdir()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--workflow-profile", str(REPO / "profiles" / "laptop"), "--directory",
           str(workdir), "--config", f"study={study}", "results=results", "--dry-run",
           "--quiet", "rules"]
    return measure(cmd, REPO)


def expand_seconds(study: Path) -> float:
    code = ("import time, sys; from cohortflow.study import load_study; "
            "from cohortflow import models; s = load_study(sys.argv[1]); "
            "t = time.perf_counter(); n = len(models.configurations(s)); "
            "print(time.perf_counter() - t, n)")
    out = subprocess.run([sys.executable, "-c", code, str(study)], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 1000, 10000])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_sweep_dag_") as tmp:
        root = Path(tmp)
        ref_wall, ref_rss = dry_run(write_study(root, 1), root)
        for size in args.sizes:
            study = write_study(root, size)
            wall, rss = dry_run(study, root)
            jobs = UPSTREAM_JOBS + size
            rows.append((size, jobs, wall, rss, expand_seconds(study), wall / ref_wall))
    print(f"reference: one-model study, {UPSTREAM_JOBS + 1} jobs, dry run {ref_wall:.2f} s, "
          f"peak RSS {ref_rss:.0f} MiB")
    print(f"{'configs':>8} {'jobs':>7} {'dry-run s':>10} {'ms/config':>10} {'RSS MiB':>8} "
          f"{'expand s':>9} {'x ref':>6}")
    for size, jobs, wall, rss, expand, ratio in rows:
        print(f"{size:>8} {jobs:>7} {wall:>10.2f} {1000 * (wall - ref_wall) / size:>10.2f} "
              f"{rss:>8.0f} {expand:>9.3f} {ratio:>6.1f}")


if __name__ == "__main__":
    main()
