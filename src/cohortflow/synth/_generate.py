"""Writing a synthetic CDM: the output directory, chunks of persons, the vocabulary,
``oracle.json`` and ``synth.json``."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cohortflow.errors import CohortflowError
from cohortflow.study import Study
from cohortflow.synth import vocab as V  # noqa: N812
from cohortflow.synth._drift import Drift
from cohortflow.synth._location import location_table, with_locations
from cohortflow.synth._planted import auroc, planted_study
from cohortflow.synth._plants import ChunkFn
from cohortflow.synth._plants import plants as make_plants
from cohortflow.synth._population import simulate_chunk
from cohortflow.synth._warehouse import BLOCK_PERSONS, TAG, Block, simulate_block
from cohortflow.synth._warehouse_tables import TABLES as WAREHOUSE_TABLES
from cohortflow.synth._warehouse_tables import block_tables
from cohortflow.synth._warehouse_vocab import warehouse_vocabulary

CHUNK_PERSONS = 50_000
WAREHOUSE_CHUNK_PERSONS = 10_000  # ~2.5 M rows per part, about 1 GB at peak
GENERATOR_VERSION = 1
TABLES = tuple(V.SCHEMAS)
PRESETS = ("demo", "warehouse")
_WRITE = {"compression": "zstd", "compression_level": 3, "use_dictionary": True,
          "write_statistics": True, "version": "2.6", "row_group_size": 1 << 20}


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote.  ``oracle_auroc`` is NaN when the cohort has no
    outcomes or no non-outcomes (tiny sizes); ``oracle.json`` then holds null."""

    persons: int
    rows: dict[str, int]
    total_rows: int
    oracle_auroc: float
    n_eligible: int
    n_outcomes: int


