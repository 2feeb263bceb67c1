"""Benchmark ingest from PostgreSQL against ingest from Parquet, measured in the same run.

One synthetic OMOP CDM (warehouse preset unless asked) is written as Parquet and loaded into
a throwaway PostgreSQL server (the test harness, ``tests/harness/postgres.py``).  Each
ingest runs as the command a user types (``cohortflow ingest <dir|url>``) and is measured
with ``os.wait4``: wall seconds and peak RSS.  The two event stores must be byte-identical.
A second table compares the PostgreSQL drivers on the read alone (every clinical table, to
Arrow batches): ADBC (binary COPY, what cohortflow uses) and, when installed, psycopg with a
server-side cursor.

    python benchmarks/bench_ingest_sources.py            # 100000 warehouse persons
    python benchmarks/bench_ingest_sources.py 20000 --preset demo
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cohortflow import manifest  # noqa: E402
from tests.harness.postgres import PostgresServer, find_bindir  # noqa: E402

COHORTFLOW = [sys.executable, "-m", "cohortflow"]
TABLES = ["person", "observation_period", "visit_occurrence", "condition_occurrence",
          "drug_exposure", "procedure_occurrence", "measurement"]
LOAD = """
import json, sys
from pathlib import Path
from tests.harness.postgres import PostgresServer
root, bindir, port, password, cdm = sys.argv[1:]
server = PostgresServer(root=Path(root), bindir=Path(bindir), port=int(port), password=password)
print(json.dumps(server.load_omop(Path(cdm), schema="bench")))
"""
READ_ADBC = """
import sys, adbc_driver_postgresql.dbapi as adbc
rows = 0
with adbc.connect(sys.argv[1], autocommit=True) as con:
    for table in sys.argv[2:]:
        with con.cursor() as cur:
            cur.execute(f"SELECT * FROM bench.{table}")
            for batch in cur.fetch_record_batch():
                rows += batch.num_rows
print(rows)
"""
READ_PSYCOPG = """
import sys, psycopg, pyarrow as pa
rows = 0
with psycopg.connect(sys.argv[1]) as con:
    for table in sys.argv[2:]:
        with con.cursor(name="bench") as cur:
            cur.execute(f"SELECT * FROM bench.{table}")
            names = None
            while chunk := cur.fetchmany(50_000):
                names = names or [d.name for d in cur.description]
                batch = pa.RecordBatch.from_arrays(
                    [pa.array(list(col)) for col in zip(*chunk)], names=names)
                rows += batch.num_rows
print(rows)
"""


def _event_files(store: Path) -> dict[str, str]:
    """Digests of the store's files, less metadata/source_fingerprint.json: that one records
    the source itself (file bytes for Parquet, a server-side hash for PostgreSQL)."""
    return {k: v for k, v in manifest.tree_digests(store).items()
            if k != "metadata/source_fingerprint.json"}


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB, of exactly this child: os.wait4) and stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{stderr.decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stdout.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("persons", nargs="?", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--preset", default="warehouse", choices=["demo", "warehouse"])
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        sys.exit("PostgreSQL server binaries not found: apt-get install postgresql")
    with tempfile.TemporaryDirectory(prefix="cohortflow-bench-") as tmp:
        root = Path(tmp)
        cdm = root / "omop"
        run_measured([*COHORTFLOW, "synth", "--persons", str(args.persons), "--seed", "7",
                      "--preset", args.preset, "--out", str(cdm), "--no-progress"])
        server = PostgresServer(root=Path(tempfile.mkdtemp(prefix="cohortflow-pg-")),
                                bindir=bindir, run_as="postgres" if os.geteuid() == 0 else None)
        server.start()
        try:
            # Load in a child: Linux carries a parent's peak RSS into the children it forks
            # later, so a parent that held the tables would inflate every figure below.
            load_wall, _, out = run_measured([sys.executable, "-c", LOAD, str(server.root),
                                              str(server.bindir), str(server.port),
                                              server.password, str(cdm)],
                                             {"PYTHONPATH": str(REPO)})
            counts = json.loads(out)
            env = server.env
            rows: list[tuple[str, int, float, float, Path]] = []
            for label, location, extra in (
                ("Parquet directory", str(cdm), []),
                ("PostgreSQL (ADBC, binary COPY)", server.url, ["--schema", "bench"]),
            ):
                store = root / f"events-{len(rows)}"
                wall, rss, _ = run_measured([*COHORTFLOW, "ingest", location, "--out",
                                             str(store), "--shards", str(args.shards),
                                             *extra], env)
                events = json.loads((store / "metadata" / "dataset.json").read_text())["events"]
                rows.append((label, events, wall, rss, store))
            identical = _event_files(rows[0][4]) == _event_files(rows[1][4])
            reads: list[tuple[str, int, float, float]] = []
            source_rows = sum(counts[t] for t in TABLES)
            for label, script, module in (("ADBC (binary COPY → Arrow)", READ_ADBC, "adbc"),
                                          ("psycopg (server-side cursor → Arrow)",
                                           READ_PSYCOPG, "psycopg")):
                if module == "psycopg":
                    try:
                        import psycopg  # noqa: F401
                    except ImportError:
                        continue
                wall, rss, out = run_measured([sys.executable, "-c", script, server.url,
                                               *TABLES], env)
                assert int(out.strip()) == source_rows
                reads.append((label, source_rows, wall, rss))
        finally:
            server.stop()

    print(f"\nIngest of {args.persons:,} synthetic {args.preset} persons into {args.shards} "
          "shards "
          f"(PostgreSQL load: {load_wall:.1f} s, not timed below); "
          f"stores byte-identical: {identical}\n")
    print(f"| {'source':<32} | {'events':>11} | {'wall s':>7} | {'events/s':>10} | "
          f"{'peak RSS MiB':>12} | {'wall ratio':>10} |")
    print(f"|{'-' * 34}|{'-' * 13}|{'-' * 9}|{'-' * 12}|{'-' * 14}|{'-' * 12}|")
    for label, events, wall, rss, _ in rows:
        print(f"| {label:<32} | {events:>11,} | {wall:>7.2f} | {events / wall:>10,.0f} | "
              f"{rss:>12,.0f} | {wall / rows[0][2]:>9.2f}x |")
    print(f"\nPostgreSQL read alone, {len(TABLES)} clinical tables:\n")
    print(f"| {'driver':<38} | {'rows':>11} | {'wall s':>7} | {'rows/s':>10} | "
          f"{'peak RSS MiB':>12} | {'wall ratio':>10} |")
    print(f"|{'-' * 40}|{'-' * 13}|{'-' * 9}|{'-' * 12}|{'-' * 14}|{'-' * 12}|")
    for label, n, wall, rss in reads:
        print(f"| {label:<38} | {n:>11,} | {wall:>7.2f} | {n / wall:>10,.0f} | "
              f"{rss:>12,.0f} | {wall / reads[0][2]:>9.2f}x |")
    if not identical:
        sys.exit("the PostgreSQL and Parquet event stores differ")


if __name__ == "__main__":
    main()
