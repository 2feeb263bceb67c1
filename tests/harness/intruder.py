"""What another user of the shared cluster tries against a running study.

Run as that user (see :func:`tests.harness.slurm.run_as`).  It imports Dask first, then reads
one JSON object per line from stdin -- ``{"read": [paths], "list": [dirs], "connect":
[addresses]}`` -- tries every attempt, and prints one JSON line of outcomes per request:
``{"read": {path: outcome}, "list": {...}, "connect": {"<how> <address>": outcome}}``.
An outcome is ``"denied: ..."`` / ``"failed: ..."`` or, for a success, ``"READ <n> bytes"``,
``"LISTED"``, ``"CONNECTED"``.  Every connection goes to an address the test names (this
machine's own), nowhere else.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from distributed import Client
from distributed.security import Security

#: Seconds one connection attempt may take before it counts as failed.
CONNECT_TIMEOUT = 6


def try_read(path: str) -> str:
    try:
        with Path(path).open("rb") as handle:
            return f"READ {len(handle.read())} bytes"
    except OSError as exc:
        return f"denied: {type(exc).__name__}: {exc.strerror}"


def try_list(path: str) -> str:
    try:
        list(Path(path).iterdir())
    except OSError as exc:
        return f"denied: {type(exc).__name__}: {exc.strerror}"
    return "LISTED"


def self_made_security(folder: Path) -> Security:
    """A certificate of the intruder's own making, presented as client and trusted as CA."""
    made = Security.temporary()
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_text(made.tls_ca_file)
    key.write_text(made.tls_client_key)
    return Security(require_encryption=True, tls_ca_file=str(cert),
                    tls_client_cert=str(cert), tls_client_key=str(key))


def try_connect(address: str, security: Security | None) -> str:
    try:
        client = Client(address, security=security, timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # any failure to connect is what the test wants
        return f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    try:
        workers = len(client.scheduler_info().get("workers", {}))
    finally:
        client.close()
    return f"CONNECTED ({workers} workers)"


def main() -> None:
    with tempfile.TemporaryDirectory() as own:
        mine = self_made_security(Path(own))
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            outcome: dict[str, dict[str, str]] = {"read": {}, "list": {}, "connect": {}}
            for path in request.get("read", []):
                outcome["read"][path] = try_read(path)
            for path in request.get("list", []):
                outcome["list"][path] = try_list(path)
            for address in request.get("connect", []):
                host_port = address.split("://")[-1]
                outcome["connect"][f"tcp {host_port}"] = try_connect(f"tcp://{host_port}", None)
                outcome["connect"][f"tls-self-made {host_port}"] = try_connect(
                    f"tls://{host_port}", mine)
            print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
