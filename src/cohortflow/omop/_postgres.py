"""PostgreSQL backend: the tables of a database, read through ADBC; its URL checks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from cohortflow.errors import SourceError
from cohortflow.omop._source_base import OmopSource, first_line
from cohortflow.study import PASSWORD_FIX, holds_password, redact


class PostgresSource(OmopSource):
    """Tables of a PostgreSQL database, optionally in one schema (default: the search path).

    Reads go through ADBC, which streams binary ``COPY`` output as Arrow batches, so no
    table is ever held whole.  ``NUMERIC`` columns are read as ``double precision``, the
    type the Parquet export of the same CDM holds.  The URL must not carry a password:
    libpq takes it from ``PGPASSWORD`` or the pgpass file (``~/.pgpass``, ``PGPASSFILE``).
    """

    kind = "postgresql"
    #: Arrow batch size the driver aims for; bounds reader memory per table.
    batch_bytes = 16 << 20

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = check_postgres_url(url)
        self.schema = schema
        try:
            import adbc_driver_postgresql.dbapi as adbc
        except ImportError:
            raise SourceError(
                f"{self.url}: reading PostgreSQL needs the adbc-driver-postgresql package; "
                "fix: pip install adbc-driver-postgresql"
            ) from None
        try:
            self.con = adbc.connect(self.url, autocommit=True)
        except adbc.Error as exc:
            raise SourceError(
                f"{self.url}: cannot connect to PostgreSQL ({first_line(exc)}); fix: check "
                "host, port, database and user, and give the password in PGPASSWORD or "
                "~/.pgpass, never in the URL or the study file"
            ) from None
        self._index = {name.lower(): name for name in self._tables()}
        if not self._index:
            where = f"schema {self.schema!r}" if self.schema else "the default schema"
            raise SourceError(
                f"{self.location}: {where} holds no tables; fix: give the schema of the CDM "
                "tables, e.g. source: {omop: {url: ..., schema: cdm}} or --schema cdm"
            )

    @property
    def location(self) -> str:
        return self.url + (f" schema {self.schema}" if self.schema else "")

    def inputs(self) -> list[Path]:
        return []  # a database: no path an output could overlap

    def close(self) -> None:
        self.con.close()

    def _query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with self.con.cursor() as cur:
            cur.execute(sql, params or None)
            return list(cur.fetchall())

    def _tables(self) -> list[str]:
        rows = self._query(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = coalesce($1, current_schema())", self.schema)
        self._schema_of = {name: schema for schema, name in rows}
        return [name for _, name in rows]

    def fingerprint(self, table: str) -> dict[str, int | str]:
        """Row count and a content hash computed by the server, so no row crosses the wire.

        The hash is the SHA-256 of the sum of the 64-bit prefixes of each row's MD5: a
        streaming aggregate in constant server memory, independent of row order.
        """
        name = self._index[table]
        rows, total = self._query(
            "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint"
            f'::numeric), 0)::text FROM "{self._schema_of[name]}"."{name}" AS t')[0]
        return {"rows": int(rows),
                "sha256": hashlib.sha256(f"{rows}:{total}".encode()).hexdigest()}

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        schema = self._schema_of[table]
        columns = self._query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            schema, table)
        select = ", ".join(
            f'"{name}"::double precision AS "{name}"' if kind == "numeric" else f'"{name}"'
            for name, kind in columns)
        with self.con.cursor() as cur:
            cur.adbc_statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": str(self.batch_bytes)})
            cur.execute(f'SELECT {select} FROM "{schema}"."{table}"')
            for batch in cur.fetch_record_batch():
                yield _plain(batch)


def _plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Drop the driver's field metadata, so batches compare equal to other sources'."""
    return pa.RecordBatch.from_arrays(batch.columns,
                                      schema=pa.schema([f.remove_metadata() for f in batch.schema]))


def check_postgres_url(url: str) -> str:
    """Return a PostgreSQL URL unchanged, or refuse one that holds a password.

    >>> check_postgres_url("postgresql://reader@db.example.org:5432/cdm")
    'postgresql://reader@db.example.org:5432/cdm'
    >>> check_postgres_url("postgresql://reader:s3cret@db/cdm")
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: postgresql://***@db/cdm: the URL holds a password; fix: ...

    The password is looked for first, in every form libpq reads (see
    :func:`cohortflow.study._source.holds_password`), so that no message, not even the one for
    a string that is not a URL, can show it.
    """
    if holds_password(url):
        raise SourceError(f"{redact(url)}: the URL holds a password; fix: {PASSWORD_FIX}")
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise SourceError(f"{url}: not a PostgreSQL URL; fix: postgresql://user@host:5432/dbname")
    return url


def is_postgres_url(path: str | Path) -> bool:
    """Whether a source location is a PostgreSQL URL rather than a file path.

    >>> is_postgres_url("postgresql://me@localhost/cdm"), is_postgres_url("omop/")
    (True, False)
    """
    return isinstance(path, str) and path.split("://", 1)[0] in ("postgresql", "postgres")
