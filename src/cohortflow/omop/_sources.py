"""OMOP CDM sources: small backends behind one interface.

Each streams a table as record batches with lower-cased column names, because real OMOP
exports often use upper case.  Missing, empty and placeholder tables (columns named
``column0, column1, ...``, as in Eunomia) yield nothing, with a warning.  A backend
overrides :meth:`OmopSource._tables` and :meth:`OmopSource._batches` (and ``location``
when it is not a file path): Parquet, CSV, DuckDB and PostgreSQL.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from cohortflow.errors import SourceError
from cohortflow.spec import PASSWORD_FIX, holds_password, redact

log = logging.getLogger(__name__)

BATCH_ROWS = 1_000_000
_PLACEHOLDER = re.compile(r"column\d+")
#: Numeric columns the ingest reads: text in them must parse as a number.
NUMERIC_COLUMNS = ("value_as_number", "days_supply")
_INT64_EXACT = 2**53  # the largest whole float64 that is still an exact integer


class OmopSource:
    """One OMOP CDM source.  Subclasses override :meth:`_tables` and :meth:`_batches`."""

    kind = "abstract"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._index = {name.lower(): name for name in self._tables()}

    @property
    def location(self) -> str:
        """Where the source is, safe to show (never holds a credential)."""
        return str(self.path)

    def tables(self) -> list[str]:
        """Lower-case names of the tables the source holds."""
        return sorted(self._index)

    def inputs(self) -> list[Path]:
        """The paths the source reads (its location, and where each linked table really
        lies), which no output may hold, replace or lie inside."""
        found = [self.path]
        if self.path.is_dir():
            for entry in sorted(self.path.iterdir()):
                if entry.is_symlink() and entry.exists():
                    found.append(entry.resolve())
        return found

    def close(self) -> None:
        """Release connections; reading after this is an error."""

    def __enter__(self) -> OmopSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tables(self) -> list[str]:
        raise NotImplementedError

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def where(self, table: str) -> str:
        """Human-readable location of a table, for error messages."""
        return f"{self.location} (table {table})"

    def has(self, table: str) -> bool:
        return table in self._index

    def batches(self, table: str, required: list[str]) -> Iterator[pl.DataFrame]:
        """Stream ``table`` as Polars frames with lower-case columns.

        Yields nothing (after a warning) for a missing, empty or placeholder table; raises
        :class:`SourceError` naming the table and column when a required column is absent.
        """
        if table not in self._index:
            log.warning("%s: table %s not found; skipped", self.location, table)
            return
        seen_rows = 0
        for batch in self._batches(self._index[table]):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            frame = frame.rename({c: c.lower() for c in frame.columns})
            if seen_rows == 0:
                if all(_PLACEHOLDER.fullmatch(c) for c in frame.columns):
                    log.warning("%s: placeholder table (columns %s...); skipped",
                                self.where(table), frame.columns[0])
                    return
                missing = [c for c in required if c not in frame.columns]
                if missing:
                    raise SourceError(
                        f"{self.where(table)}: required column(s) {', '.join(missing)} missing "
                        f"(found: {', '.join(frame.columns)}); fix: export the table with the "
                        "OMOP CDM v5.4 column names"
                    )
            frame = _integer_ids(frame, required, self.where(table), seen_rows)
            frame = _numbers(frame, self.where(table), seen_rows)
            seen_rows += frame.height
            if frame.height:
                yield frame
        if seen_rows == 0:
            log.warning("%s: empty table; skipped", self.where(table))

    def fingerprint(self, table: str) -> dict[str, int | str]:
        """Row count and SHA-256 of a table's content, as this source serves it.

        The base reads the table once as Arrow IPC (any backend); file backends override it
        with a hash of the files' bytes.  Run manifests record it per table.
        """
        rows, digest = 0, hashlib.sha256()
        for batch in self._batches(self._index[table]):
            rows += batch.num_rows
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            digest.update(sink.getvalue().to_pybytes())
        return {"rows": rows, "sha256": digest.hexdigest()}


def _integer_ids(frame: pl.DataFrame, required: list[str], where: str,
                 offset: int) -> pl.DataFrame:
    """Required id and year columns as integers: integral floats and digit strings are
    converted; anything else is refused, naming the column and the first bad row (never the
    value, which may identify a person).

    >>> _integer_ids(pl.DataFrame({"person_id": ["1", "2"]}), ["person_id"], "p", 0).dtypes
    [Int64]
    >>> _integer_ids(pl.DataFrame({"person_id": ["1", "P2"]}), ["person_id"], "p.csv", 0)
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: p.csv: column person_id: 1 value(s) are not integers ...
    """
    for column in required:
        if not (column.endswith("concept_id") or column == "person_id"
                or column.startswith(("year_", "min_levels"))):
            continue
        dtype = frame.schema[column]
        if dtype.is_integer() and (dtype != pl.UInt64 or not frame.height
                                   or (frame[column].max() or 0) < 2**63):  # type: ignore[operator]
            continue
        if dtype == pl.String or dtype.is_float() or dtype.is_integer():
            values = pl.col(column)
            exact = pl.lit(None, pl.Int64)
            if dtype == pl.String:
                values = values.str.strip_chars()
                exact = values.cast(pl.Int64, strict=False)  # digits within 64 bits, exactly
            converted = values.cast(pl.Float64, strict=False)
            whole = (converted.is_finite() & (converted == converted.floor())
                     & (converted.abs() <= _INT64_EXACT))
            ok = pl.coalesce(exact, pl.when(whole).then(converted.cast(pl.Int64)))
            checked = frame.select(ok.alias("v"), pl.col(column).is_null().alias("null"))
            bad = checked.with_row_index().filter(pl.col("v").is_null() & ~pl.col("null"))
            if bad.height == 0:
                frame = frame.with_columns(checked["v"].alias(column))
                continue
            raise SourceError(
                f"{where}: column {column}: {bad.height} value(s) are not integers of at "
                f"most 64 bits (first at data row {offset + int(bad['index'][0]) + 1}); fix: "
                f"export {column} as an integer column (OMOP CDM ids and years are 64-bit "
                "integers)"
            )
        raise SourceError(
            f"{where}: column {column} has type {dtype}, expected an integer; fix: export "
            f"{column} as an integer column (OMOP CDM ids and years are integers)"
        )
    return frame


def _numbers(frame: pl.DataFrame, where: str, offset: int) -> pl.DataFrame:
    """Numeric columns (:data:`NUMERIC_COLUMNS`) given as text, as numbers: an empty cell is
    no value; text that is not a number is refused, naming the column and the first bad row.

    >>> _numbers(pl.DataFrame({"value_as_number": [" 1.5", None]}), "m", 0).dtypes
    [Float64]
    >>> _numbers(pl.DataFrame({"value_as_number": ["1.5", "n/a"]}), "m.csv", 0)
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: m.csv: column value_as_number: 1 value(s) are not numbers ...
    """
    for column in NUMERIC_COLUMNS:
        if column not in frame.columns or frame.schema[column] != pl.String:
            continue
        text = pl.col(column).str.strip_chars()
        checked = frame.select(text.cast(pl.Float64, strict=False).alias("v"),
                               (text.is_null() | (text == "")).alias("empty"))
        bad = checked.with_row_index().filter(pl.col("v").is_null() & ~pl.col("empty"))
        if bad.height:
            raise SourceError(
                f"{where}: column {column}: {bad.height} value(s) are not numbers (first at "
                f"data row {offset + int(bad['index'][0]) + 1}); fix: write plain numbers such "
                f"as 12.5 in {column}, and leave the cell empty where there is no value")
        frame = frame.with_columns(checked["v"].alias(column))
    return frame


def _regular_tables(path: Path, suffixes: tuple[str, ...], dirs: bool) -> list[Path]:
    """Entries of ``path`` with one of ``suffixes`` (or, with ``dirs``, directories of such
    files); one that is not a regular file (a FIFO, a device, a dangling or looping link)
    is refused before it is opened, since reading it could block or fail half-way."""
    found = []
    for entry in sorted(path.iterdir()):
        if entry.suffix.lower() not in suffixes and not (dirs and entry.is_dir()):
            continue
        try:
            mode = entry.stat().st_mode
        except OSError as exc:
            raise SourceError(
                f"{entry}: table file cannot be opened ({exc.strerror}: a dangling or looping "
                "symbolic link?); fix: replace it with the table's file, or remove it"
            ) from None
        if stat.S_ISDIR(mode):
            if dirs and (entry.suffix.lower() in suffixes
                         or any(p.suffix.lower() in suffixes for p in entry.iterdir())):
                found.append(entry)
        elif stat.S_ISREG(mode):
            found.append(entry)
        else:
            raise SourceError(
                f"{entry}: table file is not a regular file (a FIFO, socket or device); "
                "fix: replace it with the table's exported file, or remove it")
    return found


def _unreadable(where: str, kind: str, exc: BaseException) -> SourceError:
    return SourceError(
        f"{where}: unreadable {kind} file ({_first_line(exc)}), truncated or not {kind}; fix: "
        "export the table again, and copy the whole file")


class ParquetSource(OmopSource):
    """A directory with ``<table>.parquet`` files or ``<table>/`` directories of parts."""

    kind = "parquet"

    def _tables(self) -> list[str]:
        return [p.name[: -len(p.suffix)] if p.suffix else p.name
                for p in _regular_tables(self.path, (".parquet",), dirs=True)]

    def where(self, table: str) -> str:
        name = self._index.get(table)
        if name is None:
            return super().where(table)
        file = self.path / f"{name}.parquet"
        return f"{file if file.exists() else self.path / name} (table {table})"

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        file = self.path / f"{table}.parquet"
        target = file if file.exists() else self.path / table
        if not file.exists():
            matches = [p for p in self.path.iterdir() if p.stem == table]
            target = matches[0]
        try:
            dataset = pads.dataset(target, format="parquet")
            yield from dataset.to_batches(batch_size=BATCH_ROWS)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(self.where(table.lower()), "Parquet", exc) from None

    def fingerprint(self, table: str) -> dict[str, int | str]:
        """Rows from the Parquet footers and a hash of the files' bytes: no data is decoded."""
        name = self._index[table]
        files = sorted((self.path / name).glob("*.parquet")) or [
            p for p in self.path.iterdir() if p.is_file() and p.stem == name]
        digest = hashlib.sha256()
        rows = 0
        for file in files:
            try:
                rows += pq.ParquetFile(file).metadata.num_rows
            except (pa.ArrowException, OSError) as exc:
                raise _unreadable(self.where(table), "Parquet", exc) from None
            with file.open("rb") as fh:
                for block in iter(functools.partial(fh.read, 1 << 20), b""):
                    digest.update(block)
        return {"rows": rows, "sha256": digest.hexdigest()}


