"""The monitoring steps of a scoring run (``workflow/score.smk``): the run's drift against
the package's training profile, the prospective performance of earlier runs whose time at
risk has passed, labelled from this run's (later) extract, and the page of the series.

``<out>/<package digest[:12]>/`` then holds, beside each run's files::

    <as-of>/monitor.json                       drift(): shared, no small count
    <as-of>/prospective/<labelling as-of>.json prospective() of that run's persons, labelled
                                               from the extract scored as of the later day
    <as-of>/private/prospective/<labelling as-of>.parquet
                                               row, subject_id, label, score (owner-only)
    monitor.html                               the series page (monitor_page)

A prospective file is keyed by the as-of day of the run whose extract labelled it, so a
later extract labels the same persons again into a new file and never rewrites an earlier
one; the page shows each run's latest labelling.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cohortflow import events, package
from cohortflow.package import ModelPackage
from cohortflow.scoring._definitions import Definitions
from cohortflow.scoring._drift import prospective
from cohortflow.scoring._monitor_html import render
from cohortflow.scoring._outcomes import outcomes
from cohortflow.scoring._score import FEATURES_FILE

MONITOR = "monitor.json"
PAGE = "monitor.html"
PROSPECTIVE = "prospective"
NO_REFERENCE = ("the model package holds no reference profile (made before cohortflow wrote "
                "reference.json); fix: package the study again")


def run_days(package_dir: Path) -> list[date]:
    """The as-of days of the finished runs (``summary.json`` written) under
    ``<out>/<package digest[:12]>/``, in order."""
    days = []
    for folder in sorted(Path(package_dir).glob("*/summary.json")):
        try:
            days.append(date.fromisoformat(folder.parent.name))
        except ValueError:
            continue
    return sorted(days)


def elapsed(day: date, as_of: date, end_days: int) -> bool:
    """Whether the time at risk of a scoring as of ``day`` (its last day: ``day +
    end_days``) has passed by the end of ``as_of``, so a extract as of ``as_of`` knows
    every outcome of it.

    >>> elapsed(date(2020, 1, 1), date(2020, 12, 31), 365), elapsed(date(2020, 1, 1),
    ...                                                             date(2020, 12, 30), 365)
    (True, False)
    """
    return day < as_of and day + timedelta(days=end_days) <= as_of


def elapsed_runs(package_dir: Path, as_of: date, end_days: int) -> list[date]:
    """The finished runs under ``package_dir`` whose time at risk has passed by ``as_of``."""
    return [d for d in run_days(package_dir) if elapsed(d, as_of, end_days)
            and (Path(package_dir) / d.isoformat() / "private" / "index.parquet").is_file()]


def training_auroc(pkg: ModelPackage) -> float | None:
    """The packaged model's test AUROC (``meta.json``), the bar of a prospective AUROC."""
    found = pkg.meta.get("analyses", {}).get(pkg.analysis, {}).get("test_metrics", {})
    value = found.get("auroc")
    return None if value is None else float(value)


def write_monitor(package_path: Path, features_dir: Path, index: Path, codes: Path,
                  out: Path) -> None:
    """The monitor step: :func:`~cohortflow.scoring.drift` of a run (its feature matrix,
    its scores, the persons per code of its extract's events, seen in training or not)
    against the package's reference profile, into ``out``."""
    from cohortflow.scoring._drift import drift

    pkg = package.load(Path(package_path))
    defs = Definitions.of(pkg)
    if pkg.reference is None:
        events.write_json({"flags": [], "withheld": NO_REFERENCE}, Path(out))
        return
    frame = pl.read_parquet(Path(features_dir) / FEATURES_FILE)
    scored = pl.read_parquet(index)
    if not frame["subject_id"].equals(scored["subject_id"]):
        raise package.PackageError(f"{features_dir}: its rows are not the persons of {index}; "
                                   "fix: rerun the scoring")
    x = np.ascontiguousarray(frame.select(pkg.columns).to_numpy(), dtype=np.float64)
    counted = json.loads(Path(codes).read_text())
    persons = {**counted["seen"], **counted["unseen"]}
    record = drift(pkg.reference, x, pkg.columns, scored["score"].to_numpy(), persons,
                   defs.min_cell_count)
    events.write_json(record, Path(out))


def write_prospective(package_path: Path, store: Path, index: Path, *, labelled_as_of: date,
                      source_digest: str, out: Path, labels_out: Path) -> None:
    """The prospective step: the persons of an earlier run (its ``private/index.parquet``)
    labelled from this run's event store (:func:`~cohortflow.scoring.outcomes`), and
    :func:`~cohortflow.scoring.prospective` of their scores against those labels; the
    labels (owner-only) into ``labels_out``, the metrics (shared: no small count) into
    ``out`` with the labelling day and extract."""
    pkg = package.load(Path(package_path))
    defs = Definitions.of(pkg)
    scored = pl.read_parquet(index)
    labels = outcomes(pkg, Path(store), scored)
    rows = labels.select("row", "subject_id", "label").with_columns(
        score=pl.Series(scored["score"].to_numpy()[labels["row"].to_numpy()],
                        dtype=pl.Float64))
    record = prospective(rows["label"].cast(pl.Int8).to_numpy(), rows["score"].to_numpy(),
                         defs.min_cell_count, training_auroc=training_auroc(pkg))
    record = {**record, "labelled_as_of": labelled_as_of.isoformat(),
              "labelling_source_digest": source_digest}
    events.write_parquet(rows.to_arrow(), Path(labels_out))
    events.write_json(record, Path(out))


def latest_prospective(run_dir: Path) -> dict[str, Any] | None:
    """A run's prospective metrics from its latest labelling extract, None before any."""
    found = sorted(Path(run_dir, PROSPECTIVE).glob("*.json"))
    return json.loads(found[-1].read_text()) if found else None


def series(package_dir: Path) -> list[dict[str, Any]]:
    """The runs of ``package_dir`` with a ``monitor.json``, as :func:`monitor_page` reads
    them: as-of day, drift, latest prospective metrics."""
    runs = []
    for day in run_days(package_dir):
        folder = Path(package_dir) / day.isoformat()
        if (folder / MONITOR).is_file():
            runs.append({"as_of": day.isoformat(),
                         "drift": json.loads((folder / MONITOR).read_text()),
                         "prospective": latest_prospective(folder)})
    return runs


def write_page(package_path: Path, package_dir: Path, out: Path) -> None:
    """The monitoring page of every run of the package under ``package_dir``."""
    pkg = package.load(Path(package_path))
    runs = [r for r in series(package_dir) if "features" in r["drift"]
            or "withheld" in r["drift"]]
    text = render(runs, title=f"{pkg.analysis} (package {pkg.digest[:12]})")
    tmp = Path(out).with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


def flag_count(run_dir: Path) -> int | None:
    """Flags of a run: its drift's and its latest prospective metrics'; None before its
    monitor step."""
    record = Path(run_dir) / MONITOR
    if not record.is_file():
        return None
    found = len(json.loads(record.read_text()).get("flags", []))
    later = latest_prospective(Path(run_dir))
    return found + (len(later.get("flags", [])) if later else 0)
