"""Writing a cohort's de-identified OMOP CDM subset: the tables, one pass each over the
source, then the DuckDB file, the record and the marker, all in a temporary sibling folder
renamed into place at the end (a failure leaves nothing behind).

Memory is bounded by one table's rows of the cohort's persons (plus one row per person and
one id pair per visit): the clinical tables are read first, each once, tracking every
person's last date and the concepts used; then the person table (birth, top-coding,
location, k-anonymity), the location table and the vocabulary.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from cohortflow import events, privacy
from cohortflow.errors import CohortflowError
from cohortflow.layout import Layout
from cohortflow.mart import _deid, _record, _tables
from cohortflow.mart._tables import CLINICAL
from cohortflow.omop import OmopSource, open_source
from cohortflow.study import Study
from cohortflow.study._mart import MART_TABLES

log = logging.getLogger(__name__)

MARKER = "mart.json"
"""Written last into a finished mart: names the generator, so a rerun may replace it."""
DUCKDB_FILE = "mart.duckdb"
REPORT_JSON = "deid_report.json"
REPORT_HTML = "deid_report.html"
def export_mart(study: Study, cohort: str, out: Path, *, results: Path = Path("results"),
                origin: str | None = None, key: str | None = None) -> dict[str, Any]:
    """Write the de-identified OMOP CDM subset of cohort ``cohort``'s persons to ``out``:
    one Parquet file per table, ``mart.duckdb``, ``deid_report.json`` and ``.html``;
    returns the record.  ``results`` is the results root the study ran into (its cohort
    tables, and a synthetic source's CDM); ``origin`` names the study file in messages;
    ``key`` overrides ``$COHORTFLOW_PSEUDONYM_KEY``."""
    origin = origin or f"study '{study.name}'"
    if study.min_cell_count < 2:
        raise CohortflowError(
            f"{origin}: min_cell_count is {study.min_cell_count}, but the mart is k-anonymous "
            "with k = min_cell_count, and k = 1 protects nobody; fix: min_cell_count: 11")
    try:
        secret = privacy.pseudonym_key(key)
    except CohortflowError:
        raise CohortflowError(
            f"{origin}: no pseudonym key: the mart's person ids and date shifts are keyed "
            f"hashes of the ids; fix: export {privacy.PSEUDONYM_KEY_ENV}=<the long random "
            "secret of the study's exports, kept off the mart>") from None
    layout = Layout.of(results, study.name)
    members = cohort_members(study, layout, cohort, origin)
    _refuse_under_k(len(members), study.min_cell_count, cohort, origin)
    out = Path(out)
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with _open(study, layout, origin) as source:
            record = _write(study, cohort, source, members, secret, work)
        _swap(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return record


def _refuse_under_k(persons: int, k: int, cohort: str, origin: str) -> None:
    """Refuse a cohort of fewer than ``k`` persons (but some): every class of
    quasi-identifiers, even all of them generalised to one value, would be under k, so no
    mart of it can be k-anonymous.  The message does not give the count (it is small)."""
    if privacy.small(persons, k):
        raise CohortflowError(
            f"{origin}: cohort '{cohort}' has fewer than {k} persons, so no mart of it can be "
            f"k-anonymous (k = min_cell_count = {k}): even with every quasi-identifier "
            "generalised to one value they would form one class under k, and suppressing "
            "them all would still hand over their records; nothing was written; fix: export "
            "a cohort of at least min_cell_count persons (a broader cohort definition, or a "
            "larger source)")


def cohort_members(study: Study, layout: Layout, cohort: str, origin: str) -> list[int]:
    """The distinct persons (``subject_id``) of a built cohort, sorted."""
    known = sorted(study.library())
    if cohort not in known:
        guess = (difflib.get_close_matches(cohort, known, n=1) or study.targets())[0]
        raise CohortflowError(f"{origin}: no cohort '{cohort}' (cohorts: {', '.join(known)}); "
                              f"fix: --cohort {guess}")
    tables = [layout.cohort_table(cohort, s) for s in events.shard_names(study.shards)]
    missing = [t for t in tables if not t.is_file()]
    if missing:
        raise CohortflowError(
            f"{missing[0]}: cohort '{cohort}' of study '{study.name}' is not built "
            f"({len(missing)} of {len(tables)} shard tables missing); fix: `cohortflow run "
            f"{origin if origin.endswith(('.yaml', '.yml')) else 'STUDY'}` first (with "
            "--results pointing where it ran: the same --results here)")
    ids = pl.concat([pl.scan_parquet(t).select("subject_id") for t in tables]).unique()
    return sorted(ids.collect()["subject_id"].to_list())


@contextlib.contextmanager
def _open(study: Study, layout: Layout, origin: str) -> Iterator[OmopSource]:
    """The study's OMOP CDM source, opened."""
    if study.source.meds is not None:
        raise CohortflowError(
            f"{origin}: source is a MEDS dataset, which has no OMOP CDM tables to subset; "
            "fix: export a mart from a study whose source is synth or omop")
    if study.source.synth is not None:
        if not layout.omop.is_dir():
            raise CohortflowError(f"{layout.omop}: the study's synthetic CDM is missing; fix: "
                                  "`cohortflow run STUDY` first")
        source = open_source(layout.omop)
    else:
        omop = study.source.omop
        assert omop is not None  # validated: exactly one source
        location = omop.url if omop.url is not None else study.source_path()
        assert location is not None
        source = open_source(location, omop.format, omop.schema_name)
    with source:
        yield source


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that exists and is neither empty nor a previous mart."""
    if out.exists() and not out.is_dir():
        raise CohortflowError(f"{out}: exists and is not a directory; fix: choose a new --out")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / MARKER).read_text()).get("generator") == "cohortflow.mart"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise CohortflowError(
                f"{out}: directory is not empty and is not a previous `cohortflow export-mart` "
                f"output (no {MARKER}); fix: choose an empty or new --out directory")
        ours_names = {MARKER, DUCKDB_FILE, f"{DUCKDB_FILE}.wal", REPORT_JSON, REPORT_HTML,
                      *(f"{t}.parquet" for t in MART_TABLES)}
        others = sorted(p.name for p in out.iterdir() if p.name not in ours_names
                        or not (p.is_file() and not p.is_symlink()))
        if others:  # replacing the mart would delete them
            raise CohortflowError(
                f"{out / others[0]}: a previous mart's folder holds a file the export did not "
                "write, which replacing the mart would delete; fix: move it away, or choose "
                "a new --out directory")


def _swap(work: Path, out: Path) -> None:
    """Put the finished ``work`` folder at ``out``, replacing an empty folder or a previous
    mart (moved aside first, removed after)."""
    old = None
    if out.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        out.rename(old / "mart")
    work.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_table(frame: pl.DataFrame, path: Path) -> None:
    """A person-level Parquet file: reproducible bytes, owner-only."""
    events.write_parquet(frame.to_arrow(), path)
    path.chmod(0o600)


def _write(study: Study, cohort: str, source: OmopSource, members: list[int], secret: str,
           work: Path) -> dict[str, Any]:
    policy = study.mart
    keys = _deid.person_keys(members, secret, policy.date_shift_days)
    keep = frozenset(policy.keep_columns)
    done = _tables.Collected()
    for table in CLINICAL:
        found = _tables.read(source, table, keys, keep)
        if found is not None:
            _write_table(_tables.clinical(table, *found, keep, done), work / f"{table}.parquet")
    person = _tables.read(source, "person", keys)
    if person is None:
        raise CohortflowError(f"{source.location}: the source has no person rows for the "
                              "cohort; fix: export from the source the cohort was built on")
    _refuse_under_k(person[0].height, study.min_cell_count, cohort,
                    f"{source.location}: the cohort's person rows")
    persons, location, anonymised = _tables.person_table(study, source, person[0], keep, done)
    _write_table(persons, work / "person.parquet")
    done.rows["person"] = persons.height
    if location is not None:
        _write_table(location, work / "location.parquet")
        done.rows["location"] = location.height
    for table, frame in _tables.vocabulary(source, done.concepts).items():
        _write_table(frame, work / f"{table}.parquet")
        done.rows[table] = frame.height
        done.act(table, "*", "subset", "rows of the concepts the mart's tables use (and their "
                 "ancestors, so concept sets with descendants keep working); not person data")
    written = [t for t in MART_TABLES if (work / f"{t}.parquet").is_file()]
    _write_duckdb(work, written)
    record = _record.build(study, cohort, anonymised, done.rows, done.actions, written,
                           has_location=location is not None)
    events.write_json(record, work / REPORT_JSON)
    (work / REPORT_JSON).chmod(0o600)
    from cohortflow.mart._report import write_html

    write_html(record, work / REPORT_HTML)
    events.write_json({"generator": "cohortflow.mart", "format": 1, "study": study.name,
                       "cohort": cohort, "tables": written}, work / MARKER)
    (work / MARKER).chmod(0o600)
    return record


def _write_duckdb(work: Path, tables: list[str]) -> None:
    """The mart's tables, once more, as one DuckDB file (a valid OMOP CDM source)."""
    path = work / DUCKDB_FILE
    con = duckdb.connect(str(path))
    try:
        for table in tables:
            parquet = (work / f"{table}.parquet").as_posix().replace("'", "''")
            con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM read_parquet(\'{parquet}\')')
        con.execute("CHECKPOINT")
    finally:
        con.close()
    path.chmod(0o600)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        wal.chmod(0o600)