class CsvSource(OmopSource):
    """A directory of ``<table>.csv`` files (any case, comma separated, header row)."""

    kind = "csv"

    def _tables(self) -> list[str]:
        return [p.stem for p in _regular_tables(self.path, (".csv",), dirs=False)]

    def _file(self, table: str) -> Path:
        return next(p for p in self.path.iterdir()
                    if p.stem == table and p.suffix.lower() == ".csv")

    def where(self, table: str) -> str:
        name = self._index.get(table)
        return f"{self._file(name)} (table {table})" if name else super().where(table)

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        path = self._file(table)
        where = self.where(table.lower())
        try:
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=64 << 20),
                convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
            )
            for batch in reader:
                _check_utf8(batch, where)
                yield batch
        except pa.ArrowInvalid as exc:
            raise SourceError(
                f"{where}: unreadable CSV ({_first_line(exc)}); fix: one header row, comma "
                "separated, UTF-8, one type per column (ISO dates, plain integers for ids)"
            ) from None


def _check_utf8(batch: pa.RecordBatch, where: str) -> None:
    """The CSV reader turns a column holding invalid UTF-8 into bytes: refuse it."""
    binary = [f.name for f in batch.schema if pa.types.is_binary(f.type)
              or pa.types.is_large_binary(f.type)]
    if binary:
        raise SourceError(
            f"{where}: column {binary[0].lower()} is not valid UTF-8 text; fix: re-encode the "
            f"file as UTF-8, e.g. iconv -f latin1 -t utf-8 in.csv > out.csv"
        )


