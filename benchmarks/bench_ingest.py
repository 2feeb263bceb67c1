"""Benchmark the OMOP → event-store ingest from a Parquet CDM: events/s and peak RSS, with
a reference measured in the same run.

Per size, a synthetic CDM (``cohortflow synth``, warehouse preset unless asked) is written
once; then, each in a fresh process measured with ``os.wait4`` (wall and CPU seconds, peak
RSS):

* ``cohortflow ingest <cdm> --out <store> --shards N``, the command a user types;
* the reference: a plain Polars program that scans the same clinical Parquet tables, makes
  the same ``subject_id, time, code, numeric_value`` rows (start events only: no end
  events, unit names, person or death rows, no checks, no codes table), and writes each
  shard sorted by (subject_id, time, code) as zstd Parquet, streaming per shard.

The ratio is the ingest's events/s over the reference's rows/s; the last lines give the
ingest's events/s as a share of the goal (5,000,000 events/s on 2 CPUs, issue 13) and per
CPU second (user + system), the figure that moves least with a shared machine's load, and
the floor: the events/s of decoding the source's columns and encoding the store alone (the
Parquet work any ingest writing these bytes does).  All run on ``--cores`` CPUs (default 2).

    python benchmarks/bench_ingest.py                  # 30000 warehouse persons, ~1.2e7 events
    python benchmarks/bench_ingest.py 30000 300000     # ~1.2e7 and ~1.2e8 events
    python benchmarks/bench_ingest.py --preset demo 100000
    python benchmarks/bench_ingest.py --cdm omop/      # an existing CDM
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _measure import Usage, measure, measure_usage, pin_cores  # beside this script

REFERENCE = """
import sys
from pathlib import Path
import polars as pl
cdm, out, shards = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
TABLES = [("visit_occurrence", "VISIT", "visit_concept_id", "visit_start_datetime", None),
          ("condition_occurrence", "CONDITION", "condition_concept_id",
           "condition_start_datetime", None),
          ("drug_exposure", "DRUG", "drug_concept_id", "drug_exposure_start_datetime", None),
          ("procedure_occurrence", "PROCEDURE", "procedure_concept_id", "procedure_datetime",
           None),
          ("measurement", "MEASUREMENT", "measurement_concept_id", "measurement_datetime",
           "value_as_number")]
def rows(name, domain, concept, time, value):
    frame = pl.scan_parquet(cdm / name / "*.parquet")
    return frame.select(
        pl.col("person_id").cast(pl.Int64).alias("subject_id"),
        pl.col(time).cast(pl.Datetime("us")).alias("time"),
        pl.format(f"{domain}//{{}}", concept).alias("code"),
        (pl.col(value) if value else pl.lit(None)).cast(pl.Float32).alias("numeric_value"))
every = pl.concat([rows(*t) for t in TABLES if (cdm / t[0]).exists()])
total = 0
out.mkdir(parents=True)
for shard in range(shards):
    part = every.filter(pl.col("subject_id").hash(7) % shards == shard)
    part.sort("subject_id", "time", "code", nulls_last=False).sink_parquet(
        out / f"{shard}.parquet", compression="zstd")
    total += pl.scan_parquet(out / f"{shard}.parquet").select(pl.len()).collect().item()
print(total)
"""

# The floor under any ingest that writes these stores: decoding the columns the ingest reads
# from the source, and encoding the store's shards as it does (zstd, dictionary,
# statistics), two shards at a time; printed as two wall times, in seconds.
BOUND = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import polars as pl
from cohortflow import events
from cohortflow.omop import _ingest
from cohortflow.omop._open import open_source
cdm, store, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
start = time.perf_counter()
with open_source(cdm) as source:
    for name, required, optional in [
            ("person", _ingest.PERSON_REQUIRED, _ingest.PERSON_OPTIONAL),
            ("observation_period", _ingest.PERIOD_REQUIRED, []),
            ("death", _ingest.DEATH_REQUIRED, ["death_datetime"]),
            *[(t.name, t.required(), t.optional()) for t in _ingest.CLINICAL_TABLES]]:
        if source.has(name):
            for batch in source._read(source._index[name], required, optional):
                pass
decode = time.perf_counter() - start
shards = [pl.read_parquet(p).to_arrow().cast(events.EVENT_SCHEMA)
          for p in sorted((store / "data").glob("*.parquet"))]
start = time.perf_counter()
with ThreadPoolExecutor(2) as pool:
    list(pool.map(lambda i: events.write_parquet(shards[i], out / f"{i}.parquet"),
                  range(len(shards))))
print(decode, time.perf_counter() - start)
"""


