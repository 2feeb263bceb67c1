"""Benchmark the cohort engine against a DuckDB SQL implementation of the same cohorts,
over the same event store, in the same run.

For each size: ``cohortflow synth`` (warehouse preset unless asked: 20,000+ codes) +
``cohortflow ingest`` (not timed), then each cohort twice — the cohortflow steps as the
workflow runs them (the target's and the outcome's episodes shard by shard, then the labels;
Polars lazy), and one DuckDB SQL query over all shard files — each in its own process on
``--cores`` CPUs (default 2), measured with ``os.wait4`` (wall and CPU seconds, peak RSS).
The two cohort tables must be equal.  Ratio = cohortflow wall / DuckDB wall (the goal of
issue 13: at most 1.00); the CPU ratio (user + system seconds) moves less with a shared
machine's load.  Both include each program's start (Python, imports).

    python benchmarks/bench_cohorts.py                 # 30000 warehouse persons, ~1.2e7 events
    python benchmarks/bench_cohorts.py 30000 300000
    python benchmarks/bench_cohorts.py --store events/ # an existing event store
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import polars as pl
import yaml
from _measure import Usage, measure, measure_usage, pin_cores  # beside this script

REPO = Path(__file__).resolve().parents[1]
COHORTFLOW = [sys.executable, "-m", "cohortflow"]

COHORTS = {
    # The demo cohort: first asthma code, 365 days prior observation, exacerbation in a year.
    "first_asthma": {},
    # Every asthma code with 365 days prior observation and an albuterol inhaler in the 30
    # days before (index day included); the episode ends 30 days later.
    "asthma_on_albuterol": {
        "entry": {"concept_set": "asthma", "first_only": False},
        "inclusion_rules": [{"name": "albuterol in the 30 days before", "criteria": [
            {"occurrence": {"concept_set": "albuterol",
                            "window": {"start_days": -30, "end_days": 0}}}]}],
        "exit": {"strategy": "date_offset", "offset_days": 30},
    },
}

ENGINE = """
import sys, polars as pl
from pathlib import Path
from cohortflow import cohorts, events
from cohortflow.layout import Layout
from cohortflow.study import load_study
study, store, out = load_study(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
layout, shards = Layout(out.with_suffix("")), events.list_shards(store)
analysis = study.analysis_list()[0]
for name in study.cohorts_used():  # the target's and the outcome's episodes
    for s in shards:
        cohorts.write_shard(study, name, store, s, layout.cohort_table(name, s),
                            layout.cohort_shard_attrition(name, s))
    cohorts.write_attrition([layout.cohort_shard_attrition(name, s) for s in shards],
                            layout.cohort_attrition(name))
cohorts.write_labels(study, analysis, layout.cohort(analysis.target),
                     layout.cohort(analysis.outcome_cohort), shards,
                     layout.labels(analysis.id), layout.attrition(analysis.id))
pl.read_parquet(layout.labels(analysis.id)).select(
    "subject_id", "index_time", "label").write_parquet(out)
"""

SQL = {
    "first_asthma": """
WITH ev AS (SELECT * FROM read_parquet('{data}')),
periods AS (
  SELECT s.subject_id, s.time::DATE AS obs_start, e.time::DATE AS obs_end FROM
  (SELECT subject_id, time, row_number() OVER (PARTITION BY subject_id ORDER BY time) n
   FROM ev WHERE code = 'OBSERVATION_PERIOD//START') s JOIN
  (SELECT subject_id, time, row_number() OVER (PARTITION BY subject_id ORDER BY time) n
   FROM ev WHERE code = 'OBSERVATION_PERIOD//END') e USING (subject_id, n)),
entry AS (SELECT subject_id, min(time) AS index_time FROM ev
          WHERE code IN ({entry}) GROUP BY subject_id),
cohort AS (SELECT e.subject_id, e.index_time, p.obs_end FROM entry e JOIN periods p
  ON e.subject_id = p.subject_id
  AND e.index_time::DATE BETWEEN p.obs_start AND p.obs_end
  AND e.index_time::DATE - p.obs_start >= 365)
SELECT c.subject_id, c.index_time, count(o.time) > 0 AS label FROM cohort c
LEFT JOIN ev o ON o.subject_id = c.subject_id AND o.code IN ({outcome})
  AND o.time::DATE - c.index_time::DATE BETWEEN 1 AND 365
  AND o.time::DATE <= c.obs_end
GROUP BY c.subject_id, c.index_time
""",
    "asthma_on_albuterol": """
WITH ev AS (SELECT * FROM read_parquet('{data}')),
periods AS (
  SELECT s.subject_id, s.time::DATE AS obs_start, e.time::DATE AS obs_end FROM
  (SELECT subject_id, time, row_number() OVER (PARTITION BY subject_id ORDER BY time) n
   FROM ev WHERE code = 'OBSERVATION_PERIOD//START') s JOIN
  (SELECT subject_id, time, row_number() OVER (PARTITION BY subject_id ORDER BY time) n
   FROM ev WHERE code = 'OBSERVATION_PERIOD//END') e USING (subject_id, n)),
entry AS (SELECT DISTINCT subject_id, time AS index_time FROM ev WHERE code IN ({entry})),
cohort AS (SELECT e.subject_id, e.index_time, p.obs_start, p.obs_end FROM entry e
  JOIN periods p ON e.subject_id = p.subject_id
  AND e.index_time::DATE BETWEEN p.obs_start AND p.obs_end
  AND e.index_time::DATE - p.obs_start >= 365),
ruled AS (SELECT c.* FROM cohort c WHERE EXISTS (SELECT 1 FROM ev d
  WHERE d.subject_id = c.subject_id AND d.code IN ({albuterol})
  AND d.time::DATE - c.index_time::DATE BETWEEN -30 AND 0
  AND d.time::DATE BETWEEN c.obs_start AND c.obs_end))
SELECT c.subject_id, c.index_time, count(o.time) > 0 AS label FROM ruled c
LEFT JOIN ev o ON o.subject_id = c.subject_id AND o.code IN ({outcome})
  AND o.time::DATE - c.index_time::DATE BETWEEN 1 AND 365
  AND o.time::DATE <= c.obs_end
GROUP BY c.subject_id, c.index_time
""",
}

DUCKDB = """
import sys, duckdb
con = duckdb.connect()
con.execute("COPY (" + open(sys.argv[1]).read() + ") TO '" + sys.argv[2] + "' (FORMAT parquet)")
"""


def study_file(root: Path, name: str, changes: dict) -> Path:
    raw = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
    raw["name"] = name
    raw["concept_sets"]["albuterol"] = {"domain": "DRUG",
                                        "include": [{"concept_id": 1154343}]}
    raw["cohort"].update(changes)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def codes_sql(study: Path, store: Path, names: list[str]) -> dict[str, str]:
    from cohortflow import cohorts
    from cohortflow.study import load_study

    spec = load_study(study)
    plan = cohorts.plan_of(spec, spec.library()[spec.targets()[0]], store)
    return {n: ", ".join(f"'{c}'" for c in plan.codes_of(n)) for n in names}


def bench(persons: int, root: Path, shards: int, preset: str,
          store: Path | None) -> list[dict[str, object]]:
    if store is None:
        omop_dir, store = root / "omop", root / "events"
        measure([*COHORTFLOW, "synth", "--persons", str(persons), "--seed", "7", "--out",
                 str(omop_dir), "--preset", preset, "--no-progress"], root)
        measure([*COHORTFLOW, "ingest", str(omop_dir), "--out", str(store), "--shards",
                 str(shards)], root)
    summary = json.loads((store / "metadata" / "dataset.json").read_text())
    rows: list[dict[str, object]] = []
    for name, changes in COHORTS.items():
        study = study_file(root, name, changes)
        ours, ref = root / f"{name}.engine.parquet", root / f"{name}.sql.parquet"
        engine = measure_usage([sys.executable, "-c", ENGINE, str(study), str(store),
                                str(ours)], root)
        codes = codes_sql(study, store, ["asthma", "asthma_exacerbation", "albuterol"])
        query = root / f"{name}.sql"
        query.write_text(SQL[name].format(
            data=store / "data" / "*.parquet", entry=codes["asthma"],
            outcome=codes["asthma_exacerbation"], albuterol=codes["albuterol"]))
        sql = measure_usage([sys.executable, "-c", DUCKDB, str(query), str(ref)], root)
        a = pl.read_parquet(ours).sort("subject_id", "index_time")
        b = pl.read_parquet(ref).sort("subject_id", "index_time")
        if not a.equals(b):
            sys.exit(f"{name}: cohortflow and DuckDB disagree ({a.height} vs {b.height} rows)")
        rows.append({"persons": summary["subjects"], "cohort": name,
                     "events": summary["events"], "rows": a.height, "engine": engine,
                     "sql": sql})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("persons", nargs="*", type=int, default=[30_000])
    parser.add_argument("--preset", default="warehouse", choices=["demo", "warehouse"])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--cores", type=int, default=2, help="CPUs to run on (0: all)")
    parser.add_argument("--store", type=Path, help="an existing event store (sizes ignored)")
    args = parser.parse_args()
    print(f"Cohorts on a synthetic {args.preset} event store; {pin_cores(args.cores)}\n")
    print(f"{'persons':>9} {'events':>11} {'cohort':<20} {'rows':>7} {'wall cf':>8} "
          f"{'CPU cf':>7} {'RSS cf':>8} {'wall sql':>9} {'CPU sql':>8} {'RSS sql':>8} "
          f"{'ratio':>6} {'CPU ratio':>9}")
    worst = 0.0
    for persons in ([0] if args.store else args.persons):
        with tempfile.TemporaryDirectory(prefix="bench_cohorts_") as tmp:
            for r in bench(persons, Path(tmp), args.shards, args.preset, args.store):
                ours, sql = r["engine"], r["sql"]
                assert isinstance(ours, Usage) and isinstance(sql, Usage)
                worst = max(worst, ours.wall / sql.wall)
                print(f"{r['persons']:>9,} {r['events']:>11,} {r['cohort']!s:<20} "
                      f"{r['rows']!s:>7} {ours.wall:>7.1f}s {ours.cpu:>6.1f}s "
                      f"{ours.rss:>6.0f}Mi {sql.wall:>8.1f}s {sql.cpu:>7.1f}s "
                      f"{sql.rss:>6.0f}Mi {ours.wall / sql.wall:>6.2f} "
                      f"{ours.cpu / sql.cpu:>9.2f}", flush=True)
    print(f"\ngoal: cohortflow no slower than DuckDB (ratio <= 1.00); worst ratio {worst:.2f}"
          f" ({'met' if worst <= 1 else 'missed'})")


if __name__ == "__main__":
    main()
