"""The ingest step of a study: its source, an OMOP CDM or a MEDS dataset, into the event
store."""

from __future__ import annotations

import logging
from pathlib import Path

from cohortflow import meds
from cohortflow.omop._ingest import ingest
from cohortflow.omop._open import open_source
from cohortflow.privacy import suppress
from cohortflow.study import Study

log = logging.getLogger(__name__)


def ingest_study(study: Study, source_path: Path | None, out: Path) -> None:
    """Build the sharded event store ``out`` from the study's OMOP CDM, or copy the study's
    MEDS dataset into it re-sharded (:mod:`cohortflow.meds` says why a copy).

    ``source_path`` is None for a database source (``source.omop.url``), which has no file
    for Snakemake to track; its password comes from PGPASSWORD or ~/.pgpass.
    """
    if study.source.meds is not None:
        assert source_path is not None, "a MEDS source is a directory"
        meds.ingest(Path(source_path), Path(out), study.shards, dataset_name=study.name,
                    min_cell_count=study.min_cell_count)
        return
    fmt = schema = None
    location: str | Path | None = source_path
    if study.source.omop is not None:
        fmt, schema = study.source.omop.format, study.source.omop.schema_name
        if study.source.omop.url is not None:
            location = study.source.omop.url
    assert location is not None, "a file source needs its path"
    summary = ingest(open_source(location, fmt, schema), Path(out), study.shards,
                     dataset_name=study.name, min_cell_count=study.min_cell_count)
    log.info("ingested %s events into %d shards",
             suppress(summary["events"], study.min_cell_count), study.shards)
