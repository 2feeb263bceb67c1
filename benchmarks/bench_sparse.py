"""Benchmark the sparse feature layout on the warehouse preset: store size and peak RSS of
the features step dense vs sparse, and the model fit from CSR vs a dense matrix.

Setup, untimed: ``cohortflow synth --preset warehouse`` → event store (2 shards) → the demo
study's cohort, outcome and labels.  Then each step runs in its own process, measured with
``os.wait4`` (wall seconds; peak RSS of the largest process of its tree):

* the features step (``features.build_tensor``, 2 threads) with ``layout: dense`` and
  ``layout: sparse``: wall, peak RSS, size on disk, features, fill;
* one configuration's training (``models.train``: 3-fold CV, refit, test) of a logistic
  regression (L2) and a random forest: from the dense store (a dense float64 matrix) and
  from the sparse store forced to CSR (``DENSE_MATRIX_BYTES = 0``).

    python benchmarks/bench_sparse.py                  # 20000 persons
    python benchmarks/bench_sparse.py 5000 --keep /tmp/b
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _measure import SRC, measure  # beside this script

REPO = Path(__file__).resolve().parents[1]
SETUP = """
import sys
from pathlib import Path
from cohortflow import omop, synth
from tests.helpers import build_labels, write_study
root, persons = Path(sys.argv[1]), int(sys.argv[2])
synth.generate(persons, 7, root / "cdm", progress=False, preset="warehouse")
omop.ingest(omop.open_source(root / "cdm"), root / "events", shards=2)
for layout in ("dense", "sparse"):
    write_study(root / f"{layout}.yaml", shards=2, features__layout=layout,
                source={"omop": {"path": str(root / "cdm")}})
build_labels(root / "dense.yaml", root / "events", root / "results")
"""
FEATURES = """
import sys
from pathlib import Path
from cohortflow import features
from cohortflow.layout import Layout
from cohortflow.study import load_study
root, layout = Path(sys.argv[1]), sys.argv[2]
features.build_tensor(load_study(root / f"{layout}.yaml"), "cohort", root / "events",
                      Layout(root / "results").cohort("cohort"), root / f"{layout}.zarr",
                      scratch=root / "scratch", workers=2)
"""
TRAIN = """
import json, sys, time
from pathlib import Path
from cohortflow import models
from cohortflow.layout import Layout
from cohortflow.models import _train
from cohortflow.study import load_study
root, layout, family = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if layout == "sparse":
    _train.DENSE_MATRIX_BYTES = 0  # the CSR path, whatever the size
study = load_study(root / f"{layout}.yaml")
config = next(c for c in models.configurations(study).values() if c.family == family
              and c.hyperparameters.get("penalty", "l2") == "l2")
labels = Layout(root / "results").labels(study.analysis_list()[0].id)
metrics, _ = models.train(study, config, root / "events", labels, root / f"{layout}.zarr")
(root / f"{layout}-{family}.json").write_text(json.dumps(metrics))
"""


def _size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _python(code: str, *args: object) -> list[str]:
    return [sys.executable, "-c", code, *map(str, args)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("persons", nargs="?", type=int, default=20_000)
    parser.add_argument("--keep", type=Path, help="work here and keep the data")
    args = parser.parse_args()
    import json
    import os

    os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), str(REPO)])
    tmp = tempfile.TemporaryDirectory() if args.keep is None else None
    root = args.keep if args.keep is not None else Path(tmp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "results").is_dir():
        wall, rss = measure(_python(SETUP, root, args.persons), REPO)
        print(f"setup (synth, ingest, cohorts, labels): {wall:.0f} s, {rss:.0f} MiB")
    import zarr

    print(f"\nfeatures step, warehouse preset, {args.persons} persons")
    print(f"{'layout':>7} {'rows':>7} {'features':>9} {'fill %':>7} {'store MiB':>10} "
          f"{'wall s':>7} {'peak RSS MiB':>13}")
    for layout in ("dense", "sparse"):
        wall, rss = measure(_python(FEATURES, root, layout), REPO)
        store = root / f"{layout}.zarr"
        attrs = zarr.open_group(store, mode="r").attrs
        offsets = attrs["shard_offsets"]
        n_features = zarr.open_array(store / "feature", mode="r").shape[0]
        print(f"{layout:>7} {offsets[-1]:>7} {n_features:>9} {100 * attrs['fill']:>7.3f} "
              f"{_size_mib(store):>10.1f} {wall:>7.1f} {rss:>13.0f}")
    print("\nmodel training (3-fold CV + refit + test), one configuration")
    print(f"{'family':>14} {'input':>6} {'wall s':>7} {'peak RSS MiB':>13} {'test AUROC':>11}")
    for family in ("logistic", "random_forest"):
        for layout, label in (("dense", "dense"), ("sparse", "CSR")):
            wall, rss = measure(_python(TRAIN, root, layout, family), REPO)
            auroc = json.loads((root / f"{layout}-{family}.json").read_text())["test"]["auroc"]
            print(f"{family:>14} {label:>6} {wall:>7.1f} {rss:>13.0f} {auroc:>11.3f}")


if __name__ == "__main__":
    main()