class DuckDBSource(OmopSource):
    """Tables of a DuckDB database file, optionally in one schema."""

    kind = "duckdb"

    def __init__(self, path: Path, schema: str | None = None) -> None:
        if not Path(path).is_file():
            raise SourceError(f"{path}: DuckDB file not found; fix: give the .duckdb file path")
        self.schema = schema
        try:
            self.con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            raise SourceError(
                f"{path}: not a readable DuckDB database ({_first_line(exc)}); fix: give a "
                ".duckdb file written by DuckDB, or a directory of Parquet or CSV tables"
            ) from None
        super().__init__(path)

    def _tables(self) -> list[str]:
        query = "SELECT table_schema, table_name FROM information_schema.tables"
        rows = self.con.execute(query).fetchall()
        if self.schema is not None:
            rows = [r for r in rows if r[0].lower() == self.schema.lower()]
        self._schema_of = {name: schema for schema, name in rows}
        return [name for _, name in rows]

    def _batches(self, table: str) -> Iterator[pa.RecordBatch]:
        schema = self._schema_of[table]
        relation = self.con.sql(f'SELECT * FROM "{schema}"."{table}"')
        yield from relation.to_arrow_reader(BATCH_ROWS)


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
                f"{self.url}: cannot connect to PostgreSQL ({_first_line(exc)}); fix: check "
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

    def _query(self, sql: str, *params: object) -> list[tuple]:
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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def check_postgres_url(url: str) -> str:
    """Return a PostgreSQL URL unchanged, or refuse one that holds a password.

    >>> check_postgres_url("postgresql://reader@db.example.org:5432/cdm")
    'postgresql://reader@db.example.org:5432/cdm'
    >>> check_postgres_url("postgresql://reader:s3cret@db/cdm")
    Traceback (most recent call last):
    ...
    cohortflow.errors.SourceError: postgresql://***@db/cdm: the URL holds a password; fix: ...

    The password is looked for first, in every form libpq reads (see
    :func:`cohortflow.spec._source.holds_password`), so that no message, not even the one for
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


def open_source(path: str | Path, fmt: str | None = None,
                schema: str | None = None) -> OmopSource:
    """Open an OMOP CDM source, inferring its format from the location when ``fmt`` is None.

    A ``postgresql://`` URL opens a :class:`PostgresSource`; a file, a DuckDB database; a
    directory, its Parquet or CSV tables.
    """
    if is_postgres_url(path) or fmt == "postgresql":
        return PostgresSource(str(path), schema)
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: OMOP source not found; fix: give a .duckdb file, a "
                          "directory of Parquet or CSV tables, or a postgresql:// URL")
    if not path.is_file() and not path.is_dir():
        raise SourceError(f"{path}: OMOP source is neither a file nor a directory (a FIFO or "
                          "device?); fix: give a .duckdb file or a directory of tables")
    if fmt is None:
        if path.is_file():
            fmt = "duckdb"
        elif any(path.glob("*.csv")) or any(path.glob("*.CSV")):
            fmt = "csv"
        else:
            fmt = "parquet"
    if fmt == "duckdb":
        return DuckDBSource(path, schema)
    if fmt == "csv":
        return CsvSource(path)
    if fmt == "parquet":
        return ParquetSource(path)
    raise SourceError(f"{path}: unknown source format {fmt!r}; fix: one of duckdb, parquet, "
                      "csv, postgresql")
