"""The Python environment a run used: its lock file and every installed package's version.

``requirements.lock`` (made by ``make lock``) pins, with sha256 hashes, every package that
``scripts/setup.sh`` installs.  A run's manifest records the lock's hash and the version of
every installed distribution, so :func:`changes` can name each package that differs between
a run and its rerun, and say when the lock itself changed.
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from cohortflow.errors import CohortflowError

LOCK_FILE = "requirements.lock"
"""The lock's name, at the top of the cohortflow checkout."""
NOT_INSTALLED = "not installed"
_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;]+)")


def normalise(name: str) -> str:
    """A distribution name as the package index compares names (PEP 503).

    >>> normalise("PyYAML"), normalise("typing_extensions"), normalise("zope.interface")
    ('pyyaml', 'typing-extensions', 'zope-interface')
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str, source: str = LOCK_FILE) -> dict[str, str]:
    r"""The exact version of every package in a hashed lock, keyed by normalised name.

    Every entry must be ``name==version`` with at least one ``--hash=sha256:``, as
    ``pip install --require-hashes`` needs.

    >>> parse_lock("PyYAML==6.0.4 \\\n    --hash=sha256:ab\n    # via cohortflow\n")
    {'pyyaml': '6.0.4'}
    >>> try:
    ...     parse_lock("polars>=1.20\n")
    ... except CohortflowError as error:
    ...     print(str(error)[:70])
    requirements.lock: `polars>=1.20` is not an exact pin with a hash (nam
    """
    pins: dict[str, str] = {}
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split("#", 1)[0].split() if not line.lstrip().startswith("#") else []
        if not words:
            continue
        found = _PIN.fullmatch(words[0])
        if found is None or not any(w.startswith("--hash=sha256:") for w in words[1:]):
            raise CohortflowError(
                f"{source}: `{words[0]}` is not an exact pin with a hash (name==version "
                "--hash=sha256:...); fix: regenerate the lock with `make lock`")
        pins[normalise(found["name"])] = found["version"]
    return dict(sorted(pins.items()))


def read_lock(path: Path) -> dict[str, str]:
    """:func:`parse_lock` of a lock file."""
    return parse_lock(Path(path).read_text(), str(path))


def installed_versions() -> dict[str, str]:
    """The version of every distribution installed in the running environment, by name.

    >>> installed_versions()["pyyaml"] == metadata.version("PyYAML")
    True
    """
    versions: dict[str, str] = {}
    for dist in metadata.distributions():  # in sys.path order: the one Python imports wins
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(normalise(name), dist.version)
    return dict(sorted(versions.items()))


def off_lock(locked: dict[str, str], installed: dict[str, str]) -> dict[str, str]:
    """Packages the lock names whose installed version is another one (or none).

    >>> off_lock({"polars": "2.1.0", "rich": "15.0.0"}, {"polars": "2.0.0"})
    {'polars': '2.0.0', 'rich': 'not installed'}
    """
    return {name: installed.get(name, NOT_INSTALLED) for name, version in locked.items()
            if installed.get(name) != version}


def lock_record(root: Path, installed: dict[str, str] | None = None) -> dict[str, Any] | None:
    """What a manifest says about the lock of the checkout at ``root``: its sha256 and the
    locked packages installed at another version; None where there is no lock."""
    path = Path(root) / LOCK_FILE
    if not path.is_file():
        return None
    installed = installed_versions() if installed is None else installed
    return {"file": LOCK_FILE, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "off_lock": off_lock(read_lock(path), installed)}


def changes(recorded: dict[str, Any], rerun: dict[str, Any]) -> list[str]:
    """Every package whose version differs between two manifests, and a changed lock.

    A manifest that records a lock (``"lock"`` present, even null) records every installed
    package, so a package only one run had is named too; an older manifest recorded a
    fixed list, and only its packages are compared.

    >>> before = {"packages": {"polars": "2.1.0", "rich": "15.0.0"},
    ...           "lock": {"file": "requirements.lock", "sha256": "aa" * 32}}
    >>> after = {"packages": {"polars": "2.0.0", "rich": "15.0.0", "tqdm": "4.67.1"},
    ...          "lock": {"file": "requirements.lock", "sha256": "bb" * 32}}
    >>> for line in changes(before, after): print(line)
    package changed: polars 2.1.0 -> 2.0.0
    package changed: tqdm not installed -> 4.67.1
    lock file changed: requirements.lock sha256 aaaaaaaaaaaa... -> bbbbbbbbbbbb...
    """
    before, after = recorded.get("packages", {}), rerun.get("packages", {})
    names = set(before) | set(after) if "lock" in recorded else set(before)
    found = [f"package changed: {name} {before.get(name, NOT_INSTALLED)} -> "
             f"{after.get(name, NOT_INSTALLED)}"
             for name in sorted(names)
             if before.get(name, NOT_INSTALLED) != after.get(name, NOT_INSTALLED)]
    if "lock" in recorded:
        old, new = recorded["lock"], rerun.get("lock")
        if (old or {}).get("sha256") != (new or {}).get("sha256"):
            name = (new or old)["file"]
            found.append(f"lock file changed: {name} sha256 {_short(old)} -> {_short(new)}")
    return found


def _short(lock: dict[str, Any] | None) -> str:
    return "none (no lock)" if lock is None else f"{lock['sha256'][:12]}..."
