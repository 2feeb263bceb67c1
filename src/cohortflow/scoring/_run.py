"""An as-of scoring run: its source, its folder, its Snakemake workflow, its history.

``<out>/`` holds::

    stores/<source digest[:12]>/       an OMOP extract ingested (event store), shared by
                                       every package and date scored on that extract
    <package digest[:12]>/<as-of>/     one run:
        scores.parquet                 person (keyed pseudonym), score          owner-only
        private/index.parquet          subject_id, index_time, score            owner-only
        private/eligible.parquet       subject_id, index_time (= the as-of day)
        private/attrition.json         exact counts after each eligibility step
        features/values.parquet        subject_id + the packaged columns, in order
        codes.json                     persons per extract feature code, seen / unseen
        summary.json                   shared: suppressed counts, pooled histogram, digests
    .snakemake/                        Snakemake's records (the rerun keys)

The workflow (``workflow/score.smk``) reruns a step only when its key changes: the package
digest, the source digest (SHA-256 over the extract's files) and the as-of date.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cohortflow import events, manifest, omop, package, privacy, private
from cohortflow.cohorts import CohortPlan
from cohortflow.errors import ScoringError
from cohortflow.runner._command import workflow_root
from cohortflow.scoring._definitions import Definitions, check_store, check_tables

SNAKEFILE = "workflow/score.smk"
STORES = "stores"
SUMMARY = "summary.json"


def parse_as_of(text: str) -> date:
    """The as-of date from ``YYYY-MM-DD``.

    >>> parse_as_of("2024-03-01")
    datetime.date(2024, 3, 1)
    >>> parse_as_of("1/3/2024")
    Traceback (most recent call last):
    ...
    cohortflow.errors.ScoringError: --as-of '1/3/2024': not a date \
