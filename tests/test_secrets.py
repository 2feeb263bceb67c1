"""Database credentials come only from the environment or a pgpass file, and never land in
an output: a whole study runs against a real, password-protected PostgreSQL, and every byte
it leaves behind is searched for the password.

The search covers everything under the run's working directory — results, logs, manifest,
benchmarks, Snakemake's ``.snakemake/`` metadata and logs, ``.cohortflow/``, the run's
temporary files (``TMPDIR`` points inside it) — plus the run's stdout and stderr.  Files are
searched as raw bytes and, where they are compressed (Parquet pages, Zarr chunks, gzip,
zstd), decoded as well, for the password itself and its base64, URL-quoted and UTF-16 forms.
A password put in the study file's URL is refused, and no piece of it is echoed.

A slurm-dask study is searched the same way for the pseudonym key and the private key of
its Dask cluster's TLS credentials (each line of it too, and its DER bytes), in everything
the run leaves, in SLURM's copies of the job scripts, the jobs' logs and the daemons' own
state and logs, and in the console.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import secrets
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numcodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from cohortflow import manifest, omop
from cohortflow.errors import SourceError, StudySpecError
from cohortflow.privacy import PSEUDONYM_KEY_ENV
from cohortflow.study import load_study
from tests.conftest import REPO, write_study
from tests.harness import postgres as postgres_harness
from tests.harness.intruded import IntrudedRun
from tests.harness.postgres import PostgresServer
from tests.harness.slurm import SlurmCluster
from tests.test_shared_cluster import slurm_records

postgres_server = postgres_harness.postgres_server  # the session fixture, shared

SCHEMA = "secret_cdm"
#: A whole study leaves well over this many files (event shards, cohort shards, Zarr chunks,
#: sweep configurations, logs, benchmarks, Snakemake metadata); fewer means the scan
#: looked in the wrong place.
MIN_FILES = 80


def needles(password: str) -> dict[str, bytes]:
    """The password as it could be written: raw, URL-quoted, UTF-16, and base64 at each of
    the three alignments it may have inside a longer encoded stream (edge characters that
    depend on the neighbouring bytes are dropped).

    >>> sorted(needles("pw-0123456789abcdef"))[:3]
    ['base64+0', 'base64+1', 'base64+2']
    """
    raw = password.encode()
    found = {"raw": raw, "url-quoted": quote(password, safe="").encode(),
             "utf-16": password.encode("utf-16-le")}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        core = encoded[4 if shift else 0:]                     # drop the padding's group
        core = core[: len(core) - 4 if len(core) % 4 == 0 else len(core)]  # and the tail's
        found[f"base64+{shift}"] = core
        found[f"base64url+{shift}"] = core.replace(b"+", b"-").replace(b"/", b"_")
    return found


def decoded_views(path: Path, data: bytes) -> Iterator[tuple[str, bytes]]:
    """The bytes of ``path`` as stored, then any decoded form: a Parquet file's rows and
    metadata (pages are compressed), a gzip or zstd stream (Zarr chunks, logs)."""
    yield "bytes", data
    if data[:4] == b"PAR1":
        table = pq.read_table(path)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:  # uncompressed, metadata too
            writer.write_table(table)
        yield "parquet rows", sink.getvalue().to_pybytes()
    elif data[:2] == b"\x1f\x8b":
        yield "gzip", gzip.decompress(data)
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        yield "zstd", numcodecs.Zstd().decode(data)


def zarr_values(store: Path) -> bytes:
    """Every value of every array of a Zarr store, whatever its codecs, as bytes."""
    chunks = []
    with warnings.catch_warnings():  # Snakemake's .snakemake_timestamp beside the arrays
        warnings.simplefilter("ignore")
        for _, array in zarr.open_group(store, mode="r").arrays():
            values = np.asarray(array[...])
            chunks.append("\0".join(map(str, values.ravel())).encode()
                          if values.dtype.kind not in "biufcmM" else values.tobytes())
    return b"".join(chunks)


def scan(root: Path, forms: dict[str, bytes]) -> tuple[int, int, list[str]]:
    """(files, bytes) searched under ``root``, and every place a secret form was found."""
    files = size = 0
    leaks = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        files, size = files + 1, size + len(data)
        for view, content in decoded_views(path, data):
            leaks += [f"{path.relative_to(root)} ({view}, {form})"
                      for form, secret in forms.items() if secret in content]
    for store in sorted(root.rglob("*.zarr")):
        if (store / "zarr.json").is_file():
            content = zarr_values(store)
            leaks += [f"{store.relative_to(root)} (zarr values, {form})"
                      for form, secret in forms.items() if secret in content]
    return files, size, leaks


def clean_environment(workdir: Path) -> dict[str, str]:
    """This process's environment less every libpq variable, with no pgpass file either:
    a run sees only the credential a test hands it.  The run's other secret, the pseudonym
    key, is a fresh one, searched for too.  Temporary files go inside ``workdir``, so the
    scan sees them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env[PSEUDONYM_KEY_ENV] = "pk-" + secrets.token_hex(16)
    env["PGPASSFILE"] = str(workdir.parent / "no-pgpass")  # not ~/.pgpass either
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(workdir / "tmp")
    return env


