"""Run the whole study on a synthetic warehouse of a given number of events, stage by stage.

For each target size (``--events 1e6 1e7``; events are the rows of the six clinical tables
of ``cohortflow synth --preset warehouse``, as ``synth_warehouse.py`` counts them), the
persons are chosen from the preset's mean events per person, measured first on a small
probe (``--probe-persons``, printed).  Then each stage runs as its own process, measured
with ``_measure.measure_tree`` (wall s, CPU s of the whole tree, peak RSS of its largest
process), the functions the workflow's rules call, in the order the workflow runs them:

1. synth: ``cohortflow synth --preset warehouse`` (an OMOP CDM in Parquet);
2. ingest: ``cohortflow ingest --shards N``, N = events / ``--events-per-shard`` (so a shard
   stays the same size as the data grows; at least 2, at most 4,096);
3. cohorts: ``cohorts.write_shard`` of the demo study's target and outcome cohorts on every
   shard (rule ``cohort_shard``; ``--jobs`` shards at a time), then ``write_attrition``;
4. labels: ``cohorts.write_labels`` of the demo analysis (rule ``labels``);
5. features: ``features.build_tensor`` of the demo feature spec (rule ``features``, 2
   threads; ``layout: auto``, sparse at this width);
6. model: ``models.train_configuration`` of one configuration, logistic L2 (C = 1), read
   as CSR whatever the size (``DENSE_MATRIX_BYTES = 0``, the path every size above about
   10⁷ events takes by itself);

and the reference of the features step: one Polars pass over the same shards computing
``group_by(subject_id, code).len()`` (the scan limit of ``bench_features.py``, one shard
after another so that its memory too is one shard's).

Disk: each stage's output size, the inputs it leaves that no later stage reads (deleted at
once unless ``--keep``: the CDM after ingest, the cohort shards after features, the event
store after the model), and the work folder's peak size, sampled every second or so.  Before a
size starts, the free disk is checked against what its stages need (bytes per event,
measured here; see ``DISK_BYTES_PER_EVENT``).

    python benchmarks/bench_scale_run.py --events 1e6 1e7 1e8
    python benchmarks/bench_scale_run.py --events 1e6 --keep --reuse-cdm  # synth once, then reruns
    nice -n 10 python benchmarks/bench_scale_run.py --events 1e9 --events-per-person 282.9 \\
        --work /tmp/cf-scale                                            # the 10⁹ run

The 10⁹ run, projected ten times the 10⁸ run (docs/scaling.md, "A 10⁹-event study on this
machine", has the measured tables): 3,534,818 persons (282.9 synth events per person, the
mean the 10⁸ run measured; the 5,000-person probe says 268.4, which would give about
1.05 × 10⁹), 400 shards of 2.5 × 10⁶ events.  CPU s / wall s per stage at the 10⁸ run's
load on 2 shared cores: synth 830 / 1,160, ingest 1,620 / 1,950, cohorts 110 / 130,
labels 10 / 20, scan 270 / 370, features 260 / 440, model 320 / 680: 3,400 CPU s, about
1 h on two idle cores, 1 h 20 at that load.  Disk: peak 31 GiB during ingest (CDM 12 B +
LZ4 parts 20 B + the store 6 B per event), 6 GiB after it; the free-disk check asks for
38.5 B per event (36 GiB).  Peak RSS: synth 1.2 GB, ingest about 2.4 GB, features under
0.7 GB, scan 0.5 GB, cohorts and labels under 0.4 GB, the model about 2.4 GB (linear in
the cohort's rows, about 2 KB a row: 392 MiB at 10⁷, 575 MiB at 10⁸; docs/scaling.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _measure import SRC, measure_tree  # beside this script

Stages = dict[str, dict[str, Any]]  # stage name -> its figures

REPO = Path(__file__).resolve().parents[1]
SEED = 7
EVENT_TABLES = ("visit_occurrence", "condition_occurrence", "drug_exposure",
                "procedure_occurrence", "measurement", "observation")
# Bytes on disk per synth event, measured at 10⁸ events (the free-disk check): the CDM, the
# ingest's temporary LZ4 parts beside the store (all on disk at once), the store, and the
# rest (cohorts, labels, tensor, model).
DISK_BYTES_PER_EVENT = {"cdm": 12.0, "ingest parts": 20.0, "store": 6.0, "rest": 0.5}

COHORTS = """
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from cohortflow import cohorts, events
from cohortflow.layout import Layout
from cohortflow.study import load_study
study_path, store, results = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
jobs = int(sys.argv[4])
def one(name_shard):
    name, shard = name_shard
    study, out = load_study(study_path), Layout(results)
    cohorts.write_shard(study, name, store, shard, out.cohort_table(name, shard),
                        out.cohort_shard_attrition(name, shard))
