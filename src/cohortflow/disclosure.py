"""The one way out of the compute: a :class:`Disclosure` built from the study writes every
shared output (report, figures, export, leaderboard, data-quality record, manifest, logs).

It holds the study's small-cell threshold (``min_cell_count``, the only name it has) and
offers the suppression rules of :mod:`cohortflow.privacy` bound to it, so no caller passes
a threshold by hand.  It refuses to write anywhere but the shared paths of the study's
results tree (:data:`cohortflow.layout.SHARED`), and records each file it writes in a ledger
(``results/<study>/.disclosure/``, owner-only like the rest).  :func:`audit` compares the
shared files with the ledger: a shared file that did not come through the gate, or changed
after it, is named.  Snakemake writes the step timings itself (``benchmarks/``); the audit
checks that those hold nothing but its timing columns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from cohortflow import events, privacy
from cohortflow.errors import CohortflowError
from cohortflow.layout import SHARED, Layout
from cohortflow.manifest import file_digest

if TYPE_CHECKING:
    from cohortflow.study import Study

log = logging.getLogger(__name__)

LEDGER = ".disclosure"
"""The ledger's folder under ``results/<study>/``: one record per file the gate wrote."""

BENCHMARK_COLUMNS = frozenset({"s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss",
                               "io_in", "io_out", "mean_load", "cpu_time"})
"""What a Snakemake benchmark file may hold: timings and resource use, no data."""

_WRITTEN_BY_SNAKEMAKE = ("benchmarks/**/*.tsv",)