def run_study(study: Path, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cohortflow", "run", str(study), "--results", "results"],
        cwd=workdir, capture_output=True, check=False, env=env, timeout=900)


@pytest.fixture(scope="module")
def database(postgres_server: PostgresServer, synth_omop: Path) -> PostgresServer:
    """The synthetic OMOP CDM (2,500 persons) in schema ``secret_cdm`` of the server."""
    counts = postgres_server.load_omop(synth_omop, schema=SCHEMA)
    assert counts["person"] > 1000
    return postgres_server


def study_for(server: PostgresServer, workdir: Path) -> Path:
    workdir.mkdir(parents=True)
    return write_study(workdir / "study.yaml", shards=2,
                       source={"omop": {"url": server.url, "schema": SCHEMA}})


def test_the_scan_finds_a_password_however_it_is_written(tmp_path: Path) -> None:
    """The scan itself, on planted leaks: one per form and container it must see through."""
    password = "pw-" + "5eC" * 8
    forms = needles(password)
    (tmp_path / "plain.log").write_text(f"connecting with {password}\n")
    (tmp_path / "b64.json").write_text(json.dumps(
        {"k": "x" + base64.b64encode(f"user:{password}".encode()).decode()}))
    (tmp_path / "url.txt").write_text("postgresql://u:" + quote(password) + "@h/db")
    (tmp_path / "log.gz").write_bytes(gzip.compress(password.encode()))
    pq.write_table(pa.table({"note": [password] * 50}), tmp_path / "t.parquet",
                   compression="zstd")
    store = zarr.open_group(tmp_path / "f.zarr", mode="w")
    store.create_array("code", shape=(3,), dtype=str)[:] = ["a", password, "b"]
    (tmp_path / "clean.txt").write_text("nothing here")
    files, size, leaks = scan(tmp_path, forms)
    where = {leak.split(" ", 1)[0].split("/")[0] for leak in leaks}
    assert where == {"plain.log", "b64.json", "url.txt", "log.gz", "t.parquet", "f.zarr"}, leaks
    for decoded in ("t.parquet (parquet rows, raw)", "f.zarr (zarr values, raw)",
                    "log.gz (gzip, raw)", "b64.json (bytes, base64+2)"):
        assert decoded in leaks
    assert files > 8 and size > 0


@pytest.mark.postgres
@pytest.mark.e2e
def test_the_server_demands_the_password_and_a_run_without_it_names_the_fix(
    database: PostgresServer, tmp_path: Path
) -> None:
    assert database.auth_methods() == {"scram-sha-256"}  # no trust, no peer: only the password
    workdir = tmp_path / "run"
    study = study_for(database, workdir)
    done = run_study(study, workdir, clean_environment(workdir))
    log = (done.stdout + done.stderr).decode()
    ingest_log = workdir / "results" / "demo" / "logs" / "ingest.log"
    if ingest_log.is_file():
        log += ingest_log.read_text()
    assert done.returncode != 0
    assert "cannot connect to PostgreSQL" in log, log[-3000:]
    assert re.search(r"no password supplied|password authentication failed", log), log[-3000:]
    assert "give the password in PGPASSWORD or ~/.pgpass" in log, log[-3000:]
    assert not (workdir / "results" / "demo" / "events").exists()


