"""The planted truths a synth run can add, all off by default: the rare disease
(:mod:`._rare`), drift (:mod:`._drift`) and genotypes with a gene x drug interaction
(:mod:`._genotypes`).  :class:`Plants` wraps the generator's chunk function and extends the
vocabulary, ``oracle.json`` and ``synth.json`` (and writes the genotype files); with all off
:func:`plants` gives ``None`` and the generator runs exactly as without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cohortflow.errors import CohortflowError
from cohortflow.synth import vocab as V  # noqa: N812
from cohortflow.synth._drift import Drift, DriftPlant
from cohortflow.synth._genotypes import ANCESTORS as GENOTYPE_ANCESTORS
from cohortflow.synth._genotypes import CONCEPTS as GENOTYPE_CONCEPTS
from cohortflow.synth._genotypes import GenotypePlant, Genotypes
from cohortflow.synth._plant_rows import with_ancestors, with_concepts
from cohortflow.synth._population import simulate_chunk
from cohortflow.synth._rare import ANCESTORS, CONCEPTS, RarePlant

ConceptRow = tuple[int, str, str, str, str, str | None, str]
ChunkFn = Callable[[int, int, int, int, dict[str, int]],
                   tuple[dict[str, pa.Table], np.ndarray, np.ndarray]]


class Plants:
    """The plants of one run: call :meth:`around` on the chunk function, then
    :meth:`add_to_vocabulary`, :meth:`write_files`, :meth:`oracle` and :meth:`settings` at
    the end."""

    def __init__(self, seed: int, preset: str, rare: float, drift: Drift | None,
                 concept: pa.Table, ancestor: pa.Table,
                 genotypes: Genotypes | None = None) -> None:
        # concept, ancestor: the demo vocabulary, where drift finds its codes (demo only)
        self.rare = RarePlant(seed, rare, preset) if rare > 0 else None
        self.drift = None if drift is None else DriftPlant(seed, drift, concept, ancestor)
        self.genotypes = None if genotypes is None else GenotypePlant(seed, genotypes)

    def around(self, chunk_of: ChunkFn) -> ChunkFn:
        """``chunk_of`` with the plants applied to each chunk it makes."""

        def chunk(seed: int, ci: int, first: int, n: int, ids: dict[str, int]
                  ) -> tuple[dict[str, pa.Table], np.ndarray, np.ndarray]:
            keep: dict[str, np.ndarray] | None = None
            if self.drift is not None and self.drift.drift.outcome_rate_factor is not None:
                keep = {}  # the demo chunk, with the planted outcome's arrays kept
                tables, risk, label = simulate_chunk(np.random.default_rng([seed, ci]),
                                                     first + 1, n, ids, keep=keep)
            else:
                tables, risk, label = chunk_of(seed, ci, first, n, ids)
            if self.drift is not None:
                tables, risk, label = self.drift.chunk(ci, tables, ids, keep, risk, label)
            if self.rare is not None:
                tables = self.rare.chunk(tables, ids)
            if self.genotypes is not None:
                tables = self.genotypes.chunk(tables, ids)
            return tables, risk, label

        return chunk

    def vocabulary(self, concept: pa.Table, ancestor: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The vocabulary with the plants' concepts (each only when its plant is on)."""
        rows: list[ConceptRow] = list(CONCEPTS) if self.rare is not None else []
        up = list(ANCESTORS) if self.rare is not None else []
        if self.drift is not None:
            rows += self.drift.concepts(concept)
            up += self.drift.ancestors(ancestor)
        if self.genotypes is not None:
            rows += GENOTYPE_CONCEPTS
            up += GENOTYPE_ANCESTORS
        return with_concepts(concept, rows), with_ancestors(ancestor, up)

    def add_to_vocabulary(self, out: Path, options: Mapping[str, Any]) -> None:
        """Rewrite ``out``'s ``concept.parquet`` and ``concept_ancestor.parquet`` (as the
        generator wrote them, with its write ``options``) with the plants' concepts."""
        concept, ancestor = self.vocabulary(pq.read_table(out / "concept.parquet"),
                                            pq.read_table(out / "concept_ancestor.parquet"))
        pq.write_table(concept, out / "concept.parquet", **options)
        pq.write_table(ancestor, out / "concept_ancestor.parquet", **options)

    def write_files(self, out: Path, persons: int) -> None:
        """The plants' own files under ``out`` (the genotypes, when on)."""
        if self.genotypes is not None:
            self.genotypes.write(out, persons)

    def settings(self) -> dict[str, object]:
        """The plants that are on, for ``synth.json``."""
        out: dict[str, object] = {}
        if self.rare is not None:
            out["rare_disease_per_million"] = self.rare.per_million
        if self.drift is not None:
            out["drift"] = self.drift.drift.settings()
        if self.genotypes is not None:
            out["genotypes"] = self.genotypes.options.settings()
        return out

    def oracle(self, persons: int) -> dict[str, object]:
        """What was planted and its measured effect, for ``oracle.json``."""
        out: dict[str, object] = {}
        if self.rare is not None:
            out["rare_disease"] = self.rare.oracle(persons)
        if self.drift is not None:
            out["drift"] = self.drift.oracle()
        if self.genotypes is not None:
            out["genotypes"] = self.genotypes.oracle()
        return out


def plants(seed: int, preset: str, rare_disease_per_million: float,
           drift: Drift | Mapping[str, Any] | None,
           genotypes: Genotypes | Mapping[str, Any] | None = None) -> Plants | None:
    """The run's :class:`Plants`, or ``None`` when none is on (checking the settings)."""
    rare = rare_disease_per_million
    if isinstance(rare, bool) or not isinstance(rare, int | float) or not 0 <= rare <= 1e6:
        raise CohortflowError(f"rare_disease_per_million must be a number in [0, 1000000], "
                              f"got {rare!r}; fix: --rare-disease-per-million 50")
    parsed = Drift.of(drift)
    if parsed is not None and preset != "demo":
        raise CohortflowError(f"drift is planted in the demo preset only, not {preset!r}; "
                              "fix: preset: demo, or leave drift out")
    typed = Genotypes.of(genotypes)
    if typed is not None and preset != "demo":
        raise CohortflowError(f"genotypes are planted in the demo preset only, not {preset!r}; "
                              "fix: preset: demo, or leave genotypes out")
    if rare == 0 and parsed is None and typed is None:
        return None
    return Plants(seed, preset, float(rare), parsed, V.concept_table(), V.ancestor_table(),
                  typed)
