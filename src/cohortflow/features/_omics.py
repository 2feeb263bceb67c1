"""Omics features (``features.omics``): each block's matrix (:func:`genomics.open_omics`)
joined to a shard's cohort rows through the block's linkage table
(:func:`genomics.omics_block`), as tidy cells.

The block's part of the feature axis is its selected features (``features``; default: every
feature of the store, in store order): ``OMICS//<name>//<feature>|all|value``, then
``OMICS//<name>//missing|all|present`` for rows whose person has no sample (their values
NaN).  Only the chunks holding the shard's persons' rows are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cohortflow.errors import StudySpecError
from cohortflow.features._aggregate import TIDY_SCHEMA
from cohortflow.study import OMICS_VALUE, STATIC_WINDOW, OmicsFeatures, Study, omics_code

MISSING = "missing"


def _selected(block: OmicsFeatures, store: Path) -> list[str]:
    """The block's features: its selection, or every feature of the store."""
    from cohortflow import genomics

    if block.features is not None:
        return list(block.features)
    features = genomics.open_omics(store, block.layer).features.tolist()
    if MISSING in features:
        raise StudySpecError(f"features.omics ({block.name}): {store}: a feature is named "
                             f"{MISSING!r}, the block's missing indicator; fix: list the "
                             "features to keep (features: [...]) without it")
    return [str(f) for f in features]


def omics_keys(study: Study) -> list[tuple[str, str, str]]:
    """The omics part of the feature axis, (code, window, aggregation), block after block."""
    keys: list[tuple[str, str, str]] = []
    for block in study.features.omics:
        store, _ = study.omics_paths(block.name)
        keys += [(omics_code(block.name, f), STATIC_WINDOW, OMICS_VALUE)
                 for f in _selected(block, store)]
        keys.append((omics_code(block.name, MISSING), STATIC_WINDOW, "present"))
    return keys


def omics_cells(study: Study, cohort: pl.LazyFrame) -> pl.DataFrame:
    """Tidy cells (``TIDY_SCHEMA``) of one shard's cohort rows (``subject_id``, in tensor
    order): each row's value of each selected feature where its person has a sample (a
    stored NaN stays absent, read back as NaN), and a 1 in the block's missing indicator
    where not."""
    from cohortflow import genomics

    if not study.features.omics:
        return pl.DataFrame(schema=TIDY_SCHEMA)
    persons = cohort.select("subject_id").collect()["subject_id"].to_numpy()
    frames = []
    for block in study.features.omics:
        store, link = study.omics_paths(block.name)
        matrix = genomics.open_omics(store, block.layer)
        got = genomics.omics_block(matrix, genomics.read_linkage(link), persons.tolist(),
                                   _selected(block, store), where=link)
        row, col = np.nonzero(~np.isnan(got.values))
        codes = np.array([omics_code(block.name, str(f)) for f in got.features.tolist()],
                         dtype=object)
        frames.append(pl.DataFrame({
            "row": row.astype(np.int64), "feature_code": codes[col].tolist(),
            "window": STATIC_WINDOW, "aggregation": OMICS_VALUE,
            "value": got.values[row, col]}))
        absent = np.flatnonzero(got.missing)
        frames.append(pl.DataFrame({
            "row": absent.astype(np.int64), "feature_code": omics_code(block.name, MISSING),
            "window": STATIC_WINDOW, "aggregation": "present", "value": 1.0}))
    cells = pl.concat([f.cast(TIDY_SCHEMA).select(list(TIDY_SCHEMA)) for f in frames])
    return cells.sort("feature_code", "row")
