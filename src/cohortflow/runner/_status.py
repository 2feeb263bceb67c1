"""``cohortflow status``: which steps of a study are done, pending or out of date, and why,
from Snakemake's summary."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from cohortflow.errors import CohortflowError
from cohortflow.runner._command import snakemake_command
from cohortflow.study import load_study


@dataclass(frozen=True)
class StepState:
    """Where one rule's outputs stand."""

    rule: str
    outputs: int
    state: str  # "done", "pending" or "out of date"
    why: str


def status(study: Path | None, profile: str, results: Path) -> list[StepState]:
    """Which steps are done, pending or out of date, and why (Snakemake's summary)."""
    load_study(study)
    done = subprocess.run(
        snakemake_command(study, profile, results, ["--summary", "--quiet"]),
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise CohortflowError(f"snakemake --summary failed: {done.stderr.strip()[-2000:]}")
    lines = [line.split("\t") for line in done.stdout.splitlines() if "\t" in line]
    if not lines or lines[0][0] != "output_file":
        return []
    header = lines[0]
    by_rule: dict[str, list[tuple[str, str]]] = {}
    for row in lines[1:]:
        record = dict(zip(header, row, strict=False))
        by_rule.setdefault(record["rule"], []).append((record["status"], record["plan"]))
    return [_state(rule, rows) for rule, rows in by_rule.items()]


def _state(rule: str, rows: list[tuple[str, str]]) -> StepState:
    """One rule's state from its outputs' summary rows.

    >>> _state("model", [("ok", "no update"), ("missing", "update pending")]).state
    'pending'
    >>> _state("ingest", [("set of input files has changed", "update pending")]).why
    'set of input files has changed'
    """
    statuses = {status for status, _ in rows}
    if statuses == {"ok"} and all(plan == "no update" for _, plan in rows):
        return StepState(rule, len(rows), "done", "")
    if "missing" in statuses:
        return StepState(rule, len(rows), "pending", "output missing")
    reasons = sorted(s for s in statuses if s != "ok") or sorted({p for _, p in rows})
    return StepState(rule, len(rows), "out of date", "; ".join(reasons))
