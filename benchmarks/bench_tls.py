"""Benchmark what TLS costs the slurm-dask profile: the demo study with and without it.

The demo study runs end to end under ``profiles/slurm-dask`` on a SLURM cluster (the test
cluster of ``tests/harness/slurm.py`` unless ``SLURM_CONF`` names another one), once as
shipped (mutual TLS) and once with the Dask cluster's security removed (plain TCP, what
cohortflow did before), alternating, each in a fresh folder.  The Dask step runs inside
its own Snakemake process, so the plain run patches ``cohortflow.compute`` through a
``sitecustomize`` on ``PYTHONPATH`` of the benchmark's processes only; nothing in the package
can switch TLS off.  Printed per run: the whole
study's wall seconds and the features step's (the one step that uses Dask), and whether the
cohort tables and tensors are byte-identical between the two modes.

    python benchmarks/bench_tls.py                  # 20000 persons, one run per mode
    python benchmarks/bench_tls.py --persons 5000 --repeats 2
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
from pathlib import Path

import yaml
from _measure import measure  # beside this script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Worker jobs sized for a small node, as in the tests.
SIZING = {"DASK_JOBQUEUE__SLURM__CORES": "1", "DASK_JOBQUEUE__SLURM__MEMORY": "1GiB",
          "DASK_COHORTFLOW__ADAPT__MAXIMUM": "2"}

#: Loaded by every Python process of a plain run (the head and each step's own Snakemake
#: process) through PYTHONPATH: the jobqueue cluster's security removed.
PLAIN_SITE = """
from cohortflow import compute
real = compute._import_slurm_cluster
def plain():
    class Plain(real()):
        def __init__(self, **kw):
            super().__init__(**{**kw, "security": None, "protocol": "tcp://"})
    return Plain
compute._import_slurm_cluster = plain
"""


def run_once(mode: str, study: Path, root: Path) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=root))
    site = root / "plain-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(PLAIN_SITE)
    if mode == "plain":
        os.environ["PYTHONPATH"] = str(site)
    else:
        os.environ.pop("PYTHONPATH", None)
    wall, rss = measure([sys.executable, "-m", "snakemake",
                         "--workflow-profile", str(REPO / "profiles" / "slurm-dask"),
                         "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
                         "--config", f"study={study}", "results=results"], REPO)
    results = workdir / "results" / "demo"
    with (results / "benchmarks" / "features.tsv").open() as handle:
        features = float(next(csv.DictReader(handle, delimiter="\t"))["s"])
    logs = "".join(p.read_text(errors="replace") for p in workdir.glob("slurm-*.out"))
    seen = sorted(set(re.findall(r"Registered to: +(tls|tcp)://", logs)))
    return {"mode": mode, "wall": wall, "features": features, "rss": rss, "results": results,
            "seen": ",".join(seen) or "?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from cohortflow.manifest import tree_digests
    from tests.harness.slurm import SlurmCluster

    cluster = None
    if "SLURM_CONF" not in os.environ:
        cluster = SlurmCluster().start()
        os.environ.update(cluster.env)
    os.environ.update(SIZING)
    os.environ.setdefault("COHORTFLOW_PSEUDONYM_KEY", "bench-only-key")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
            root = Path(tmp)
            study = yaml.safe_load((REPO / "seeds" / "studies" / "demo.yaml").read_text())
            study["source"]["synth"]["persons"] = args.persons
            (root / "study.yaml").write_text(yaml.safe_dump(study))
            rows = [run_once(mode, root / "study.yaml", root)
                    for _ in range(args.repeats) for mode in ("plain", "tls")]
            same = {
                str(row["mode"]): {**tree_digests(Path(str(row["results"])) / "cohorts"),
                                   **tree_digests(Path(str(row["results"])) / "features")}
                for row in rows}
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"slurm-dask demo, {args.persons} persons, worker jobs of 1 core (max 2 jobs)")
    print(f"{'mode':<6} {'study wall s':>13} {'features step s':>16} {'peak RSS MiB':>13} "
          f"{'workers used':>13}")
    for row in rows:
        print(f"{row['mode']:<6} {row['wall']:>13.1f} {row['features']:>16.1f} "
              f"{row['rss']:>13.0f} {row['seen']:>13}")
    for key in ("wall", "features"):
        plain = [float(str(r[key])) for r in rows if r["mode"] == "plain"]
        tls = [float(str(r[key])) for r in rows if r["mode"] == "tls"]
        change = (sum(tls) / len(tls)) / (sum(plain) / len(plain)) - 1
        print(f"TLS changes the mean {key} by {change:+.1%}")
    print("cohort tables and tensors byte-identical with and without TLS:",
          same["plain"] == same["tls"])


if __name__ == "__main__":
    main()
