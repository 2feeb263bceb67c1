"""One conformance suite for every OMOP source backend: Parquet, CSV, DuckDB, PostgreSQL.

Each backend is a ``make_source`` factory that stores a dict of tables its own way and
opens it; every test runs against each.  The PostgreSQL backend uses a real server started
by ``tests/harness/postgres.py`` (tests marked ``postgres``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cohortflow import manifest, omop
from cohortflow.errors import SourceError
from cohortflow.omop import OmopSource
from tests.harness import postgres as postgres_harness
from tests.harness.postgres import PostgresServer
from tests.test_omop_ingest import TABLES

MakeSource = Callable[[dict[str, pl.DataFrame]], OmopSource]
postgres_server = postgres_harness.postgres_server  # the session fixture, shared
BACKENDS = ["parquet", "csv", "duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _write_parquet(tables: dict[str, pl.DataFrame], root: Path) -> Path:
    root.mkdir(parents=True)
    for name, frame in tables.items():
        frame.write_parquet(root / f"{name}.parquet")
    return root


@pytest.fixture(params=BACKENDS)
def make_source(request: pytest.FixtureRequest, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> MakeSource:
    kind = request.param
    opened: list[OmopSource] = []

    def make(tables: dict[str, pl.DataFrame]) -> OmopSource:
        root = tmp_path / f"cdm{len(opened)}"
        if kind == "parquet":
            source: OmopSource = omop.ParquetSource(_write_parquet(tables, root))
        elif kind == "csv":
            root.mkdir()
            for name, frame in tables.items():  # upper case, as many exports are
                frame.rename(str.upper).write_csv(root / f"{name.upper()}.csv")
            source = omop.CsvSource(root)
        elif kind == "duckdb":
            con = duckdb.connect(str(root.with_suffix(".duckdb")))
            con.execute("CREATE SCHEMA cdm")
            for name, frame in tables.items():
                con.register("t", frame.to_arrow())
                con.execute(f"CREATE TABLE cdm.{name} AS SELECT * FROM t")
                con.unregister("t")
            con.close()
            source = omop.DuckDBSource(root.with_suffix(".duckdb"), schema="cdm")
        else:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            schema = "t_" + secrets.token_hex(4)
            server.load_omop(_write_parquet(tables, root), schema=schema)
            monkeypatch.setenv("PGPASSWORD", server.password)
            source = omop.open_source(server.url, schema=schema)
        opened.append(source)
        return source

    return make


def _event_digests(store: Path) -> dict[str, str]:
    """Digests of the event store's files, less the record of the source it came from."""
    digests = manifest.tree_digests(store)
    assert "metadata/source_fingerprint.json" in digests
    return {k: v for k, v in digests.items() if k != "metadata/source_fingerprint.json"}


def _fingerprint_rows(store: Path) -> dict[str, int]:
    record = json.loads((store / "metadata" / "source_fingerprint.json").read_text())
    return {table: entry["rows"] for table, entry in record.items()}


