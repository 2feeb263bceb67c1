"""A real, throwaway PostgreSQL server for the test suite, loaded with synthetic OMOP CDM.

What it starts
--------------
``initdb`` into a fresh temporary directory, then ``postgres`` through ``pg_ctl``,
listening on ``127.0.0.1`` (a free port) and on a private socket directory; nothing outside
that directory is touched.  Authentication is ``scram-sha-256`` with a random password for
the superuser ``cohortflow``, so clients must bring the password the way users do: in
``PGPASSWORD`` (:attr:`PostgresServer.env`) or a pgpass file
(:meth:`PostgresServer.pgpass`); :meth:`PostgresServer.auth_methods` shows that no ``trust``
rule lets a client in without it.  As root the server runs as
the ``postgres`` system user (PostgreSQL refuses to run as root); otherwise as the
current user.  The binaries come from Debian's ``postgresql`` package
(``/usr/lib/postgresql/<version>/bin``) or from ``PATH``.

Use it
------
::

    from tests.harness.postgres import postgres_server  # noqa: F401  (pytest fixture)

    @pytest.mark.postgres
    def test_x(postgres_server, monkeypatch):
        postgres_server.load_omop(parquet_dir, schema="cdm")
        monkeypatch.setenv("PGPASSWORD", postgres_server.password)
        source = open_source(postgres_server.url, schema="cdm")

The fixture is session scoped; several test modules may import it and still share one
server.  It skips when the PostgreSQL binaries are missing, except under ``CI=true``, where
a PostgreSQL test must never silently skip, so it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pytest

SUPERUSER = "cohortflow"
DATABASE = "omop"
_INT32_MAX = 2**31 - 1


def find_bindir() -> Path | None:
    """Directory holding ``initdb``, ``pg_ctl``, ``postgres`` and ``psql``, newest first."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for bindir in reversed(debian):
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl") and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """One running PostgreSQL server in ``root`` (see the module docstring)."""

    root: Path
    bindir: Path
    port: int = field(default_factory=_free_port)
    password: str = field(default_factory=lambda: "pw-" + secrets.token_hex(12))
    user: str = SUPERUSER
    dbname: str = DATABASE
    host: str = "127.0.0.1"
    run_as: str | None = None

    @property
    def url(self) -> str:
        """Connection URL without the password (cohortflow refuses URLs that hold one)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client: the password the way users give it."""
        return {"PGPASSWORD": self.password}

    def pgpass(self, path: Path) -> dict[str, str]:
        """Write a pgpass file for this server at ``path`` (mode 0600, as libpq requires)
        and return the environment that points a client at it instead of PGPASSWORD."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{self.host}:{self.port}:*:{self.user}:{self.password}\n")
        path.chmod(0o600)
        return {"PGPASSFILE": str(path)}

    def auth_methods(self) -> set[str]:
        """The authentication methods the server's pg_hba.conf allows (``trust`` would
        make a password test prove nothing)."""
        rows = self.psql("SELECT DISTINCT auth_method FROM pg_hba_file_rules "
                         "WHERE error IS NULL", dbname="postgres")
        return set(rows.split())

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), user=self.run_as, check=check, text=True,
                              capture_output=True, cwd=self.root)

    def start(self) -> PostgresServer:
        data, sockets, pwfile = self.root / "data", self.root / "socket", self.root / "pw"
        sockets.mkdir(parents=True, exist_ok=True)
        pwfile.write_text(self.password + "\n")
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.root, sockets, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", self.user,
                  f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        options = (f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        done = self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l",
                         str(self.root / "server.log"), "-o", options, "-w", "-t", "60",
                         "start", check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stdout}{done.stderr}"
                               f"{self.log_tail()}")
        self.psql(f"CREATE DATABASE {self.dbname}", dbname="postgres")
        return self

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "server.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.is_file() else ""

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m",
                      "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, dbname: str | None = None) -> str:
        """Run SQL (psql script syntax, ``\\copy`` included) as the superuser; stdout."""
        psql = self.bindir / "psql"
        done = subprocess.run(
            [str(psql) if psql.is_file() else "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", self.user, "-d",
             dbname or self.dbname, "-At", "-f", "-"],
            input=sql, text=True, capture_output=True, env={**os.environ, **self.env},
            check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def load_omop(self, cdm: Path, schema: str = "cdm") -> dict[str, int]:
        """Copy every table of a Parquet OMOP directory into ``schema`` (replaced).

        Column types follow the OMOP CDM v5.4 PostgreSQL DDL: ``integer`` ids (``bigint``
        only where a value needs it), ``NUMERIC`` values, ``date``, ``timestamp``,
        ``varchar``.  Returns the row count of each table.
        """
        self.psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};")
        counts = {}
        with tempfile.TemporaryDirectory(prefix="cohortflow-pg-load-") as tmp:
            for path in sorted(Path(cdm).iterdir()):
                is_table = path.suffix == ".parquet" or (
                    path.is_dir() and any(path.glob("*.parquet")))
                if not is_table:
                    continue
                name = path.stem if path.suffix else path.name
                table = pads.dataset(path, format="parquet").to_table()
                columns = ", ".join(f"{c} {_pg_type(table[c])}" for c in table.column_names)
                csv = Path(tmp) / f"{name}.csv"
                pacsv.write_csv(table, csv)
                self.psql(f"CREATE TABLE {schema}.{name} ({columns});\n"
                          f"\\copy {schema}.{name} FROM '{csv}' WITH (FORMAT csv, HEADER)\n")
                counts[name] = table.num_rows
        return counts


def _pg_type(column: pa.ChunkedArray) -> str:
    kind = column.type
    if pa.types.is_integer(kind):
        if pa.types.is_int64(kind) and column.null_count < len(column):
            low, high = pc.min_max(column).values()
            if max(abs(low.as_py()), abs(high.as_py())) > _INT32_MAX:
                return "bigint"
        return "integer"
    if pa.types.is_floating(kind):
        return "numeric"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_boolean(kind):
        return "boolean"
    return "varchar"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _unavailable(msg: str) -> None:
    if _ci():
        pytest.fail(f"{msg} (CI=true: PostgreSQL tests must not skip)", pytrace=False)
    pytest.skip(msg)


_shared: dict[str, object] = {"server": None, "users": 0}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the session (shared by every module importing it)."""
    if _shared["server"] is None:
        bindir = find_bindir()
        if bindir is None:
            _unavailable("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; "
                         "install Debian's `postgresql` package")
            return
        run_as = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                _unavailable("running as root but there is no `postgres` user to run the "
                             "server as; install Debian's `postgresql` package")
                return
            run_as = "postgres"
        root = Path(tempfile.mkdtemp(prefix="cohortflow-pg-"))
        server = PostgresServer(root=root, bindir=bindir, run_as=run_as)
        try:
            server.start()
        except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            server.stop()
            pytest.fail(f"could not start the PostgreSQL test server: {exc} {detail}",
                        pytrace=False)
        _shared["server"] = server
    _shared["users"] = int(_shared["users"]) + 1  # type: ignore[call-overload]
    server = _shared["server"]
    assert isinstance(server, PostgresServer)
    try:
        yield server
    finally:
        _shared["users"] = int(_shared["users"]) - 1  # type: ignore[call-overload]
        if _shared["users"] == 0:
            with contextlib.suppress(Exception):
                server.stop()
            _shared["server"] = None
