"""The workflow's size at warehouse scale: jobs, files and directory entries per stage, and
what the plan costs Snakemake (dry run), as the event store's shard count grows.

The study is ``seeds/studies/many.yaml`` (7 library cohorts, 3 targets, 25 analyses, one
configuration each) with ``shards`` set to each size.  Every size is dry-run from an empty
results directory, so every job is planned; the dry run's job list gives, per rule, the jobs
and the paths they declare (outputs, log, benchmark).  A directory output (the event store,
a Zarr tensor) counts as one path here: docs/scaling.md counts the files inside them.

    python benchmarks/bench_scale_dag.py                 # 64, 256, 1024, 4096 shards
    python benchmarks/bench_scale_dag.py 4096
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PATH_KEYS = ("output", "log", "benchmark")
RULE = re.compile(r"^\s*(?:local)?rule (\w+):$")  # a group's jobs are indented
FIELD = re.compile(r"^\s+(\w+): (.*)$")


def write_study(root: Path, shards: int) -> Path:
    study = yaml.safe_load((REPO / "seeds" / "studies" / "many.yaml").read_text())
    study["shards"] = shards
    path = root / f"many_{shards}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def dry_run(study: Path, root: Path) -> tuple[str, float, float, float]:
    """The dry run's job list, its wall and CPU seconds and its peak RSS (MiB)."""
    workdir = root / f"run_{study.stem}"
    workdir.mkdir()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--workflow-profile", str(REPO / "profiles" / "laptop"), "--directory",
           str(workdir), "--config", f"study={study}", "results=results", "--dry-run"]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    return text, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def per_rule(text: str) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Jobs and declared paths per rule, and the number of entries of each folder."""
    jobs: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    entries: dict[str, set[str]] = defaultdict(set)
    rule = None
    for line in text.splitlines():
        if (m := RULE.match(line)) is not None:
            rule = m.group(1)
            jobs[rule] += 1
        elif rule is not None and (m := FIELD.match(line)) is not None:
            if m.group(1) in PATH_KEYS:
                for path in m.group(2).split(", "):
                    paths[rule] += 1
                    parent, _, name = path.rpartition("/")
                    entries[parent].add(name)
        elif not line.startswith(" "):
            rule = None
    folders = Counter({folder: len(names) for folder, names in entries.items()})
    return jobs, paths, folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[64, 256, 1024, 4096])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_scale_dag_") as tmp:
        root = Path(tmp)
        print(f"{'shards':>6} {'jobs':>7} {'paths':>7} {'widest folder':>13} "
              f"{'dry-run s':>9} {'CPU s':>7} {'ms/job':>6} {'RSS MiB':>8}")
        detail = []
        for size in args.sizes:
            text, wall, cpu, rss = dry_run(write_study(root, size), root)
            jobs, paths, folders = per_rule(text)
            widest, width = folders.most_common(1)[0]
            total = sum(jobs.values())
            print(f"{size:>6} {total:>7} {sum(paths.values()):>7} {width:>13} {wall:>9.1f} "
                  f"{cpu:>7.1f} {1000 * cpu / total:>6.1f} {rss:>8.0f}", flush=True)
            detail.append((size, jobs, paths, widest))
    for size, jobs, paths, widest in detail:
        print(f"\n{size} shards (widest folder: {widest}):")
        print(f"  {'rule':<14} {'jobs':>6} {'paths':>6}")
        for rule in jobs:
            print(f"  {rule:<14} {jobs[rule]:>6} {paths[rule]:>6}")


if __name__ == "__main__":
    main()