def _prepare(out: Path) -> None:
    """Make ``out`` ready: new or empty, or a previous synth output (whose files we remove)."""
    if out.exists() and not out.is_dir():
        raise CohortflowError(f"{out}: exists and is not a directory; fix: choose a new --out")
    marker = out / "synth.json"
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads(marker.read_text()).get("generator") == "cohortflow.synth"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise CohortflowError(
                f"{out}: directory is not empty and is not a previous `cohortflow synth` output "
                "(no synth.json); fix: choose an empty or new --out directory")
        for name in (*WAREHOUSE_TABLES, "location"):  # only the table directories we write
            table = out / name
            if table.is_symlink() or (table.exists() and not table.is_dir()):
                raise CohortflowError(
                    f"{table}: not a table directory of a `cohortflow synth` output (a link or "
                    "a file), so it is left untouched; fix: move it away or choose a new --out")
            shutil.rmtree(table, ignore_errors=True)
        for name in ("concept.parquet", "concept_ancestor.parquet", "oracle.json"):
            (out / name).unlink(missing_ok=True)
        for name in ("linkage.csv", "truth.csv", "cohort.vcf.gz"):  # planted genotypes' files
            (out / "genotypes" / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (out / "genotypes").rmdir()
    out.mkdir(parents=True, exist_ok=True)
    _write_json(marker, {"generator": "cohortflow.synth", "complete": False})


def _write_parts(out: Path, chunk: int, tables: dict[str, pa.Table]) -> None:
    for name, table in tables.items():
        (out / name).mkdir(exist_ok=True)
        pq.write_table(table, out / name / f"part-{chunk:05d}.parquet", **_WRITE)


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def generate(persons: int, seed: int, out: Path, *, progress: bool = True,
             chunk_persons: int | None = None, preset: str = "demo",
             rare_disease_per_million: float = 0,
             drift: Drift | Mapping[str, Any] | None = None,
             genotypes: Mapping[str, Any] | None = None) -> SynthSummary:
    """Write a synthetic OMOP CDM of ``persons`` children to ``out``; see the module docs.

    ``chunk_persons`` sets how many persons each Parquet part holds (default
    :data:`CHUNK_PERSONS`, or :data:`WAREHOUSE_CHUNK_PERSONS` for the warehouse).  In the
    demo preset each chunk is also a random stream, so the data depend on it and
    ``synth.json`` records it; the warehouse preset draws per block of 1,000 persons, so its
    rows do not depend on it (only how they are split into parts).

    ``rare_disease_per_million`` and ``drift`` plant a rare disease and a change after a
    date (:mod:`._rare`, :mod:`._drift`), ``genotypes`` a VCF and a gene x drug interaction
    (:mod:`._genotypes`; all off by default, and then nothing changes).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     s = generate(50, 1, Path(tmp) / "cdm", progress=False)
    >>> s.persons, s.rows["person"], s.total_rows == sum(s.rows.values())
    (50, 50, True)
    """
    if isinstance(persons, bool) or not isinstance(persons, int | np.integer) or persons < 1:
        raise CohortflowError(f"persons must be a positive integer, got {persons!r}; "
                              "fix: --persons 1000")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise CohortflowError(f"seed must be a non-negative integer, got {seed!r}; fix: --seed 7")
    if preset not in PRESETS:
        raise CohortflowError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}; "
                              "fix: --preset warehouse")
    if chunk_persons is None:
        chunk_persons = CHUNK_PERSONS if preset == "demo" else WAREHOUSE_CHUNK_PERSONS
    if isinstance(chunk_persons, bool) or not isinstance(chunk_persons, int) or chunk_persons < 1:
        raise CohortflowError(f"chunk_persons must be a positive integer, got {chunk_persons!r}; "
                              f"fix: leave it at {CHUNK_PERSONS}")
    persons, seed = int(persons), int(seed)
    plants = make_plants(seed, preset, rare_disease_per_million, drift, genotypes)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    out = Path(out)
    _prepare(out)
    tables_written = TABLES if preset == "demo" else WAREHOUSE_TABLES
    ids = dict.fromkeys(tables_written, 0)
    rows = dict.fromkeys(tables_written, 0)
    chunk_of: ChunkFn = _demo_chunk if preset == "demo" else _WarehouseChunks(seed).chunk
    if plants is not None:
        chunk_of = plants.around(chunk_of)
    risks, labels = [], []
    n_chunks = -(-persons // chunk_persons)
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    # One writer thread: chunk i is written (pyarrow releases the GIL) while chunk i+1 is
    # generated, so at most two chunks are in memory.
    with Progress(*columns, disable=not progress) as bar, ThreadPoolExecutor(1) as writer:
        task = bar.add_task(f"synth {persons:,} persons", total=n_chunks)
        pending: Future[None] | None = None
        for ci in range(n_chunks):
            first = ci * chunk_persons
            tables, risk, label = chunk_of(seed, ci, first, min(chunk_persons, persons - first),
                                           ids)
            tables["person"] = with_locations(tables["person"], seed)  # a stream of its own
            for name, table in tables.items():
                rows[name] += table.num_rows
            risks.append(risk)
            labels.append(label)
            if pending is not None:
                pending.result()
                bar.advance(task)
            pending = writer.submit(_write_parts, out, ci, tables)
            del tables
        if pending is not None:
            pending.result()
            bar.advance(task)
    if preset == "demo":
        pq.write_table(V.concept_table(), out / "concept.parquet", **_WRITE)
        pq.write_table(V.ancestor_table(), out / "concept_ancestor.parquet", **_WRITE)
    else:
        vocabulary = warehouse_vocabulary()
        pq.write_table(vocabulary.concept, out / "concept.parquet", **_WRITE)
        pq.write_table(vocabulary.ancestor, out / "concept_ancestor.parquet", **_WRITE)
    locations = location_table(seed)
    _write_parts(out, 0, {"location": locations})
    rows["location"] = locations.num_rows
    if plants is not None:
        plants.add_to_vocabulary(out, _WRITE)
        plants.write_files(out, persons)
    extra = {} if preset == "demo" else {"preset": preset}
    planted = {} if plants is None else plants.oracle(persons)
    settings = {} if plants is None else plants.settings()
    risk, label = np.concatenate(risks), np.concatenate(labels)
    score = auroc(risk, label)
    summary = SynthSummary(persons=persons, rows=rows, total_rows=sum(rows.values()),
                           oracle_auroc=round(score, 6),
                           n_eligible=int(label.size), n_outcomes=int(label.sum()))
    _write_json(out / "oracle.json", {
        "oracle_auroc": None if np.isnan(score) else summary.oracle_auroc,
        "n_eligible": summary.n_eligible, "n_outcomes": summary.n_outcomes,
        "persons": persons, "seed": seed, "generator": "cohortflow.synth",
        "generator_version": GENERATOR_VERSION, **extra,
        "planted_study": planted_study(), **planted})
    _write_json(out / "synth.json", {
        "generator": "cohortflow.synth", "generator_version": GENERATOR_VERSION,
        "complete": True, "persons": persons, "seed": seed, **extra, **settings,
        "chunk_persons": chunk_persons, "rows": rows, "total_rows": summary.total_rows})
    return summary


def _demo_chunk(seed: int, ci: int, first: int, n: int, ids: dict[str, int]
                ) -> tuple[dict[str, pa.Table], np.ndarray, np.ndarray]:
    return simulate_chunk(np.random.default_rng([seed, ci]), first + 1, n, ids)


class _WarehouseChunks:
    """Warehouse chunks from blocks of :data:`BLOCK_PERSONS` persons; a block that straddles
    two chunks is kept from the first for the second."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.last: tuple[int, Block] | None = None

    def block(self, b: int) -> Block:
        if self.last is None or self.last[0] != b:
            self.last = (b, simulate_block(np.random.default_rng([self.seed, TAG, b]),
                                           BLOCK_PERSONS))
        return self.last[1]

    def chunk(self, seed: int, ci: int, first: int, n: int, ids: dict[str, int]
              ) -> tuple[dict[str, pa.Table], np.ndarray, np.ndarray]:
        del seed, ci  # the blocks carry the streams
        parts: dict[str, list[pa.Table]] = {name: [] for name in WAREHOUSE_TABLES}
        risks, labels = [], []
        for b in range(first // BLOCK_PERSONS, -(-(first + n) // BLOCK_PERSONS)):
            lo = max(first, b * BLOCK_PERSONS) - b * BLOCK_PERSONS
            hi = min(first + n, (b + 1) * BLOCK_PERSONS) - b * BLOCK_PERSONS
            piece = self.block(b).slice(lo, hi)
            for name, table in block_tables(piece, b * BLOCK_PERSONS + lo + 1, ids).items():
                parts[name].append(table)
            risks.append(piece.risk)
            labels.append(piece.label)
        tables = {name: pa.concat_tables(ts) for name, ts in parts.items()}
        return tables, np.concatenate(risks), np.concatenate(labels)


def synthesize(study: Study, out: Path) -> None:
    """The synth step: the synthetic OMOP CDM of a ``source.synth`` study, into ``out``."""
    assert study.source.synth is not None, "only a source.synth study has a synthetic CDM"
    spec = study.source.synth
    generate(spec.persons, spec.seed, Path(out), progress=False, preset=spec.preset,
             rare_disease_per_million=spec.rare_disease_per_million,
             drift=None if spec.drift is None else spec.drift.model_dump(),
             genotypes=None if spec.genotypes is None else spec.genotypes.model_dump())
