"""Features: cohortflow against MEDS-Tab 0.2.0 on the same event store, cell by cell.

For each size: synthetic OMOP (``--preset``) → event store → the demo study's cohort (one
index time per person), untimed.  Then the same windows (30 and 365 days) and aggregations
(count; and over numeric values count, sum, min, max; cohortflow also ``present``) over
every code of the store, each tool in its own process, measured with ``os.wait4`` (wall
seconds; peak RSS of the largest process of its tree):

* cohortflow: the features step (``features.build_tensor``, Dask LocalCluster,
  ``--workers``), on the cohort's index times;
* MEDS-Tab: ``meds-tab-describe`` then ``meds-tab-tabularize-time-series`` with the same
  index times as its label files (``input_label_dir``), in its own virtual environment
  (``~/.cache/cohortflow-peers/meds-tab``, created on first use).  Its input is the store's
  shards linked as ``data/train/<shard>.parquet`` (its layout).

Each tool's cells are checked against a direct Polars computation of its own semantics:

* cohortflow: whole calendar days, window ``d`` = events dated ``[index date - d, index
  date]`` (the whole index day), every event counted;
* MEDS-Tab (as documented): exact timestamps, window ``d`` = events in ``(t - d, t]``
  with ``t`` the prediction time.  ``code/count`` is checked against both the number of
  events and the number of distinct timestamps.

A cohortflow cell differing from its computation is a real mismatch (exit 1).  MEDS-Tab's
departures are reported per aggregation with the known causes (PEERS.md): value
aggregations empty, the last measurement of a timestamp dropped, value/min and value/max
written to row 0, windows anchored at the last event before the prediction time.  Only the
cells where both semantics give the same number are compared across the tools.

    python benchmarks/bench_meds_tab.py 2000 20000 --preset demo
    python benchmarks/bench_meds_tab.py 2000 --preset warehouse --keep /tmp/b
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from _measure import measure_tree, peer_venv
from bench_aces import child_env, prepare

MEDS_TAB = "meds-tab==0.2.0"
WINDOWS = (30, 365)
TAB_AGGS = ("code/count", "value/count", "value/sum", "value/min", "value/max")
OURS = {"code/count": "count", "value/count": "value_count", "value/sum": "sum",
        "value/min": "min", "value/max": "max"}
"""MEDS-Tab aggregation → the cohortflow aggregation of the same meaning."""
COHORT = """
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
import sys
from pathlib import Path
from cohortflow import features
from cohortflow.study import load_study
out = Path(sys.argv[4])
features.build_tensor(load_study(sys.argv[1]), "cohort", Path(sys.argv[2]), Path(sys.argv[3]),
                      out, scratch=out.parent / ".dask", workers=int(sys.argv[5]))