STEP_FAILED = "step failed: "
"""What a step's log says before the error (a :class:`CohortflowError`: bad input, said
with its fix) that stopped it."""
STEP_CRASHED = "step crashed: "
"""What a step's log says before any other exception that stopped it, with its type."""


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A :data:`SHARED` glob as a regex over posix paths (``**/`` is any folder depth).

    >>> bool(_glob_regex("logs/**/*.log").match("logs/sweep/ab.log"))
    True
    >>> bool(_glob_regex("figures/*").match("figures/a/b.png"))
    False
    """
    out = ""
    for part in re.split(r"(\*\*/|\*)", pattern):
        out += {"**/": "(?:[^/]+/)*", "*": "[^/]*"}.get(part, re.escape(part))
    return re.compile(out + r"\Z")


_SHARED = tuple(_glob_regex(p) for p in SHARED)
_SNAKEMAKE = tuple(_glob_regex(p) for p in _WRITTEN_BY_SNAKEMAKE)


def is_shared(relative: str) -> bool:
    """Whether a path relative to ``results/<study>`` is meant to leave the compute.

    >>> is_shared("report.html"), is_shared("export/a__o__1y/attrition.json")
    (True, True)
    >>> [is_shared(f"analyses/a__o__1y/{f}") for f in ("leaderboard.parquet", "labels.parquet")]
    [True, False]
    """
    return any(r.match(relative) for r in _SHARED)


@dataclass(frozen=True)
class Disclosure:
    """The gate of one study's shared outputs (see the module's docstring)."""

    layout: Layout
    min_cell_count: int

    @classmethod
    def of(cls, study: Study, results: str | Path) -> Disclosure:
        """The gate of ``study`` whose results folder is ``results`` (the parent of
        ``results/<study>``)."""
        return cls(Layout.of(results, study.name), study.min_cell_count)

    # -- counts as they may be shown ----------------------------------------------------------
    def count(self, n: int) -> str:
        """A count for people to read: ``<min`` when small (:func:`privacy.suppress`)."""
        return privacy.suppress(n, self.min_cell_count)

    def value(self, n: int) -> int | str:
        """A count for JSON: the number, or ``"<min"`` when small."""
        return privacy.suppress_value(n, self.min_cell_count)

    def steps(self, counts: list[int]) -> list[str]:
        """An attrition chain, with complementary suppression (:func:`privacy.suppress_steps`)."""
        return privacy.suppress_steps(counts, self.min_cell_count)

    def categories(self, counts: dict[str, int], total_shown: bool = True) -> dict[str, str]:
        """Counts of categories adding up to a total (:func:`privacy.suppress_categories`)."""
        return privacy.suppress_categories(counts, self.min_cell_count, total_shown)

    def counts(self, record: Any, keys: frozenset[str]) -> Any:
        """A JSON-like record with every integer under ``keys`` suppressed."""
        return privacy.suppress_counts(record, keys, self.min_cell_count)

    def curve_shown(self, labels: Sequence[int] | Any) -> bool:
        """Whether a ROC curve of these labels may be drawn (:func:`privacy.curve_shown`)."""
        return privacy.curve_shown(labels, self.min_cell_count)

    def metrics_shown(self, persons: int, outcomes: int) -> bool:
        """Whether metrics over a test split of ``persons``, ``outcomes`` of them with the
        outcome, may be shown (:func:`privacy.split_shown`)."""
        return privacy.split_shown(persons, outcomes, self.min_cell_count)

    def pool_bins(self, positives: Sequence[int], totals: Sequence[int]) -> list[list[int]]:
        """Calibration bins grouped so none has a small count (:func:`privacy.pool_bins`)."""
        return privacy.pool_bins(positives, totals, self.min_cell_count)

    # -- writing ------------------------------------------------------------------------------
    def _relative(self, path: str | Path) -> str:
        """``path`` relative to the study's root, refused unless it is a shared path."""
        target = Path(path).absolute()
        root = self.layout.root.absolute()
        try:
            relative = target.relative_to(root).as_posix()
        except ValueError:
            relative = ""
        if not relative or not is_shared(relative) or any(r.match(relative) for r in _SNAKEMAKE):
            raise CohortflowError(
                f"{path}: not a shared output of {root} (the disclosure gate writes only "
                f"{', '.join(p for p in SHARED if p not in _WRITTEN_BY_SNAKEMAKE)}); fix: write "
                "person-level files with the step's own writer, shared ones to those paths")
        return relative

    def _record(self, relative: str) -> None:
        path = self.layout.root / relative
        entry = self.layout.root / LEDGER / f"{relative}.json"
        events.write_json({"sha256": file_digest(path), "min_cell_count": self.min_cell_count},
                          entry)

    def write_bytes(self, path: str | Path, data: bytes) -> None:
        """Write a shared file atomically and record it in the ledger."""
        relative = self._relative(path)
        target = self.layout.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        self._record(relative)

    def write_text(self, path: str | Path, text: str) -> None:
        """A shared text file (the report)."""
        self.write_bytes(path, text.encode())

    def write_json(self, path: str | Path, record: object) -> None:
        """A shared JSON file, keys sorted (same content, same bytes)."""
        self.write_bytes(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())

    def write_parquet(self, path: str | Path, frame: pl.DataFrame | pa.Table) -> None:
        """A shared Parquet file, written reproducibly (:func:`events.write_parquet`)."""
        relative = self._relative(path)
        table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        events.write_parquet(table, self.layout.root / relative)
        self._record(relative)

    @contextlib.contextmanager
    def open_log(self, path: str | Path) -> Iterator[IO[str]]:
        """A shared log file written line by line (Snakemake's output), recorded when
        closed."""
        relative = self._relative(path)
        target = self.layout.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with target.open("w") as sink:
                yield sink
        finally:
            self._record(relative)

    @contextlib.contextmanager
    def step_log(self, path: str | Path) -> Iterator[None]:
        """Send cohortflow's log records (and warnings) to a step's log while it runs."""
        relative = self._relative(path)
        target = self.layout.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, mode="w")
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        # Snakemake runs local jobs in threads: keep each job's records in its own log.
        job_thread = threading.get_ident()
        handler.addFilter(lambda record: record.thread == job_thread)
        root = logging.getLogger()
        previous_level = root.level
        root.addHandler(handler)
        root.setLevel(min(previous_level, logging.INFO) if previous_level else logging.INFO)
        logging.captureWarnings(True)
        try:
            yield
        except Exception as exc:  # the step's log says why it failed, stack frames included
            if isinstance(exc, CohortflowError):  # the input's fault, said for its user
                log.error("%s%s", STEP_FAILED, exc, exc_info=True)
            else:
                log.error("%s%s: %s", STEP_CRASHED, type(exc).__name__, exc, exc_info=True)
            raise
        finally:
            logging.captureWarnings(False)
            root.removeHandler(handler)
            root.setLevel(previous_level)
            handler.close()
            self._record(relative)


def _benchmark_problem(path: Path) -> str | None:
    """Why a Snakemake benchmark file holds more than timings, or None."""
    lines = path.read_text().splitlines()
    header = lines[0].split("\t") if lines else []
    extra = sorted(set(header) - BENCHMARK_COLUMNS)
    if extra:
        return f"columns {extra} are not Snakemake's timing columns"
    number = re.compile(r"^(-|NA|[0-9.:e+-]+)$")
    cells = [c for line in lines[1:] for c in line.split("\t")]
    bad = [c for c in cells if not number.match(c)]
    return f"non-numeric cells {bad[:3]}" if bad else None


def audit(layout: Layout) -> list[str]:
    """Every shared file under ``layout.root`` that did not come through the gate as it is
    now (missing from the ledger, or changed since), and any timing file holding more than
    timings: one line each, empty when all is well."""
    root = layout.root
    problems = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(f"{LEDGER}/") or not is_shared(relative):
            continue
        if any(r.match(relative) for r in _SNAKEMAKE):
            why = _benchmark_problem(path)
            if why:
                problems.append(f"{path}: {why}")
            continue
        entry = root / LEDGER / f"{relative}.json"
        if not entry.is_file():
            problems.append(f"{path}: a shared file not written through the disclosure gate")
        elif json.loads(entry.read_text())["sha256"] != file_digest(path):
            problems.append(f"{path}: changed after the disclosure gate wrote it")
    return problems
