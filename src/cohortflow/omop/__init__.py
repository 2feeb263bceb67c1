"""OMOP CDM sources and the OMOP → event-store ingest.

Sources are small backends behind one interface (:class:`OmopSource`): a DuckDB file, a
directory of Parquet tables (``person.parquet`` or ``person/*.parquet``) or of CSV files, a
PostgreSQL database (``postgresql://`` URL; the password from ``PGPASSWORD`` or ``~/.pgpass``).
Each streams a table as record batches with lower-cased column names, because real OMOP
exports often use upper case.  :func:`ingest` makes one pass over the source and writes the
event store described in :mod:`cohortflow.events`, with memory bounded by one batch while
reading and by one shard while sorting.  :func:`ingest_study` is the workflow's ingest
step: a study's source, OMOP CDM or MEDS dataset (:mod:`cohortflow.meds`), into its store.
"""

from cohortflow.omop._checks import Findings, Lifespan
from cohortflow.omop._codes import parent_links
from cohortflow.omop._csv import CsvSource
from cohortflow.omop._duckdb import DuckDBSource
from cohortflow.omop._ingest import CLINICAL_TABLES, EventTable, ingest
from cohortflow.omop._open import open_source
from cohortflow.omop._parquet import ParquetSource
from cohortflow.omop._postgres import PostgresSource, is_postgres_url
from cohortflow.omop._source_base import OmopSource
from cohortflow.omop._study import ingest_study

__all__ = [
    "CLINICAL_TABLES",
    "CsvSource",
    "DuckDBSource",
    "EventTable",
    "Findings",
    "Lifespan",
    "OmopSource",
    "ParquetSource",
    "PostgresSource",
    "ingest",
    "ingest_study",
    "is_postgres_url",
    "open_source",
    "parent_links",
]