"""


def feature_study(study_file: Path, aggs: tuple[str, ...]) -> Path:
    """The study with the benchmark's features: every code, the windows above, the
    aggregations of ``aggs`` (MEDS-Tab's names; with ``present`` when there is more than
    ``code/count``), no demographics."""
    study = yaml.safe_load(study_file.read_text())
    ours = [OURS[a] for a in aggs] + (["present"] if len(aggs) > 1 else [])
    study["features"].update(
        windows_days=list(WINDOWS), windows=[], window_end="index_day", domains=["*"],
        codes=[], concept_sets=[], rollup="none", min_code_subjects=0, demographics=[],
        aggregations=ours, sequence=None)
    out = study_file.with_name("features_study.yaml")
    out.write_text(yaml.safe_dump(study))
    return out


def cohort_rows(study: Path, store: Path, root: Path) -> tuple[Path, pl.DataFrame]:
    """The cohort's episodes (made once, untimed) and its rows: ``row`` (the tensor row),
    ``shard``, ``subject_id``, ``index_time``."""
    cohort_dir = root / "cohort"
    if not (cohort_dir / "shards").is_dir():
        subprocess.run([sys.executable, "-c", COHORT, str(study), str(store), str(cohort_dir)],
                       check=True, env=child_env())
    shards = sorted((p.stem for p in (store / "data").glob("*.parquet")), key=int)
    rows = pl.concat([
        pl.read_parquet(cohort_dir / "shards" / f"{s}.parquet")
        .select("subject_id", "index_time").with_columns(shard=pl.lit(s)) for s in shards])
    return cohort_dir, rows.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))


def run_cohortflow(study: Path, store: Path, cohort_dir: Path, out: Path, workers: int
                   ) -> tuple[tuple[float, float, float], pl.DataFrame]:
    """Wall, peak RSS, CPU seconds and the tidy cells (row, code, window, agg, value) of the
    tensor."""
    import shutil

    import xarray as xr

    shutil.rmtree(out, ignore_errors=True)
    wall, rss, cpu, _ = measure_tree([sys.executable, "-c", FEATURES, str(study), str(store),
                                 str(cohort_dir), str(out), str(workers)], env=child_env())
    values = xr.open_zarr(out)["values"]
    dense = np.asarray(values.values)
    rows, cols = np.nonzero(~np.isnan(dense) & (dense != 0))
    names = pl.Series(values["feature"].values.tolist(), dtype=pl.String)
    keys = names.gather(cols).str.split_exact("|", 2).struct.rename_fields(
        ["code", "window", "agg"])
    cells = pl.DataFrame({"row": rows.astype(np.int64), "key": keys,
                          "value": dense[rows, cols].astype(np.float64)}).unnest("key")
    return (wall, rss, cpu), cells


def tab_inputs(store: Path, rows: pl.DataFrame, root: Path) -> tuple[Path, Path]:
    """MEDS-Tab's layout of the same data: ``data/train/<shard>.parquet`` links to the
    store's shards, ``labels/train/<shard>.parquet`` the cohort's index times."""
    data, labels = root / "data" / "train", root / "labels" / "train"
    data.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for shard, part in rows.partition_by("shard", as_dict=True).items():
        link = data / f"{shard[0]}.parquet"
        if not link.exists():
            link.symlink_to((store / "data" / f"{shard[0]}.parquet").resolve())
        part.sort("row").select("subject_id", prediction_time="index_time").write_parquet(
            labels / f"{shard[0]}.parquet")
    return root / "data", root / "labels"


def run_meds_tab(bin_dir: Path, data: Path, labels: Path, out: Path, rows: pl.DataFrame,
                 aggs: tuple[str, ...]) -> tuple[tuple[float, float, float], pl.DataFrame]:
    """Wall, peak RSS and CPU seconds of describe and tabularize together, and the tidy
    cells."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    common = [f"input_dir={data}", f"output_dir={out}", "hydra/job_logging=none",
              "hydra/hydra_logging=none"]
    d_wall, d_rss, d_cpu, _ = measure_tree([str(bin_dir / "meds-tab-describe"), *common],
                                           env=env)
    windows = ",".join(f"{w}d" for w in WINDOWS)
    t_wall, t_rss, t_cpu, _ = measure_tree(
        [str(bin_dir / "meds-tab-tabularize-time-series"), *common,
         f"input_label_dir={labels}", "tabularization.min_code_inclusion_count=1",
         f"tabularization.window_sizes=[{windows}]",
         f"tabularization.aggs=[{','.join(aggs)}]"], env=env)
    names = sorted(pl.read_parquet(out / "metadata" / "codes.parquet")["code"].to_list())
    columns = {"code": [n[:-len("/code")] for n in names if n.endswith("/code")],
               "value": [n[:-len("/value")] for n in names if n.endswith("/value")]}
    parts = []
    for shard, part in rows.partition_by("shard", as_dict=True).items():
        row_of = part.sort("row")["row"].to_numpy()
        for w in WINDOWS:
            for agg in aggs:
                z = np.load(out / "tabularize" / "train" / shard[0] / f"{w}d" / f"{agg}.npz")
                value, r, c = z["array"]
                codes = np.asarray(columns[agg.split("/")[0]], dtype=object)
                parts.append(pl.DataFrame({
                    "row": row_of[r.astype(np.int64)], "code": codes[c.astype(np.int64)],
                    "window": f"{w}d", "agg": agg, "value": value.astype(np.float64)},
                    schema_overrides={"code": pl.String}))
    cells = pl.concat(parts).filter(pl.col("value") != 0)
    return (d_wall + t_wall, max(d_rss, t_rss), d_cpu + t_cpu), cells


