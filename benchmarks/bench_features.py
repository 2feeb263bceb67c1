"""Benchmark the features step against the scan limit, at several sizes.

For each size: synthetic OMOP → event store (one shard per ~25k persons, so a shard stays
the same size as the data grows) → the target's episode tables (the demo study's cohort),
untimed.  Then, each in its own process, measured with ``os.wait4`` (wall seconds; peak RSS
of the largest process of its tree, Dask workers included):

* the scan limit: one Polars pass over the same event shards computing
  ``group_by(subject_id, code).len()``;
* the features step (``features.build_tensor``: Dask LocalCluster, 2 workers).

    python benchmarks/bench_features.py                       # 100k, 300k, 1M persons
    python benchmarks/bench_features.py 20000 --keep /tmp/b   # one size, keep the data
    python benchmarks/bench_features.py 100000 --layouts      # + chunking / dense vs sparse
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PERSONS_PER_SHARD = 25_000
SCAN = """
import sys, polars as pl
frames = [pl.scan_parquet(p).group_by("subject_id", "code").len() for p in sys.argv[1:]]
print(sum(f.height for f in pl.collect_all(frames)))
"""
COHORTS = """
import sys
from pathlib import Path
from cohortflow import cohorts, events, layout
from cohortflow.study import load_study
study, store, out = load_study(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
for shard in events.list_shards(store):
    cohorts.write_shard(study, "cohort", store, shard, layout.shard_table(out, shard),
                        layout.shard_attrition(out, shard))
"""
FEATURES = """
import sys, time
from pathlib import Path
from cohortflow import features
from cohortflow.features import _build
from cohortflow.study import load_study
build = _build.build_store
def timed(*args, **kwargs):
    start = time.perf_counter()
    build(*args, **kwargs)
    print(time.perf_counter() - start)
_build.build_store = timed  # the step's compute, without the Dask cluster's start and stop
out = Path(sys.argv[4])
features.build_tensor(load_study(sys.argv[1]), "cohort", Path(sys.argv[2]), Path(sys.argv[3]),
                      out, scratch=out.parent / ".dask", workers=int(sys.argv[5]))
"""


def run_python(code: str, *args: object) -> tuple[float, float, str]:
    return measure_isolated([sys.executable, "-c", code, *map(str, args)])


def measure_isolated(cmd: list[str]) -> tuple[float, float, str]:
    """Measure in a fresh helper process, so the RSS maximum is this command's alone."""
    helper = (
        "import os, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)\n"
        "out = p.stdout.read()\n"
        "_, status, ru = os.wait4(p.pid, 0)\n"
        "wall = time.perf_counter() - t\n"
        "import resource\n"
        "rss = max(ru.ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(json.dumps({'rc': os.waitstatus_to_exitcode(status), 'wall': wall,"
        " 'rss': rss / 1024, 'out': out.decode()}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", helper, *cmd], capture_output=True, text=True,
                          check=False)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    if proc.returncode or result.get("rc"):
        sys.exit(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-3000:]}")
    return result["wall"], result["rss"], result["out"]


def prepare(persons: int, root: Path) -> tuple[Path, Path, Path, int]:
    import yaml

    shards = max(4, persons // PERSONS_PER_SHARD)
    cli = [sys.executable, "-m", "cohortflow"]
    omop_dir, store, cohort_dir = root / "omop", root / "events", root / "cohort"
    if not (store / "metadata" / "dataset.json").is_file():
        subprocess.run([*cli, "synth", "--persons", str(persons), "--seed", "7", "--out",
                        str(omop_dir), "--no-progress"], check=True, capture_output=True)
        subprocess.run([*cli, "ingest", str(omop_dir), "--out", str(store), "--shards",
                        str(shards)], check=True, capture_output=True)
    study = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
    study["shards"] = shards
    study["source"]["synth"]["persons"] = persons
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    if not (cohort_dir / "shards").is_dir():
        run_python(COHORTS, root / "study.yaml", store, cohort_dir)
    n_events = json.loads((store / "metadata" / "dataset.json").read_text())["events"]
    return root / "study.yaml", store, cohort_dir, n_events


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench(persons: int, root: Path, workers: int) -> dict[str, object]:
    study, store, cohort_dir, n_events = prepare(persons, root)
    shard_files = sorted(str(p) for p in (store / "data").glob("*.parquet"))
    scan_wall, scan_rss, _ = run_python(SCAN, *shard_files)
    out = root / "features.zarr"
    wall, rss, stdout = run_python(FEATURES, study, store, cohort_dir, out, workers)
    import xarray as xr

    ds = xr.open_zarr(out)
    return {"persons": persons, "shards": len(shard_files), "events": n_events,
            "subjects": ds.sizes["subject"], "features": ds.sizes["feature"],
            "wall": wall, "compute": float(stdout.split()[-1]), "rss": rss,
            "size": tree_size(out) / 2**20,
            "scan_wall": scan_wall, "scan_rss": scan_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("persons", nargs="*", type=int, default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="Keep (and reuse) the data under this folder.")
    parser.add_argument("--layouts", action="store_true",
                        help="Also compare chunk layouts and dense vs sparse on the last size.")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for persons in args.persons:
            root = base / f"p{persons}"
            root.mkdir(parents=True, exist_ok=True)
            rows.append(bench(persons, root, args.workers))
            print_table(rows)
        if args.layouts:
            import _layouts  # beside this script

            _layouts.main(base / f"p{args.persons[-1]}" / "features.zarr")


def print_table(rows: list[dict[str, object]]) -> None:
    head = (f"{'persons':>9} {'shards':>6} {'events':>11} {'cohort':>7} {'feat':>5} "
            f"{'wall s':>7} {'events/s':>10} {'peak RSS':>9} {'store':>8} "
            f"{'scan s':>7} {'scan RSS':>9} {'ratio':>6} {'compute s':>9} {'ratio':>6}")
    print("\nfeatures step (Dask LocalCluster) vs the scan limit "
          "(one Polars group_by(subject_id, code).len() pass)")
    print(head)
    for r in rows:
        wall, scan = float(r["wall"]), float(r["scan_wall"])  # type: ignore[arg-type]
        print(f"{r['persons']:>9,} {r['shards']:>6} {r['events']:>11,} {r['subjects']:>7,} "
              f"{r['features']:>5} {wall:>7.1f} {int(r['events']) / wall:>10,.0f} "  # type: ignore[call-overload]
              f"{r['rss']:>7.0f}Mi {r['size']:>6.1f}Mi {scan:>7.1f} {r['scan_rss']:>7.0f}Mi "
              f"{wall / scan:>5.1f}x {r['compute']:>9.1f} {float(r['compute']) / scan:>5.1f}x",  # type: ignore[arg-type]
              flush=True)
    print("wall s: the whole step, Dask LocalCluster start and stop included; compute s: "
          "build_store alone (cluster up); ratio: to the scan")


if __name__ == "__main__":
    main()
