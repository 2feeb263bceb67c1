"""Labels: cohortflow against ACES (``es-aces``) on the same event store, row by row.

For each size: synthetic OMOP (``--preset``, default warehouse) → event store (MEDS 0.4
layout, read by ACES unchanged) → the demo study's label task (first asthma diagnosis with
365 days of prior observation; an asthma exacerbation from day 1 to day 365 after it),
untimed.  Then, each in its own process, measured with ``os.wait4`` (wall seconds; peak RSS
of the process and its children):

* cohortflow: the cohort step of the target and of the outcome on every shard, then the
  labels step (what the workflow runs, one process, shard after shard);
* ACES: ``aces-cli`` in its own virtual environment (``~/.cache/cohortflow-peers/aces``,
  created on first use), on every shard of the same store, with a task config written from
  the same study (its concept sets resolved to the same codes).

Parity: the (subject_id, prediction time, label) rows of both, joined row by row.  ACES
compares exact timestamps; cohortflow (like OHDSI) compares calendar days and censors at the
end of the index's observation period.  Every differing row is explained by one of these
(printed with its reason) or counted as a real mismatch, which makes the script exit 1.

    python benchmarks/bench_aces.py 2000 20000                 # warehouse preset
    python benchmarks/bench_aces.py 20000 --preset demo --keep /tmp/b
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import polars as pl
import yaml
from _measure import SRC, measure_tree, peer_venv

REPO = Path(__file__).resolve().parents[1]
ACES = "es-aces==0.7.3"
PERSONS_PER_SHARD = 25_000
TASK = "cohort"
LABELS = """
import sys
from pathlib import Path
from cohortflow import cohorts, events, layout
from cohortflow.study import load_study
study, store, out = load_study(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
shards = events.list_shards(store)
analysis = study.analysis_list()[0]
for name in (analysis.target, analysis.outcome_cohort):
    for shard in shards:
        cohorts.write_shard(study, name, store, shard, layout.shard_table(out / name, shard),
                            layout.shard_attrition(out / name, shard))
    cohorts.write_attrition([layout.shard_attrition(out / name, s) for s in shards],
                            out / name / "attrition.json")
cohorts.write_labels(study, analysis, out / analysis.target, out / analysis.outcome_cohort,
                     shards, out / "labels.parquet", out / "attrition.json")
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}