@pytest.mark.postgres
@pytest.mark.e2e
@pytest.mark.parametrize("credential", ["PGPASSWORD", "PGPASSFILE"])
def test_a_whole_study_on_postgres_leaves_the_password_in_no_output(
    database: PostgresServer, tmp_path: Path, credential: str
) -> None:
    workdir = tmp_path / "run"
    study = study_for(database, workdir)
    env = clean_environment(workdir)
    if credential == "PGPASSWORD":
        env.update(database.env)
    else:  # outside the working directory: the file itself is the one place it may be
        env.update(database.pgpass(tmp_path / "secrets" / "pgpass"))
    assert database.password not in study.read_text()

    started = time.monotonic()
    done = run_study(study, workdir, env)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, (done.stdout + done.stderr).decode()[-5000:]

    results = workdir / "results" / "demo"
    record = manifest.read(results / "manifest.json")
    fingerprints = json.loads((results / "events" / "metadata" / "source_fingerprint.json")
                              .read_text())
    # Every source table's fingerprint, as taken at ingest (small row counts may be shown
    # suppressed, e.g. "<11").
    assert {t: f["sha256"] for t, f in record["inputs"].items()} == {
        t: f["sha256"] for t, f in fingerprints.items()}
    for table in ("person", "observation_period", "condition_occurrence", "concept"):
        assert record["inputs"][table]["rows"] == fingerprints[table]["rows"] > 11
    # The source is recorded through the study file the manifest names and hashes: the
    # url, user, host and schema, with no password anywhere in it.
    assert record["study"]["path"] == str(study.resolve())
    assert record["study"]["sha256"] == manifest.file_digest(study)
    recorded = load_study(record["study"]["path"]).source.omop
    assert recorded is not None and recorded.url == database.url
    assert recorded.schema_name == SCHEMA

    secret_forms = needles(database.password) | {
        f"pseudonym key {form}": key for form, key in needles(env[PSEUDONYM_KEY_ENV]).items()}
    files, size, leaks = scan(workdir, secret_forms)
    for form, secret in secret_forms.items():
        for stream, content in (("stdout", done.stdout), ("stderr", done.stderr)):
            if secret in content:
                leaks.append(f"<{stream}> ({form})")
    print(f"{credential}: scanned {files} files, {size / 2**20:.1f} MiB; "
          f"run took {elapsed:.0f} s")
    assert files >= MIN_FILES, files
    for part in (".snakemake/metadata", ".snakemake/log", "results/demo/logs",
                 "results/demo/benchmarks", "results/demo/features/cohort/features.zarr",
                 "results/demo/events/data", "results/demo/sweep"):
        assert any(p.is_file() for p in (workdir / part).rglob("*")), part
    assert (workdir / ".cohortflow").is_dir()  # its head record is removed after a run
    assert leaks == []


#: A password with every character that could cut a naive mask short, and its pieces.
AWKWARD = "Zq7x@Kp2w/Mv9 Rt4&Jn8:Hs5?Lb6#"
PIECES = ["Zq7x", "Kp2w", "Mv9", "Rt4", "Jn8", "Hs5", "Lb6"]
PASSWORD_IN = {
    "userinfo": f"postgresql://reader:{AWKWARD}@db.example.org:5432/cdm",
    "query": f"postgresql://reader@db.example.org/cdm?sslmode=require&password={AWKWARD}",
    "spaced query": f"postgresql://reader@db.example.org/cdm?PassWord = {AWKWARD}",
    "sslpassword": f"postgresql://reader@db.example.org/cdm?sslpassword={AWKWARD}",
    "conninfo": f"host=db.example.org user=reader password={AWKWARD}",
}


def leaked_pieces(text: str | bytes) -> list[str]:
    content = text.encode() if isinstance(text, str) else text
    return [piece for piece in PIECES if piece.encode() in content]