def _row(label: str, persons: int, events: int, usage: Usage, ratio: str) -> str:
    return (f"| {label:<22} | {persons:>9,} | {events:>12,} | {usage.wall:>7.2f} | "
            f"{events / usage.wall:>11,.0f} | {usage.cpu:>6.1f} | {usage.rss:>11,.0f} | "
            f"{ratio:>6} |")


def _env() -> dict[str, str]:
    """This checkout's package first on the path, for the floor's child."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[30_000],
                        help="persons per CDM (warehouse: 30000 persons, about 1.2e7 events)")
    parser.add_argument("--preset", default="warehouse", choices=["demo", "warehouse"])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cores", type=int, default=2, help="CPUs to run on (0: all)")
    parser.add_argument("--goal", type=float, default=5e6, help="events/s aimed at")
    parser.add_argument("--cdm", type=Path, help="an existing CDM to ingest (sizes ignored)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "cohortflow"]
    where = pin_cores(args.cores)
    print(f"\nIngest of a synthetic {args.preset} CDM (Parquet) into {args.shards} shards; "
          "reference: a plain Polars scan of the same tables to sorted shards; "
          f"{where}\n")
    print(f"| {'program':<22} | {'persons':>9} | {'events':>12} | {'wall s':>7} | "
          f"{'events/s':>11} | {'CPU s':>6} | {'peak RSS MB':>11} | {'ratio':>6} |")
    print(f"|{'-' * 24}|{'-' * 11}|{'-' * 14}|{'-' * 9}|{'-' * 13}|{'-' * 8}|{'-' * 13}|"
          f"{'-' * 8}|")
    verdicts = []
    for persons in ([0] if args.cdm else args.sizes):
        with tempfile.TemporaryDirectory(prefix="cohortflow-bench-") as tmp:
            root = Path(tmp)
            cdm, store = args.cdm or root / "cdm", root / "events"
            if args.cdm is None:
                measure([*cli, "synth", "--persons", str(persons), "--seed", str(args.seed),
                         "--preset", args.preset, "--out", str(cdm), "--no-progress"], root)
            ours = measure_usage([*cli, "ingest", str(cdm), "--out", str(store),
                                  "--shards", str(args.shards)], root)
            summary = json.loads((store / "metadata" / "dataset.json").read_text())
            persons = summary["subjects"]
            ref = measure_usage([sys.executable, "-c", REFERENCE, str(cdm),
                                 str(root / "reference"), str(args.shards)], root)
            bound = subprocess.run(
                [sys.executable, "-c", BOUND, str(cdm), str(store), str(root / "bound")],
                check=True, capture_output=True, text=True, env=_env())
            decode, encode = map(float, bound.stdout.split())
            ref_rows = sum(summary["source_rows"].get(t, 0) for t in (
                "visit_occurrence", "condition_occurrence", "drug_exposure",
                "procedure_occurrence", "measurement"))
            rate, ref_rate = summary["events"] / ours.wall, ref_rows / ref.wall
            print(_row("cohortflow ingest", persons, summary["events"], ours,
                       f"{rate / ref_rate:.2f}"), flush=True)
            print(_row("reference (Polars)", persons, ref_rows, ref, "1.00"), flush=True)
            verdicts.append(
                f"{summary['events']:,} events: {rate:,.0f} events/s = "
                f"{rate / args.goal:.2f} of the goal ({args.goal:,.0f}/s); "
                f"{summary['events'] / ours.cpu:,.0f} events per CPU second; "
                f"{rate / ref_rate:.2f} x the reference's rows/s; floor: decoding the "
                f"source {decode:.1f} s + encoding the store {encode:.1f} s = "
                f"{summary['events'] / (decode + encode):,.0f} events/s")
    print()
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