def prepare(persons: int, root: Path, preset: str) -> tuple[Path, Path, int]:
    """The event store and the study file of one size (reused when already there)."""
    shards = max(4, persons // PERSONS_PER_SHARD)
    cli = [sys.executable, "-m", "cohortflow"]
    omop_dir, store = root / "omop", root / "events"
    if not (store / "metadata" / "dataset.json").is_file():
        subprocess.run([*cli, "synth", "--persons", str(persons), "--seed", "7", "--preset",
                        preset, "--out", str(omop_dir), "--no-progress"], check=True,
                       capture_output=True, env=child_env())
        subprocess.run([*cli, "ingest", str(omop_dir), "--out", str(store), "--shards",
                        str(shards)], check=True, capture_output=True, env=child_env())
    study = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
    study["shards"] = shards
    study["source"]["synth"].update(persons=persons, preset=preset)
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    events = int(pl.scan_parquet(store / "data" / "*.parquet").select(pl.len()).collect().item())
    return root / "study.yaml", store, events


def aces_config(study_file: Path, store: Path) -> dict[str, object]:
    """The ACES task equivalent to the study's cohort and outcome label.

    * trigger: an event of the entry concept set, the first one (window ``history``: none
      before it);
    * prior observation: no observation-period start or end in the 365 days before the
      trigger (``observed``) and an observation-period start before them (``enrolled``):
      the trigger's period began at least 365 days earlier;
    * label: an outcome event in ``(trigger, trigger + 365 days]`` (``target``), indexed at
      the trigger.
    """
    sys.path.insert(0, str(SRC))
    from cohortflow.cohorts import plan_of
    from cohortflow.study import load_study

    study = load_study(study_file)
    cohort = study.cohort
    assert cohort is not None and cohort.outcome is not None
    risk = cohort.outcome.time_at_risk
    if (risk.start_days, risk.start_anchor, risk.end_anchor) != (1, "index", "index"):
        sys.exit(f"{study_file}: cohort.outcome.time_at_risk: this benchmark writes ACES "
                 "windows for start_days 1 anchored at the index only")
    plan = plan_of(study, cohort, store)
    entry = plan.codes_of(cohort.entry.concept_set, cohort.entry.domain, required=True)
    outcome = plan.codes_of(cohort.outcome.concept_set, cohort.outcome.domain, required=True)
    days = cohort.prior_observation_days
    return {
        "predicates": {
            "entry": {"code": {"any": entry}},
            "outcome": {"code": {"any": outcome}},
            "obs_start": {"code": "OBSERVATION_PERIOD//START"},
            "obs_end": {"code": "OBSERVATION_PERIOD//END"},
        },
        "trigger": "entry",
        "windows": {
            "history": {"start": None, "end": "trigger", "start_inclusive": True,
                        "end_inclusive": False, "has": {"entry": "(None, 0)"}},
            "observed": {"start": f"end - {days} days", "end": "trigger",
                         "start_inclusive": False, "end_inclusive": True,
                         "has": {"obs_start": "(None, 0)", "obs_end": "(None, 0)"}},
            "enrolled": {"start": None, "end": "observed.start", "start_inclusive": True,
                         "end_inclusive": True, "has": {"obs_start": "(1, None)"}},
            "target": {"start": "trigger", "end": f"start + {risk.end_days} days",
                       "start_inclusive": False, "end_inclusive": True, "label": "outcome",
                       "index_timestamp": "start"},
        },
    }


def run_cohortflow(study: Path, store: Path, out: Path
                   ) -> tuple[tuple[float, float, float], pl.DataFrame]:
    wall, rss, cpu, _ = measure_tree([sys.executable, "-c", LABELS, str(study), str(store),
                                 str(out)], env=child_env())
    labels = pl.read_parquet(out / "labels.parquet").select(
        "subject_id", time="index_time", label="label")
    return (wall, rss, cpu), labels


def run_aces(bin_dir: Path, config: dict[str, object], store: Path, out: Path
             ) -> tuple[tuple[float, float, float], pl.DataFrame]:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{TASK}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shards = sorted((p.stem for p in (store / "data").glob("*.parquet")), key=int)
    cmd = [str(bin_dir / "aces-cli"), "-m", "data=sharded", "data.standard=meds",
           f"data.root={store / 'data'}", f"data.shard={','.join(shards)}",
           f"cohort_dir={out}", f"cohort_name={TASK}", "hydra/job_logging=none",
           "hydra/hydra_logging=none"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wall, rss, cpu, _ = measure_tree(cmd, env=env, cwd=out)
    labels = pl.concat([pl.read_parquet(out / TASK / f"{s}.parquet") for s in shards])
    labels = labels.select("subject_id", time=pl.col("prediction_time").cast(pl.Datetime("us")),
                           label=pl.col("boolean_value").cast(pl.Boolean))
    return (wall, rss, cpu), labels


def compare(ours: pl.DataFrame, theirs: pl.DataFrame, store: Path, study_file: Path
            ) -> tuple[pl.DataFrame, int]:
    """Rows that differ between the tools, each with its reason; the count of those no
    known semantic difference explains."""
    joined = ours.join(theirs, on=["subject_id", "time"], how="full", coalesce=True,
                       suffix="_aces")
    diff = joined.filter(pl.col("label").is_null() | pl.col("label_aces").is_null()
                         | (pl.col("label") != pl.col("label_aces")))
    if diff.is_empty():
        return diff.with_columns(reason=pl.lit("")), 0
    config = aces_config(study_file, store)
    predicates = config["predicates"]
    assert isinstance(predicates, dict)
    outcome_codes = predicates["outcome"]["code"]["any"]
    subjects = diff["subject_id"].unique().implode()
    ev = (pl.scan_parquet(store / "data" / "*.parquet")
          .filter(pl.col("subject_id").is_in(subjects) & pl.col("time").is_not_null())
          .select("subject_id", "time", "code").collect())
    reasons = [explain(row, ev, outcome_codes) for row in diff.iter_rows(named=True)]
    diff = diff.with_columns(reason=pl.Series(reasons, dtype=pl.String))
    return diff, sum(r.startswith("UNEXPLAINED") for r in reasons)


def explain(row: dict[str, object], ev: pl.DataFrame, outcome_codes: list[str]) -> str:
    """Why one row differs: a difference of semantics, or ``UNEXPLAINED``."""
    mine = ev.filter(pl.col("subject_id") == row["subject_id"])
    index = row["time"]
    assert hasattr(index, "date")
    day = index.date()
    bounds = mine.filter(pl.col("code").str.starts_with("OBSERVATION_PERIOD//"))
    if row["label"] is None or row["label_aces"] is None:
        on_day = bounds.filter(pl.col("time").dt.date() == day)
        if not on_day.is_empty():
            return ("observation period boundary on the index day: cohortflow compares "
                    "dates (index inside the period), ACES timestamps (a midnight start or "
                    "end before the index time)")
        return "UNEXPLAINED: cohort membership differs"
    outcomes = mine.filter(pl.col("code").is_in(outcome_codes))["time"].to_list()
    ends = bounds.filter((pl.col("code") == "OBSERVATION_PERIOD//END")
                         & (pl.col("time").dt.date() >= day))["time"].to_list()
    obs_end = min(ends).date() if ends else None
    last = day + timedelta(days=365)
    for t in outcomes:
        in_aces = index < t <= index + timedelta(days=365)
        in_ours = day + timedelta(days=1) <= t.date() <= min(last, obs_end or last)
        if in_aces and not in_ours and t.date() == day:
            return ("outcome later on the index day: ACES counts it (after the index time), "
                    "cohortflow's time at risk starts the next day")
        if in_aces and not in_ours and obs_end is not None and t.date() > obs_end:
            return ("outcome after the end of the index's observation period: cohortflow "
                    "censors there, ACES has no observation periods")
        if in_ours and not in_aces and t.date() == last:
            return ("outcome on the last day at risk, later than the index time of day: "
                    "cohortflow counts the whole day, ACES stops at index + 365 days")
    return "UNEXPLAINED: label differs"


def bench(persons: int, root: Path, preset: str, bin_dir: Path) -> dict[str, object]:
    study, store, n_events = prepare(persons, root, preset)
    (wall, rss, cpu), ours = run_cohortflow(study, store, root / "cohortflow")
    config = aces_config(study, store)
    (aces_wall, aces_rss, aces_cpu), theirs = run_aces(bin_dir, config, store, root / "aces")
    diff, real = compare(ours, theirs, store, study)
    return {"persons": persons, "events": n_events, "rows": ours.height,
            "aces_rows": theirs.height, "positives": int(ours["label"].sum()),
            "aces_positives": int(theirs["label"].sum()), "diff": diff, "real": real,
            "wall": wall, "rss": rss, "cpu": cpu, "aces_wall": aces_wall, "aces_rss": aces_rss,
            "aces_cpu": aces_cpu}


def print_table(rows: list[dict[str, object]], preset: str) -> None:
    print(f"\nlabels (demo study task, {preset} preset): cohortflow vs ACES {ACES.split('==')[1]}")
    print(f"{'persons':>8} {'events':>10} {'rows':>7} {'ACES rows':>9} {'pos':>5} "
          f"{'ACES pos':>8} {'differ':>6} {'real':>4} {'cf s':>6} {'ACES s':>7} {'speed':>6} "
          f"{'cf cpu':>6} {'ACES cpu':>8} {'cpu':>6} {'cf RSS':>8} {'ACES RSS':>9} "
          f"{'memory':>7}")
    for r in rows:
        wall, aces_wall = float(r["wall"]), float(r["aces_wall"])  # type: ignore[arg-type]
        rss, aces_rss = float(r["rss"]), float(r["aces_rss"])  # type: ignore[arg-type]
        cpu, aces_cpu = float(r["cpu"]), float(r["aces_cpu"])  # type: ignore[arg-type]
        diff = r["diff"]
        assert isinstance(diff, pl.DataFrame)
        print(f"{r['persons']:>8,} {r['events']:>10,} {r['rows']:>7,} {r['aces_rows']:>9,} "
              f"{r['positives']:>5,} {r['aces_positives']:>8,} {diff.height:>6} "
              f"{r['real']:>4} {wall:>6.1f} {aces_wall:>7.1f} {aces_wall / wall:>5.1f}x "
              f"{cpu:>6.1f} {aces_cpu:>8.1f} {aces_cpu / cpu:>5.1f}x {rss:>6.0f}Mi "
              f"{aces_rss:>7.0f}Mi {rss / aces_rss:>6.2f}x", flush=True)
    print("speed: ACES wall / cohortflow wall; cpu: the same for CPU seconds (user + system "
          "of the process tree); memory: cohortflow peak RSS / ACES peak RSS; "
          "differ: rows not identical (subject, prediction time, label); real: of those, "
          "not explained by a known semantic difference")


def print_diff(persons: int, diff: pl.DataFrame) -> None:
    if diff.is_empty():
        print(f"{persons:,} persons: labels identical row by row")
        return
    print(f"{persons:,} persons: {diff.height} rows differ")
    with pl.Config(tbl_rows=40, fmt_str_lengths=120, tbl_width_chars=200):
        for reason, n in diff.group_by("reason").len().sort("reason").iter_rows():
            print(f"  {n:>4} x {reason}")
        print(diff.sort("subject_id", "time").head(40))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("persons", nargs="*", type=int, default=[2_000, 20_000])
    parser.add_argument("--preset", default="warehouse", choices=["demo", "warehouse"])
    parser.add_argument("--keep", type=Path, help="Keep (and reuse) the data under this folder.")
    args = parser.parse_args()
    bin_dir = peer_venv("aces", [ACES, "numpy>=2"], "aces-cli")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for persons in args.persons:
            root = base / f"{args.preset}{persons}"
            root.mkdir(parents=True, exist_ok=True)
            rows.append(bench(persons, root, args.preset, bin_dir))
            print_diff(persons, rows[-1]["diff"])  # type: ignore[arg-type]
            print_table(rows, args.preset)
    if any(r["real"] for r in rows):
        sys.exit("labels differ beyond the known semantic differences (rows above)")


if __name__ == "__main__":
    main()