@pytest.mark.parametrize("form", sorted(PASSWORD_IN))
def test_a_password_in_the_url_is_refused_without_echoing_any_of_it(
    form: str, tmp_path: Path
) -> None:
    url = PASSWORD_IN[form]
    study = write_study(tmp_path / "study.yaml", source={"omop": {"url": url}})
    with pytest.raises(StudySpecError, match="holds a password; fix: remove it") as refused:
        load_study(study)
    assert "PGPASSWORD" in str(refused.value) and "pgpass" in str(refused.value)
    assert leaked_pieces(str(refused.value)) == []
    with pytest.raises(SourceError, match="holds a password") as refused_source:
        omop.open_source(url, "postgresql")
    assert leaked_pieces(str(refused_source.value)) == []


@pytest.mark.slow  # Snakemake parses the whole workflow
def test_a_refused_study_leaves_the_password_in_no_snakemake_record(tmp_path: Path) -> None:
    """Plain Snakemake (no cohortflow CLI to catch the error first) records the refusal in
    .snakemake/log: that record, and everything else it leaves, holds no piece of it."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    study = write_study(tmp_path / "study.yaml",
                        source={"omop": {"url": PASSWORD_IN["userinfo"]}})
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-c1",
         "--config", f"study={study}", "results=results"],
        cwd=workdir, capture_output=True, check=False, env=clean_environment(workdir),
        timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert b"holds a password; fix: remove it" in output, output[-3000:]
    assert any((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    for path in (p for p in workdir.rglob("*") if p.is_file()):
        assert leaked_pieces(path.read_bytes()) == [], path
    assert leaked_pieces(output) == []


def pem_forms(pem: str) -> dict[str, bytes]:
    """A PEM private key as it could leak: whole (every :func:`needles` form), any one line
    of its base64 body, and the DER bytes it encodes.

    >>> body = base64.b64encode(bytes(range(96))).decode()
    >>> pem = "-----BEGIN PRIVATE KEY-----\\n" + body[:64] + "\\n" + body[64:] + "\\n-----END"
    >>> sorted(pem_forms(pem))[:2], pem_forms(pem)["der"] == bytes(range(96))
    (['base64+0', 'base64+1'], True)
    """
    lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    forms = needles(pem) | {f"line {i}": line.encode() for i, line in enumerate(lines)
                            if len(line) >= 32}
    forms["der"] = base64.b64decode("".join(lines))
    return forms


@pytest.mark.slurm
@pytest.mark.e2e
def test_a_slurm_dask_study_leaves_no_pseudonym_key_or_dask_credential(
    intruded_run: IntrudedRun, slurm_cluster: SlurmCluster
) -> None:
    run = intruded_run
    assert run.returncode == 0, (run.stdout + run.stderr).decode()[-5000:]
    key = run.credentials.get("key.pem", "")
    assert "PRIVATE KEY" in key  # the run's Dask key was seen (by root), so it is searched
    secret_forms = {f"pseudonym key {form}": value
                    for form, value in needles(run.env[PSEUDONYM_KEY_ENV]).items()}
    secret_forms |= {f"dask key {form}": value for form, value in pem_forms(key).items()}
    files, size, leaks = scan(run.workdir, secret_forms)
    for path in slurm_records(slurm_cluster):
        data = path.read_bytes()
        files, size = files + 1, size + len(data)
        leaks += [f"{path} ({form})" for form, secret in secret_forms.items()
                  if secret in data]
    for stream, content in (("stdout", run.stdout), ("stderr", run.stderr)):
        leaks += [f"<{stream}> ({form})" for form, secret in secret_forms.items()
                  if secret in content]
    print(f"slurm-dask: scanned {files} files, {size / 2**20:.1f} MiB")
    assert files >= MIN_FILES, files
    scripts = [p for p in slurm_records(slurm_cluster) if p.name == "script"]
    assert any(b"--tls-key" in p.read_bytes() for p in scripts), "no Dask worker job script"
    assert any(run.workdir.glob("slurm-*.out")), "no Dask worker job log"
    assert leaks == []
