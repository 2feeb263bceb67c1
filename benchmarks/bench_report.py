"""The report step of seeds/studies/many.yaml (25 analyses): wall seconds, and per analysis,
for a number of figure-drawing workers.

The study is run once with ``cohortflow run`` (laptop profile, ``--persons`` synthetic
persons, one model per analysis) unless ``--results`` names a finished run's
``results/many``.  Then, per worker count, a fresh process calls
:func:`cohortflow.report.write` on that tree (as the ``report`` rule does with its threads)
and times it alone, imports left out; the page and figures it writes are compared across
worker counts, which must give the same bytes.  ``--src`` times another checkout's package
(the one before a change) on the same tree.  Times are printed, never checked.

    python benchmarks/bench_report.py --persons 3000          # builds the study (minutes)
    python benchmarks/bench_report.py --results /tmp/run/results/many --workers 1 2 4
    python benchmarks/bench_report.py --results ... --src /path/to/old/src --workers 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import inspect, json, os, resource, sys, time
from pathlib import Path
from cohortflow import models, report
from cohortflow.disclosure import Disclosure
from cohortflow.study import load_study
study_file, results, workers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
study = load_study(study_file)
gate = Disclosure.of(study, results.parent)
configs = models.configurations(study)
extra = {"workers": workers} if "workers" in inspect.signature(report.write).parameters else {}
start, cpu = time.perf_counter(), time.process_time()
report.write(study, gate, configs, oracle_dirs=[gate.layout.omop],
             quality=gate.layout.data_quality, **extra)
wall = time.perf_counter() - start
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": time.process_time() - cpu + children.ru_utime
                  + children.ru_stime, "analyses": len(study.analysis_list()),
                  "workers": workers if extra else 1}))
"""


def build(persons: int, folder: Path) -> tuple[Path, Path]:
    """Run the many-analyses seed study at ``persons`` persons (2 shards, one logistic
    model per analysis) in ``folder``; its study file and ``results/many``."""
    raw = yaml.safe_load((REPO / "seeds" / "studies" / "many.yaml").read_text())
    raw["source"]["synth"]["persons"] = persons
    raw["shards"] = 2
    raw["model"] = {"family": "logistic_l2", "C": 1.0}
    study = folder / "many.yaml"
    study.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"),
           "COHORTFLOW_PSEUDONYM_KEY": os.environ.get("COHORTFLOW_PSEUDONYM_KEY",
                                                      "bench-report-pseudonym-key")}
    subprocess.run([sys.executable, "-m", "cohortflow", "run", str(study), "--results",
                    "results"], cwd=folder, env=env, check=True, capture_output=True)
    return study, folder / "results" / "many"


def files_digest(results: Path) -> str:
    """One digest of the page and every figure the report wrote."""
    digest = hashlib.sha256()
    for path in [results / "report.html", *sorted((results / "figures").rglob("*.png"))]:
        digest.update(path.relative_to(results).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def time_report(study: Path, results: Path, workers: int, src: Path) -> dict[str, float]:
    """``report.write`` of ``results`` by the package in ``src``, timed in a fresh process."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(study), str(results), str(workers)],
                          env={**os.environ, "PYTHONPATH": str(src)}, check=True,
                          capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=3000)
    parser.add_argument("--results", type=Path, help="a finished run's results/many")
    parser.add_argument("--study", type=Path, help="its study file (default: "
                        "<results>/../../many.yaml)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--src", type=Path, default=REPO / "src",
                        help="the package to time (default: this checkout's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.results is None:
            study, results = build(args.persons, Path(tmp))
        else:
            results = args.results.resolve()
            study = args.study or results.parents[1] / "many.yaml"
        print(f"report step of {results} ({args.src})")
        print(f"{'workers':>7} {'wall s':>8} {'s/analysis':>10} {'cpu s':>8}  files")
        for workers in args.workers:
            run = time_report(study, results, workers, args.src)
            print(f"{run['workers']:>7.0f} {run['wall']:>8.1f} "
                  f"{run['wall'] / run['analyses']:>10.2f} {run['cpu']:>8.1f}  "
                  f"{files_digest(results)}")


if __name__ == "__main__":
    main()