def _normal(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Backends differ in integer and float widths; compare values, not widths."""
    frame = pl.concat(frames)
    return frame.with_columns(
        pl.col(pl.Int32, pl.Int16).cast(pl.Int64), pl.col(pl.Float32).cast(pl.Float64))


def test_lists_its_tables_in_lower_case(make_source: MakeSource) -> None:
    source = make_source(TABLES)
    assert source.tables() == sorted(TABLES)
    assert source.has("person") and not source.has("drug_exposure")


def test_streams_every_row_with_the_same_values(make_source: MakeSource) -> None:
    source = make_source(TABLES)
    for name in ("person", "condition_occurrence", "measurement", "concept"):
        got = _normal(list(source.batches(name, ["person_id"] if name != "concept" else [])))
        want = _normal([TABLES[name]])
        assert got.columns == want.columns
        assert got.sort(got.columns[0]).equals(want.sort(want.columns[0])), name


def test_missing_required_column_names_table_column_and_fix(make_source: MakeSource) -> None:
    source = make_source({"person": TABLES["person"].drop("year_of_birth")})
    with pytest.raises(SourceError, match=r"table person\): required column\(s\) "
                                          r"year_of_birth missing.*fix:"):
        list(source.batches("person", ["person_id", "year_of_birth"]))


def test_missing_and_empty_tables_yield_nothing_with_a_warning(
    make_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    source = make_source({"person": TABLES["person"], "death": TABLES["death"]})
    with caplog.at_level(logging.WARNING):
        assert list(source.batches("drug_exposure", ["person_id"])) == []
        assert list(source.batches("death", ["person_id"])) == []
    assert "table drug_exposure not found; skipped" in caplog.text
    assert "(table death): empty table; skipped" in caplog.text


def test_where_names_the_location_and_table(make_source: MakeSource) -> None:
    source = make_source(TABLES)
    assert source.where("person").startswith(source.location)
    assert source.where("person").endswith("(table person)")


def test_ingest_gives_the_parquet_store_byte_for_byte(make_source: MakeSource,
                                                      tmp_path: Path) -> None:
    reference = omop.ingest(omop.ParquetSource(_write_parquet(TABLES, tmp_path / "ref")),
                            tmp_path / "ref_events", shards=2)
    summary = omop.ingest(make_source(TABLES), tmp_path / "events", shards=2)
    assert summary == reference
    assert _event_digests(tmp_path / "events") == _event_digests(tmp_path / "ref_events")
    assert _fingerprint_rows(tmp_path / "events") == {n: t.height for n, t in TABLES.items()}


# --- PostgreSQL only ------------------------------------------------------------------------

@pytest.mark.postgres
def test_postgres_ingest_of_synthetic_omop_is_byte_identical_to_parquet(
    postgres_server: PostgresServer, synth_omop: Path, event_store: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = postgres_server.load_omop(synth_omop, schema="synth")
    assert counts["person"] == 2500
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    with omop.open_source(postgres_server.url, schema="synth") as source:
        omop.ingest(source, tmp_path / "events", shards=3)
    ours = _event_digests(tmp_path / "events")
    assert len(ours) == 3 + 4  # three shards, codes, splits, dataset.json, quality.json
    assert ours == _event_digests(event_store)
    assert _fingerprint_rows(tmp_path / "events") == _fingerprint_rows(event_store) == counts


@pytest.mark.postgres
def test_postgres_reads_stream_in_bounded_batches(
    postgres_server: PostgresServer, synth_omop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres_server.load_omop(synth_omop, schema="stream")
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    with omop.open_source(postgres_server.url, schema="stream") as source:
        assert isinstance(source, omop.PostgresSource)
        source.batch_bytes = 256 << 10
        sizes = [(f.height, f.estimated_size()) for f in source.batches("measurement", [])]
    assert sum(rows for rows, _ in sizes) > 10_000
    assert len(sizes) > 5                            # streamed, not one whole table
    assert max(size for _, size in sizes) < 4 << 20  # each batch near the hint


@pytest.mark.postgres
def test_postgres_refuses_a_password_in_the_url_and_needs_one_from_the_environment(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with_password = postgres_server.url.replace(
        f"{postgres_server.user}@", f"{postgres_server.user}:{postgres_server.password}@")
    with pytest.raises(SourceError, match="holds a password") as refused:
        omop.open_source(with_password)
    assert postgres_server.password not in str(refused.value)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(SourceError, match=r"cannot connect.*PGPASSWORD or ~/\.pgpass"):
        omop.open_source(postgres_server.url)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{postgres_server.host}:{postgres_server.port}:*:"
                      f"{postgres_server.user}:{postgres_server.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    with pytest.raises(SourceError, match="the default schema holds no tables"):
        omop.open_source(postgres_server.url)  # connected through pgpass; public is empty


@pytest.mark.postgres
def test_postgres_fingerprint_is_computed_by_the_server_and_follows_the_content(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    postgres_server.load_omop(_write_parquet(TABLES, tmp_path / "cdm"), schema="fp")
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    with omop.open_source(postgres_server.url, schema="fp") as source:
        before = source.fingerprint("person")
        assert before == source.fingerprint("person")  # deterministic
        postgres_server.psql("UPDATE fp.person SET year_of_birth = 2011 WHERE person_id = 2")
        after = source.fingerprint("person")
    assert before["rows"] == after["rows"] == 3
    assert before["sha256"] != after["sha256"]


@pytest.mark.postgres
def test_the_database_password_appears_in_no_output(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    postgres_server.load_omop(_write_parquet(TABLES, tmp_path / "cdm"), schema="secret")
    out = tmp_path / "results" / "events"
    done = subprocess.run(
        [sys.executable, "-m", "cohortflow", "ingest", postgres_server.url, "--schema", "secret",
         "--out", str(out), "--shards", "2"],
        capture_output=True, text=True, check=False,
        env={**os.environ, **postgres_server.env})
    assert done.returncode == 0, done.stderr
    assert re.search(r"wrote \S+ events of <11 subjects", " ".join(done.stderr.split()))
    files = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert len(files) >= 6
    secret = postgres_server.password.encode()
    leaks = [str(p) for p in files if secret in p.read_bytes()]
    assert leaks == []
    assert postgres_server.password not in done.stdout + done.stderr