YYYY-MM-DD; fix: --as-of 2024-03-01
    """
    try:
        return date.fromisoformat(text) if len(text) == 10 else date.fromisoformat("x")
    except ValueError:
        raise ScoringError(f"--as-of {text!r}: not a date YYYY-MM-DD; fix: --as-of "
                           "2024-03-01") from None


def is_event_store(path: Path) -> bool:
    """Whether ``path`` is an event store (MEDS layout: data/*.parquet, metadata/codes)."""
    return (Path(path) / "data").is_dir() and (Path(path) / "metadata" / "codes.parquet").is_file()


def source_digest(path: Path) -> str:
    """SHA-256 over the source's files (relative path and content digest of each)."""
    lines = "".join(f"{digest}  {name}\n"
                    for name, digest in sorted(manifest.tree_digests(Path(path)).items()))
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass(frozen=True)
class ScoringRun:
    """One scoring's inputs, checked, and where its files go."""

    package: Path
    package_digest: str
    source: Path
    source_kind: str  # "omop" or "store"
    source_digest: str
    as_of: date
    out: Path
    entered_within: int | None = None
    """Score only episodes whose index date falls in the last that many days up to the
    as-of date (None: every open episode)."""

    @property
    def store(self) -> Path:
        """The event store the steps read: the source itself, or its ingest."""
        if self.source_kind == "store":
            return self.source
        return self.out / STORES / self.source_digest[:12]

    @property
    def folder(self) -> Path:
        """The run folder ``<out>/<package digest[:12]>/<as-of>`` (a scoring with another
    ``entered_within`` as of the same day replaces it: the option is in the rerun key)."""
        return self.out / self.package_digest[:12] / self.as_of.isoformat()

    def config(self) -> dict[str, str]:
        """The workflow's config entries."""
        return {"package": str(self.package), "package_digest": self.package_digest,
                "source": str(self.source), "source_kind": self.source_kind,
                "source_digest": self.source_digest, "as_of": self.as_of.isoformat(),
                "out": str(self.out),
                "entered_within": "all" if self.entered_within is None
                else str(self.entered_within)}


def prepare(package_path: Path, source: Path, as_of: str, out: Path,
            entered_within: int | None = None) -> ScoringRun:
    """Check everything before any work: the package (verified, this major version, nothing
    in it that only genotypes or omics give), the as-of date, the pseudonym key, the source
    (an OMOP extract holding every table the packaged definitions read, or an event store
    holding codes of every family they read and the target cohort's entry concepts); one
    clear error otherwise."""
    pkg = package.load(Path(package_path))
    day = parse_as_of(as_of)
    if entered_within is not None and entered_within < 1:
        raise ScoringError(f"--entered-within {entered_within}: not a number of days; fix: "
                           "a whole number of days of 1 or more (--entered-within 31), or "
                           "leave it out to score every open episode")
    privacy.pseudonym_key()
    source = Path(source).absolute()
    if not source.exists():
        raise ScoringError(f"{source}: not found; fix: give an OMOP extract (DuckDB file, "
                           "Parquet or CSV folder) or an event store with --source")
    defs = Definitions.of(pkg)
    if beyond := defs.beyond_events():
        raise ScoringError(
            f"{package_path}: the packaged model reads {' and '.join(beyond)}, which scoring "
            "cannot build: it reads an extract's events, not genotypes or omics matrices; "
            "fix: package an analysis whose features and target cohort use events only "
            "(e.g. a feature set without features.genomics and features.omics)")
    if is_event_store(source):
        codes = events.read_codes(source)
        check_store(defs, codes, str(source))
        CohortPlan(defs.cohort, defs.concept_sets, codes).check()
        kind = "store"
    else:
        with omop.open_source(source) as opened:
            check_tables(defs, opened.tables(), opened.location)
        kind = "omop"
    return ScoringRun(package=Path(package_path).absolute(), package_digest=pkg.digest,
                      source=source, source_kind=kind, source_digest=source_digest(source),
                      as_of=day, out=Path(out).absolute(), entered_within=entered_within)


def ingest_extract(run_config: dict[str, Any], out: Path) -> None:
    """The ingest step: an OMOP extract into the event store ``out``."""
    with omop.open_source(Path(run_config["source"])) as source:
        omop.ingest(source, Path(out), int(run_config.get("shards", 4)))


def snakemake_command(run: ScoringRun, profile: str, extra: list[str], shards: int = 4
                      ) -> list[str]:
    """The Snakemake command of a scoring run under ``profile`` (profiles/<profile>)."""
    root = workflow_root()
    profile_dir = root / "profiles" / profile
    if not (profile_dir / "config.yaml").is_file():
        known = sorted(p.name for p in (root / "profiles").iterdir() if p.is_dir())
        raise ScoringError(f"profile '{profile}' not found in {root / 'profiles'}; fix: one "
                           f"of {', '.join(known)}")
    entries = [f"{k}={v}" for k, v in sorted(run.config().items())]
    return [sys.executable, "-m", "snakemake", "--snakefile", str(root / SNAKEFILE),
            "--workflow-profile", str(profile_dir), "--directory", str(run.out), *extra,
            "--config", *entries, f"shards={shards}", f"profile={profile}"]


def score(package_path: Path, source: Path, as_of: str, out: Path, profile: str = "laptop",
          extra: list[str] | None = None, shards: int = 4, entered_within: int | None = None
          ) -> tuple[int, ScoringRun, Path]:
    """Run the scoring workflow; returns Snakemake's exit status, the run and its log."""
    run = prepare(package_path, source, as_of, out, entered_within)
    private.protect(run.out)  # owner-only from here on
    log = run.out / "logs" / f"{run.package_digest[:12]}-{run.as_of.isoformat()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        code = subprocess.call(snakemake_command(run, profile, extra or [], shards),
                               stdout=sink, stderr=subprocess.STDOUT)
    return code, run, log


@dataclass(frozen=True)
class HistoryRow:
    """One scoring of ``cohortflow scores``: what the shared summary says."""

    as_of: str
    package: str
    persons: str
    mean_score: str
    state: str
    flags: str = "-"
    """Monitoring flags: the run's drift flags and its latest prospective metrics' ("-"
    before its monitor step)."""


def history(out: Path) -> list[HistoryRow]:
    """Every scoring run under ``out``, by as-of date then package: persons scored
    (suppressed as in the summary), mean score, ``done`` (summary written) or
    ``incomplete``, and its monitoring flags."""
    from cohortflow.scoring._monitor import flag_count

    out = Path(out)
    if not out.is_dir():
        raise ScoringError(f"{out}: not a folder; fix: give the --out folder of "
                           "`cohortflow score`")
    rows = []
    for folder in sorted(out.glob("*/*")):
        if not folder.is_dir() or folder.parent.name in (STORES, "logs"):
            continue
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        record = folder / SUMMARY
        if record.is_file():
            summary = json.loads(record.read_text())
            mean = summary["score"]["mean"] if summary.get("score") else None
            flags = flag_count(folder)
            rows.append(HistoryRow(day.isoformat(), summary["package_digest"][:12],
                                   str(summary["persons_scored"]),
                                   "-" if mean is None else f"{mean:.4f}", "done",
                                   "-" if flags is None else str(flags)))
        else:
            rows.append(HistoryRow(day.isoformat(), folder.parent.name, "-", "-",
                                   "incomplete"))
    return sorted(rows, key=lambda r: (r.as_of, r.package))
