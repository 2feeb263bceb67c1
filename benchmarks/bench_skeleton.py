"""Benchmark the walking skeleton: synth, ingest and the whole demo study, per size.

Every step runs as its own command (exactly what a user types) and is measured with
``os.wait4``: wall seconds and the peak RSS of the largest process in its tree.  Ingest is
compared with a reference measured in the same run: one Polars read + write of the same
OMOP Parquet tables, the I/O floor any ingest pays.

    python benchmarks/bench_skeleton.py              # 100000 persons
    python benchmarks/bench_skeleton.py 20000 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml
from _measure import measure  # beside this script

REPO = Path(__file__).resolve().parents[1]
COHORTFLOW = [sys.executable, "-m", "cohortflow"]
COPY_REFERENCE = """
import sys, polars as pl
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for table in sorted(p for p in src.iterdir() if p.is_dir()):
    pl.scan_parquet(table / "*.parquet").sink_parquet(dst / f"{table.name}.parquet")
"""


def bench(persons: int, root: Path) -> list[dict[str, object]]:
    omop_dir, store = root / "omop", root / "events"
    rows = []
    wall, rss = measure([*COHORTFLOW, "synth", "--persons", str(persons), "--seed", "7",
                         "--out", str(omop_dir), "--no-progress"], root)
    synth_rows = sum(json.loads((omop_dir / "synth.json").read_text())["rows"].values())
    rows.append({"step": "synth", "items": synth_rows, "unit": "rows", "wall": wall, "rss": rss})

    (root / "copy").mkdir()
    ref_wall, ref_rss = measure([sys.executable, "-c", COPY_REFERENCE, str(omop_dir),
                                 str(root / "copy")], root)
    wall, rss = measure([*COHORTFLOW, "ingest", str(omop_dir), "--out", str(store),
                         "--shards", "4"], root)
    events = json.loads((store / "metadata" / "dataset.json").read_text())["events"]
    rows.append({"step": "ingest", "items": events, "unit": "events", "wall": wall, "rss": rss,
                 "ratio": wall / ref_wall})
    rows.append({"step": "  reference: Polars copy of the OMOP tables", "items": synth_rows,
                 "unit": "rows", "wall": ref_wall, "rss": ref_rss})

    study = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
    study["source"]["synth"]["persons"] = persons
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    wall, rss = measure([*COHORTFLOW, "run", "study.yaml", "--results", "results",
                         "--cores", "2"], root)
    metrics = json.loads((root / "results" / "demo" / "model" / "metrics.json").read_text())
    oracle = json.loads((root / "results" / "demo" / "omop" / "oracle.json").read_text())
    rows.append({"step": "demo study (laptop profile, all steps)", "items": events,
                 "unit": "events", "wall": wall, "rss": rss,
                 "note": f"AUROC {metrics['test']['auroc']:.3f} vs oracle "
                         f"{oracle['oracle_auroc']:.3f}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("persons", nargs="*", type=int, default=[100_000])
    args = parser.parse_args()
    print(f"{'persons':>9} | {'step':<44} | {'items':>11} | {'wall s':>7} | "
          f"{'items/s':>10} | {'peak RSS MiB':>12} | note")
    print("-" * 120)
    for persons in args.persons:
        with tempfile.TemporaryDirectory(prefix="cohortflow-bench-") as tmp:
            for row in bench(persons, Path(tmp)):
                note = row.get("note", "")
                if "ratio" in row:
                    note = f"{row['ratio']:.2f}x the reference"
                print(f"{persons:>9,} | {row['step']:<44} | {row['items']:>11,} | "
                      f"{row['wall']:>7.1f} | {row['items'] / row['wall']:>10,.0f} | "
                      f"{row['rss']:>12,.0f} | {note}")


if __name__ == "__main__":
    main()