study, out = load_study(study_path), Layout(results)
analysis = study.analysis_list()[0]
names, shards = sorted({analysis.target, analysis.outcome_cohort}), events.list_shards(store)
with ProcessPoolExecutor(jobs) as pool:
    list(pool.map(one, [(n, s) for n in names for s in shards]))
for name in names:
    cohorts.write_attrition([out.cohort_shard_attrition(name, s) for s in shards],
                            out.cohort_attrition(name))
"""
LABELS = """
import sys
from pathlib import Path
from cohortflow import cohorts, events
from cohortflow.layout import Layout
from cohortflow.study import load_study
study, store, out = load_study(sys.argv[1]), Path(sys.argv[2]), Layout(Path(sys.argv[3]))
analysis = study.analysis_list()[0]
cohorts.write_labels(study, analysis, out.cohort(analysis.target),
                     out.cohort(analysis.outcome_cohort), events.list_shards(store),
                     out.labels(analysis.id), out.attrition(analysis.id))
"""
FEATURES = """
import sys
from pathlib import Path
from cohortflow import features
from cohortflow.layout import Layout
from cohortflow.study import load_study
study, store, out = load_study(sys.argv[1]), Path(sys.argv[2]), Layout(Path(sys.argv[3]))
target = study.analysis_list()[0].target
features.build_tensor(study, target, store, out.cohort(target), out.tensor(target),
                      scratch=out.scratch(target), workers=2)
import zarr
attrs = zarr.open_group(out.tensor(target), mode="r").attrs
print(attrs.get("layout", "?"), attrs.get("fill", float("nan")))
"""
SCAN = """
import sys, polars as pl
print(sum(pl.scan_parquet(p).group_by("subject_id", "code").len().collect().height
          for p in sys.argv[1:]))
"""
MODEL = """
import json, sys
from pathlib import Path
from cohortflow import models
from cohortflow.layout import Layout
from cohortflow.models import _train
from cohortflow.study import load_study
_train.DENSE_MATRIX_BYTES = 0  # the CSR path, whatever the size
study, store, out = load_study(sys.argv[1]), Path(sys.argv[2]), Layout(Path(sys.argv[3]))
config = next(iter(models.configurations(study).values()))
model = Path(sys.argv[3]) / "model"
models.train_configuration(study, config, store, out.labels(config.analysis),
                           out.tensor(config.cohort), params_out=model / "params.json",
                           metrics_out=model / "metrics.json",
                           predictions_out=model / "predictions.parquet")
print(json.loads((model / "metrics.json").read_text())["test"]["auroc"])
"""


def size_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if it is gone)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            # a temporary file the stage has just renamed or removed
            with contextlib.suppress(FileNotFoundError):
                total += (Path(root) / name).lstat().st_size
    return total


class DiskWatch:
    """The largest size of a folder, sampled in a thread every second, or ten times as long
    as a pass over it took (a 10⁹-event ingest holds about a million part files), so the
    watch takes at most a tenth of a core from the stage it measures."""

    def __init__(self, path: Path) -> None:
        self.path, self.peak, self._stop = path, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            self.peak = max(self.peak, size_bytes(self.path))
            self._stop.wait(max(1.0, 10 * (time.perf_counter() - start)))

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, size_bytes(self.path))


def env() -> dict[str, str]:
    """This checkout's package first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "cohortflow", *map(str, args)]


def python(code: str, *args: object) -> list[str]:
    return [sys.executable, "-c", code, *map(str, args)]


def synth_events(cdm: Path) -> int:
    """Rows of the six clinical tables, from the ``synth.json`` the generator wrote."""
    rows = json.loads((cdm / "synth.json").read_text())["rows"]
    return sum(int(rows.get(t, 0)) for t in EVENT_TABLES)