def reference(store: Path, rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The direct computation, one row per (row, code, window) with any event: cohortflow's
    semantics (calendar days) and MEDS-Tab's (timestamps), each with n (events), times
    (distinct timestamps), value_count, sum, min, max."""
    ev = (pl.scan_parquet(store / "data" / "*.parquet")
          .filter(pl.col("time").is_not_null())
          .join(rows.lazy().select("row", "subject_id", "index_time"), on="subject_id")
          .with_columns(days=(pl.col("index_time").dt.date() - pl.col("time").dt.date())
                        .dt.total_days(),
                        delta=pl.col("index_time") - pl.col("time"))
          .filter(pl.col("days").is_between(-1, max(WINDOWS) + 1)).collect())
    value = pl.col("numeric_value").cast(pl.Float64)
    aggs = [pl.len().alias("n"), pl.col("time").n_unique().alias("times"),
            value.count().alias("value_count"), value.sum().alias("sum"),
            value.min().alias("min"), value.max().alias("max")]
    ours, theirs = [], []
    for w in WINDOWS:
        ours.append(ev.filter(pl.col("days").is_between(0, w))
                    .group_by("row", "code").agg(aggs).with_columns(window=pl.lit(f"{w}d")))
        theirs.append(ev.filter((pl.col("delta") >= pl.duration(days=0))
                                & (pl.col("delta") < pl.duration(days=w)))
                      .group_by("row", "code").agg(aggs).with_columns(window=pl.lit(f"{w}d")))
    return pl.concat(ours), pl.concat(theirs)


def long_reference(ref: pl.DataFrame, aggs: tuple[str, ...], count: str = "n"
                   ) -> pl.DataFrame:
    """A reference as tidy non-zero cells keyed by MEDS-Tab's aggregation names."""
    parts = [ref.select("row", "code", "window", agg=pl.lit(agg),
                        value=pl.col(count if agg == "code/count" else OURS[agg]).cast(pl.Float64))
             for agg in aggs]
    return pl.concat(parts).filter(pl.col("value").is_not_null() & (pl.col("value") != 0))


def agreement(tool: pl.DataFrame, ref: pl.DataFrame) -> pl.DataFrame:
    """Per (window, agg): the reference's non-zero cells, the tool's, and how many of the
    reference's the tool has with the same value (float32 tolerance)."""
    keys = ["row", "code", "window", "agg"]
    both = ref.join(tool, on=keys, how="full", coalesce=True, suffix="_tool")
    same = (pl.col("value").is_not_null() & pl.col("value_tool").is_not_null()
            & ((pl.col("value") - pl.col("value_tool")).abs()
               <= 1e-5 * pl.max_horizontal(pl.col("value").abs(), pl.lit(1.0))))
    return (both.group_by("window", "agg").agg(
        reference=pl.col("value").is_not_null().sum(),
        tool=pl.col("value_tool").is_not_null().sum(),
        equal=same.sum(),
        rows_with_cells=pl.col("row").filter(pl.col("value_tool").is_not_null()).n_unique())
        .sort("window", "agg"))


def ours_cells(cells: pl.DataFrame) -> pl.DataFrame:
    """cohortflow's tidy cells under MEDS-Tab's aggregation names (present checked apart)."""
    back = {v: k for k, v in OURS.items()}
    return cells.filter(pl.col("agg").is_in(list(back))).with_columns(
        pl.col("agg").replace_strict(back))


def bench(persons: int, root: Path, preset: str, workers: int, bin_dir: Path,
          aggs: tuple[str, ...]) -> dict[str, object]:
    study, store, n_events = prepare(persons, root, preset)
    study = feature_study(study, aggs)
    cohort_dir, rows = cohort_rows(study, store, root)
    (wall, rss, cpu), cells = run_cohortflow(study, store, cohort_dir, root / "features.zarr",
                                             workers)
    data, labels = tab_inputs(store, rows, root / "meds_tab_in")
    (tab_wall, tab_rss, tab_cpu), tab = run_meds_tab(bin_dir, data, labels,
                                                     root / "meds_tab_out", rows, aggs)
    ref_ours, ref_tab = reference(store, rows)
    present = cells.filter(pl.col("agg") == "present")
    present_ok = len(aggs) == 1 or (
        present.height == ref_ours.height
        and present.join(ref_ours, on=["row", "code", "window"]).height == ref_ours.height)
    ours_check = agreement(ours_cells(cells), long_reference(ref_ours, aggs))
    tab_check = agreement(tab, long_reference(ref_tab, aggs))
    tab_times = agreement(tab.filter(pl.col("agg") == "code/count"),
                          long_reference(ref_tab, ("code/count",), "times"))
    # like with like: (row, code, window) whose count is the same under both semantics and
    # in events and timestamps, and whose values are the same whichever semantics
    keys = ["row", "code", "window"]
    alike = ref_ours.join(ref_tab, on=keys, suffix="_tab").filter(
        (pl.col("n") == pl.col("n_tab")) & (pl.col("n") == pl.col("times"))
        & (pl.col("times") == pl.col("times_tab")))
    cross = agreement(tab.join(alike.select(keys), on=keys),
                      ours_cells(cells).join(alike.select(keys), on=keys))
    bad = ours_check.filter((pl.col("equal") != pl.col("reference"))
                            | (pl.col("tool") != pl.col("reference")))
    return {"persons": persons, "preset": preset, "events": n_events, "rows": rows.height,
            "aggs": aggs, "wall": wall, "rss": rss, "cpu": cpu, "tab_wall": tab_wall,
            "tab_rss": tab_rss, "tab_cpu": tab_cpu, "ours_check": ours_check,
            "tab_check": tab_check,
            "tab_times": tab_times, "cross": cross, "present_ok": present_ok,
            "real": bad.height + (not present_ok), "bugs": known_bugs(tab, tab_check)}


def known_bugs(tab: pl.DataFrame, check: pl.DataFrame) -> list[str]:
    """Which of MEDS-Tab's known departures this run shows."""
    seen = []
    value = check.filter(pl.col("agg").str.starts_with("value/"))
    if value["tool"].sum() == 0 and value["reference"].sum() > 0:
        seen.append("value aggregations empty (every value/* matrix has no cell although "
                    f"the data hold {value['reference'].sum():,} non-zero value cells)")
    for agg in ("value/min", "value/max"):
        rows = tab.filter(pl.col("agg") == agg)["row"].n_unique()
        if rows == 1:
            seen.append(f"{agg}: every cell written to one row (scipy min/max return a "
                        "1-D coo_array whose row index is 0)")
    return seen


def show(r: dict[str, object]) -> None:
    with pl.Config(tbl_rows=40, tbl_width_chars=160):
        print(f"\n{r['persons']:,} persons ({r['preset']} preset), {r['rows']:,} index times")
        print("cohortflow cells vs its direct computation (calendar days, every event):")
        print(r["ours_check"])
        if len(r["aggs"]) > 1:  # type: ignore[arg-type]
            print(f"  present: {'identical' if r['present_ok'] else 'DIFFERS'}")
        print("MEDS-Tab cells vs its direct computation ((t - d, t], every event):")
        print(r["tab_check"])
        print("MEDS-Tab code/count vs distinct timestamps in (t - d, t]:")
        print(r["tab_times"])
        print("like with like: MEDS-Tab (tool) vs cohortflow (reference) on the cells where "
              "both semantics give the same events:")
        print(r["cross"])
        for bug in r["bugs"]:  # type: ignore[attr-defined]
            print(f"  MEDS-Tab known bug seen: {bug}")


def print_table(rows: list[dict[str, object]]) -> None:
    print(f"\nfeatures (every code, windows {', '.join(f'{w}d' for w in WINDOWS)}): "
          f"cohortflow vs MEDS-Tab {MEDS_TAB.split('==')[1]}")
    print(f"{'preset':>9} {'persons':>8} {'events':>10} {'rows':>6} {'aggs':>4} {'cf s':>6} "
          f"{'MT s':>7} {'speed':>7} {'cf cpu':>6} {'MT cpu':>7} {'cpu':>7} {'cf RSS':>8} "
          f"{'MT RSS':>8} {'memory':>7} {'cf real':>7}")
    for r in rows:
        wall, tab_wall = float(r["wall"]), float(r["tab_wall"])  # type: ignore[arg-type]
        rss, tab_rss = float(r["rss"]), float(r["tab_rss"])  # type: ignore[arg-type]
        cpu, tab_cpu = float(r["cpu"]), float(r["tab_cpu"])  # type: ignore[arg-type]
        print(f"{r['preset']:>9} {r['persons']:>8,} {r['events']:>10,} {r['rows']:>6,} "
              f"{len(r['aggs']):>4} {wall:>6.1f} {tab_wall:>7.1f} {tab_wall / wall:>6.1f}x "  # type: ignore[arg-type]
              f"{cpu:>6.1f} {tab_cpu:>7.1f} {tab_cpu / cpu:>6.1f}x {rss:>6.0f}Mi "
              f"{tab_rss:>6.0f}Mi {rss / tab_rss:>6.2f}x {r['real']:>7}", flush=True)
    print("MT s: meds-tab-describe + meds-tab-tabularize-time-series; speed: MT s / cf s; "
          "cpu: the same for CPU seconds (user + system of the process tree); aggs: MEDS-Tab "
          "aggregations computed by both; "
          "memory: cohortflow peak RSS / MEDS-Tab peak RSS; cf real: cohortflow aggregations "
          "differing from their direct computation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("persons", nargs="*", type=int, default=[2_000, 20_000])
    parser.add_argument("--preset", default="demo", choices=["demo", "warehouse"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="Keep (and reuse) the data under this folder.")
    parser.add_argument("--count-only", action="store_true",
                        help="Only code/count (and cohortflow's count): the same work in both "
                        "tools, 1/5 of MEDS-Tab's time.")
    args = parser.parse_args()
    aggs = ("code/count",) if args.count_only else TAB_AGGS
    bin_dir = peer_venv("meds-tab", [MEDS_TAB], "meds-tab-describe")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for persons in args.persons:
            root = base / f"{args.preset}{persons}"
            root.mkdir(parents=True, exist_ok=True)
            rows.append(bench(persons, root, args.preset, args.workers, bin_dir, aggs))
            show(rows[-1])
            print_table(rows)
    if any(r["real"] for r in rows):
        sys.exit("cohortflow's features differ from their direct computation (tables above)")


if __name__ == "__main__":
    main()
