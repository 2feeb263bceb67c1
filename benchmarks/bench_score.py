"""Benchmark ``cohortflow score``: a model package scores an extract of N persons as of one
date (eligible persons of the demo's asthma cohort open on the date, their features, their
scores, the run folder).

Not timed: the package (the demo study at ``--study-persons`` persons, run once with
``cohortflow run`` and packaged), ``cohortflow synth`` of N persons (demo preset) and its
ingest into an event store of ``--shards`` shards.  Timed, in its own process (``os.wait4``:
wall seconds, peak RSS of the largest process of its tree), ``cohortflow score`` as a user
types it (laptop profile), from the event store, then its rerun (nothing to do).

    python benchmarks/bench_score.py                    # 20000 persons
    python benchmarks/bench_score.py 100000 --shards 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from _measure import measure  # beside this script

REPO = Path(__file__).resolve().parents[1]
COHORTFLOW = [sys.executable, "-m", "cohortflow"]


def make_package(root: Path, persons: int) -> Path:
    """The demo study at ``persons`` persons, run and packaged."""
    raw = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
    raw["source"]["synth"]["persons"] = persons
    raw["shards"] = 2
    study = root / "study.yaml"
    study.write_text(yaml.safe_dump(raw, sort_keys=False))
    measure([*COHORTFLOW, "run", str(study), "--results", "results"], root)
    measure([*COHORTFLOW, "package", "results/demo", "--out", "model-pkg"], root)
    return root / "model-pkg"


@dataclass(frozen=True)
class Row:
    persons: int
    scored: int | str  # suppressed below the study's min_cell_count
    wall_s: float
    rss_mib: float
    rerun_s: float


def bench(persons: int, root: Path, shards: int, as_of: str, pkg: Path) -> Row:
    cdm, store = root / "omop", root / "events"
    measure([*COHORTFLOW, "synth", "--persons", str(persons), "--seed", "11", "--out", str(cdm),
             "--no-progress"], root)
    measure([*COHORTFLOW, "ingest", str(cdm), "--out", str(store), "--shards", str(shards)],
            root)
    score = [*COHORTFLOW, "score", str(pkg), "--source", str(store), "--as-of", as_of,
             "--out", str(root / "scores")]
    wall, rss = measure(score, root)
    rerun, _ = measure(score, root)
    run = next((root / "scores").glob(f"*/{as_of}"))
    scored = json.loads((run / "summary.json").read_text())["persons_scored"]
    return Row(persons, scored, wall, rss, rerun)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("persons", nargs="*", type=int, default=[20_000])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--as-of", default="2022-06-30")
    parser.add_argument("--study-persons", type=int, default=5_000)
    args = parser.parse_args()
    os.environ.setdefault("COHORTFLOW_PSEUDONYM_KEY", "bench-score-key")
    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        root = Path(tmp)
        (root / "pkg").mkdir()
        pkg = make_package(root / "pkg", args.study_persons)
        print(f"{'persons':>10} {'scored':>8} {'wall s':>8} {'persons/s':>10} "
              f"{'scored/s':>9} {'peak RSS MiB':>13} {'rerun s':>8}")
        for n in args.persons:
            (root / str(n)).mkdir()
            row = bench(n, root / str(n), args.shards, args.as_of, pkg)
            per_scored = (f"{row.scored / row.wall_s:9.0f}" if isinstance(row.scored, int)
                          else f"{'-':>9}")
            print(f"{n:>10} {row.scored!s:>8} {row.wall_s:8.1f} {n / row.wall_s:10.0f} "
                  f"{per_scored} {row.rss_mib:13.0f} {row.rerun_s:8.1f}", flush=True)

if __name__ == "__main__":
    main()