def reusable(cdm: Path, persons: int) -> bool:
    """Whether ``cdm`` is a complete warehouse CDM of ``persons`` persons and this seed."""
    try:
        made = json.loads((cdm / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    return (made.get("complete") is True and made.get("persons") == persons
            and made.get("seed") == SEED and made.get("preset") == "warehouse")


def probe(persons: int, work: Path) -> float:
    """Mean events per person of the warehouse preset, measured on ``persons`` persons."""
    cached = work / f"probe-{persons}.json"
    if not cached.is_file():
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            measure_tree(cli("synth", "--persons", persons, "--seed", SEED, "--preset",
                             "warehouse", "--out", Path(tmp) / "cdm", "--no-progress"), env())
            cached.write_text(json.dumps({"events": synth_events(Path(tmp) / "cdm")}))
    return float(json.loads(cached.read_text())["events"]) / persons


def write_study(path: Path, persons: int, shards: int) -> None:
    """The demo study, its shards raised and one model configuration (logistic L2)."""
    import yaml

    raw = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
    raw["shards"] = shards
    raw["source"]["synth"].update(persons=persons, seed=SEED)
    raw["source"]["synth"]["preset"] = "warehouse"
    raw["model"]["sweep"]["families"] = [{"family": "logistic", "penalty": ["l2"], "C": [1.0]}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def check_disk(work: Path, events: float) -> None:
    need = {k: v * events for k, v in DISK_BYTES_PER_EVENT.items()}
    free = shutil.disk_usage(work).free
    print("disk needed (estimate): " + ", ".join(f"{k} {v / 2**30:.1f} GiB"
                                                 for k, v in need.items())
          + f"; peak (CDM + parts + store) {sum(need.values()) / 2**30:.1f} GiB; "
          f"free {free / 2**30:.1f} GiB", flush=True)
    if sum(need.values()) > free:
        sys.exit(f"not enough free disk under {work}: fix: --work on a larger disk")


def run_size(target: float, per_person: float, args: argparse.Namespace) -> Stages:
    persons = max(1_000, round(target / per_person))
    shards = min(4096, max(2, round(target / args.events_per_shard)))
    root = args.work / f"e{target:.0e}".replace("+", "")
    cdm, store, results, study = root / "omop", root / "events", root / "results", root / "s.yaml"
    reuse = args.reuse_cdm and reusable(cdm, persons)
    if root.exists():  # an earlier run of this benchmark (it writes s.yaml first), nothing else
        if any(root.iterdir()) and not (root / "s.yaml").is_file():
            sys.exit(f"{root} exists and is not this benchmark's work folder; fix: --work "
                     "elsewhere, or remove it yourself")
        for path in list(root.iterdir()) if reuse else [root]:
            if path != cdm:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    check_disk(args.work, target)
    print(f"\n== {target:.0e} events: {persons:,} persons ({target:.3g} / {per_person:.1f} "
          f"events per person), {shards} shards, work {root}", flush=True)
    write_study(study, persons, shards)
    stages: Stages = {}
    events = target

    def stage(name: str, cmd: list[str], outputs: list[Path], frees: list[Path]) -> str:
        with DiskWatch(root) as disk:
            wall, rss, cpu, out = measure_tree(cmd, env())
        freed = sum(size_bytes(p) for p in frees)
        stages[name] = {"wall": wall, "cpu": cpu, "rss": rss, "events": events,
                        "written": sum(size_bytes(p) for p in outputs), "frees": freed,
                        "disk_peak": disk.peak}
        if not args.keep:
            for p in frees:
                shutil.rmtree(p, ignore_errors=True)
        r = stages[name]
        print(f"  {name:<9} wall {wall:8.1f} s  CPU {cpu:8.1f} s  peak RSS {rss:7.0f} MiB  "
              f"written {r['written'] / 2**20:9.1f} MiB  work-folder peak "
              f"{disk.peak / 2**20:9.1f} MiB", flush=True)
        return out

    if reuse:
        print(f"  synth     not run: the CDM of an earlier --keep run is reused ({cdm})",
              flush=True)
    else:
        stage("synth", cli("synth", "--persons", persons, "--seed", SEED, "--preset",
                           "warehouse", "--out", cdm, "--no-progress"), [cdm], [])
    events = synth_events(cdm)
    if not reuse:
        stages["synth"]["events"] = events
    stage("ingest", cli("ingest", cdm, "--out", store, "--shards", shards), [store], [cdm])
    store_events = json.loads((store / "metadata" / "dataset.json").read_text())["events"]
    stage("cohorts", python(COHORTS, study, store, results, args.jobs),
          [results / "cohorts"], [])
    stage("labels", python(LABELS, study, store, results), [results / "analyses"], [])
    shard_files = sorted((store / "data").glob("*.parquet"))
    stage("scan", python(SCAN, *shard_files), [], [])
    layout = stage("features", python(FEATURES, study, store, results),
                   [results / "features"], [results / "cohorts"]).split()
    auroc = stage("model", python(MODEL, study, store, results), [results / "model"],
                  [store]).strip()
    peak = max(s["disk_peak"] for s in stages.values())
    print_size(target, persons, shards, events, store_events, stages)
    print(f"tensor layout {layout[0]}, fill {float(layout[1]):.4%}; model test AUROC {auroc}; "
          f"features / scan: {stages['features']['wall'] / stages['scan']['wall']:.2f}x wall, "
          f"{stages['features']['cpu'] / stages['scan']['cpu']:.2f}x CPU; "
          f"peak disk of the work folder {peak / 2**30:.2f} GiB", flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    stages["_"] = {"persons": persons, "shards": shards, "events": events, "peak": peak}
    return stages


def print_size(target: float, persons: int, shards: int, events: int, store_events: int,
               stages: Stages) -> None:
    print(f"\n{target:.0e} events: {persons:,} persons, {events:,} synth events "
          f"({store_events:,} store events), {shards} shards")
    print(f"| {'stage':<9} | {'wall s':>8} | {'CPU s':>8} | {'events/s':>11} | "
          f"{'peak RSS MiB':>12} | {'written MiB':>11} | {'inputs freed MiB':>16} |")
    print(f"|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 13}|{'-' * 14}|{'-' * 13}|{'-' * 18}|")
    for name, s in stages.items():
        print(f"| {name:<9} | {s['wall']:>8.1f} | {s['cpu']:>8.1f} | "
              f"{events / s['wall']:>11,.0f} | {s['rss']:>12,.0f} | "
              f"{s['written'] / 2**20:>11,.1f} | {s['frees'] / 2**20:>16,.1f} |")
    print("events/s: synth events over the stage's wall s; written: its outputs' size; "
          "inputs freed: what no later stage reads, deleted after it unless --keep")


def print_summary(runs: dict[float, Stages]) -> None:
    names = [n for n in next(iter(runs.values())) if n != "_"]
    print("\npeak RSS MiB per stage, across sizes (flat = memory bounded by the shard)")
    print("| events | " + " | ".join(f"{n:>8}" for n in names)
          + " | features/scan wall | features/scan CPU | peak disk GiB |")
    print("|---" * (len(names) + 4) + "|")
    for target, st in runs.items():
        print(f"| {target:.0e} | " + " | ".join(f"{st[n]['rss']:>8,.0f}" for n in names)
              + f" | {st['features']['wall'] / st['scan']['wall']:>17.2f}x"
              f" | {st['features']['cpu'] / st['scan']['cpu']:>16.2f}x"
              f" | {st['_']['peak'] / 2**30:>13.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", nargs="+", type=float, default=[1e6, 1e7],
                        help="target synth events per run (1e6 1e7 1e8 1e9)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cf-scale",
                        help="work folder (one sub-folder per size)")
    parser.add_argument("--keep", action="store_true",
                        help="keep every stage's output (default: clean as you go, deleting "
                             "a stage's inputs once no later stage reads them)")
    parser.add_argument("--reuse-cdm", action="store_true",
                        help="reuse the CDM an earlier --keep run of the same size left, if "
                             "it is complete (the synth stage is then not run or measured)")
    parser.add_argument("--events-per-shard", type=float, default=2.5e6)
    parser.add_argument("--probe-persons", type=int, default=5_000)
    parser.add_argument("--events-per-person", type=float,
                        help="skip the probe and use this mean")
    parser.add_argument("--jobs", type=int, default=2, help="cohort shards at a time")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    per_person = args.events_per_person or probe(args.probe_persons, args.work)
    how = "given" if args.events_per_person else (
        f"measured on a {args.probe_persons:,}-person warehouse (seed {SEED})")
    print(f"persons = events / {per_person:.1f} mean synth events per person ({how}); "
          f"shards = events / {args.events_per_shard:.3g}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    runs = {}
    for target in args.events:
        start = time.perf_counter()
        runs[target] = run_size(target, per_person, args)
        print(f"size done in {time.perf_counter() - start:.0f} s", flush=True)
    print_summary(runs)


if __name__ == "__main__":
    main()
