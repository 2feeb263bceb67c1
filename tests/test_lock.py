"""The locked environment: requirements.lock covers pyproject.toml with exact, hashed pins,
the running environment holds the locked versions, and a manifest names every package (and
a lock) that differs from the run it verifies."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from cohortflow import environment, manifest
from cohortflow.disclosure import Disclosure
from cohortflow.errors import CohortflowError
from cohortflow.layout import Layout
from tests.helpers import REPO, verify_with_rerun, write_study

LOCK = REPO / environment.LOCK_FILE


def declared() -> list[Requirement]:
    """Every requirement pyproject.toml names: dependencies, the `test` extra, the build."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [Requirement(text) for text in [*project["project"]["dependencies"],
                                           *project["project"]["optional-dependencies"]["test"],
                                           *project["build-system"]["requires"]]]


def test_the_lock_pins_every_declared_dependency_exactly_with_hashes() -> None:
    locked = environment.read_lock(LOCK)  # raises on any entry without == and a hash
    for requirement in declared():
        name = environment.normalise(requirement.name)
        assert name in locked, f"{requirement} is not in {LOCK.name}; run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={locked[name]}, outside {requirement}; run `make lock`")
    entries = re.findall(r"^[A-Za-z0-9][^\s]*==[^\s]+ \\\n(?:    --hash=sha256:[0-9a-f]{64}"
                         r"(?: \\)?\n)+", LOCK.read_text(), flags=re.MULTILINE)
    assert len(entries) == len(locked) > len(declared())


def test_the_lock_refuses_an_entry_without_an_exact_pin_or_a_hash() -> None:
    with pytest.raises(CohortflowError, match=r"x.lock: `rich>=13` is not an exact pin.*make lock"):
        environment.parse_lock("rich>=13 \\\n    --hash=sha256:00\n", "x.lock")
    with pytest.raises(CohortflowError, match=r"`rich==15.0.0` is not an exact pin with a hash"):
        environment.parse_lock("rich==15.0.0\n    # via cohortflow\n")


def test_every_locked_package_installed_here_has_its_locked_version() -> None:
    locked = environment.read_lock(LOCK)
    installed = {environment.normalise(d.metadata["Name"]): d.version
                 for d in metadata.distributions()}
    assert {"polars", "snakemake", "scikit-learn", "pytest"} <= set(installed) & set(locked)
    differing = {name: (installed[name], version) for name, version in locked.items()
                 if name in installed and installed[name] != version}
    assert differing == {}, "installed != locked; run `bash scripts/setup.sh`"


def test_a_manifest_records_the_lock_hash_and_every_installed_version(tmp_path: Path) -> None:
    record = tiny_manifest(tmp_path)
    packages = record["packages"]
    assert record["lock"] == {
        "file": "requirements.lock", "sha256": hashlib.sha256(LOCK.read_bytes()).hexdigest(),
        "off_lock": environment.off_lock(environment.read_lock(LOCK), packages)}
    assert packages == manifest.package_versions()
    assert packages["polars"] == metadata.version("polars")
    assert packages["pyyaml"] == metadata.version("PyYAML")
    assert packages["cohortflow"] == metadata.version("cohortflow")
    assert manifest.causes(record, copy.deepcopy(record)) == []


def test_a_lock_record_names_the_locked_packages_installed_at_another_version(
        tmp_path: Path) -> None:
    assert environment.lock_record(tmp_path) is None
    lock = tmp_path / "requirements.lock"
    lock.write_text("polars==2.1.0 \\\n    --hash=sha256:aa\nrich==15.0.0 --hash=sha256:bb\n")
    record = environment.lock_record(tmp_path, {"polars": "2.1.0", "rich": "14.1.0"})
    assert record == {"file": "requirements.lock",
                      "sha256": hashlib.sha256(lock.read_bytes()).hexdigest(),
                      "off_lock": {"rich": "14.1.0"}}


def tiny_manifest(tmp_path: Path) -> dict[str, Any]:
    """A manifest of a run with no outputs and no steps, made in this environment."""
    study = tmp_path / "study.yaml"
    study.write_text("name: tiny\n")
    gate = Disclosure(Layout(tmp_path), min_cell_count=11)
    return manifest.build(disclosure=gate, study_path=study, study_digest="d", seeds={"study": 1},
                          profile="laptop", workflow_root=REPO, results=tmp_path, outputs=[],
                          source={"kind": "synth"}, inputs={}, metrics={}, benchmarks=[],
                          snakemake_logs=[])


def hand_built(packages: dict[str, str], lock: str | None = "aa" * 32) -> dict[str, Any]:
    return {"study": {"sha256": "s"}, "inputs": {}, "cohortflow": {"version": "0.1.0"},
            "packages": {"python": "3.11.7", **packages},
            "lock": None if lock is None else {"file": "requirements.lock", "sha256": lock,
                                               "off_lock": {}}}


def test_causes_name_every_package_whose_version_differs() -> None:
    recorded = hand_built({"polars": "2.1.0", "rich": "15.0.0", "tqdm": "4.67.1",
                           "zarr": "3.1.6"})
    rerun = hand_built({"polars": "2.0.0", "rich": "15.0.0", "zarr": "3.1.7",
                        "narwhals": "2.29.0"})
    assert manifest.causes(recorded, rerun) == [
        "package changed: narwhals not installed -> 2.29.0",
        "package changed: polars 2.1.0 -> 2.0.0",
        "package changed: tqdm 4.67.1 -> not installed",
        "package changed: zarr 3.1.6 -> 3.1.7",
    ]
    rerun["packages"]["python"] = "3.11.9"
    assert "package changed: python 3.11.7 -> 3.11.9" in manifest.causes(recorded, rerun)


def test_causes_say_when_the_lock_file_changed() -> None:
    same = {"polars": "2.1.0"}
    assert manifest.causes(hand_built(same), hand_built(same)) == []
    assert manifest.causes(hand_built(same), hand_built(same, lock="bb" * 32)) == [
        "lock file changed: requirements.lock sha256 aaaaaaaaaaaa... -> bbbbbbbbbbbb..."]
    assert manifest.causes(hand_built(same), hand_built(same, lock=None)) == [
        "lock file changed: requirements.lock sha256 aaaaaaaaaaaa... -> none (no lock)"]
    assert manifest.causes(hand_built(same, lock=None), hand_built(same)) == [
        "lock file changed: requirements.lock sha256 none (no lock) -> aaaaaaaaaaaa..."]


def test_a_manifest_from_before_the_lock_compares_only_the_packages_it_recorded() -> None:
    recorded = hand_built({"polars": "2.1.0", "numpy": "2.4.6"})
    del recorded["lock"]  # manifest_version 1 recorded a fixed list of packages, no lock
    rerun = hand_built({"polars": "2.1.0", "numpy": "2.4.5", "rich": "15.0.0"})
    assert manifest.causes(recorded, rerun) == ["package changed: numpy 2.4.6 -> 2.4.5"]


def test_a_changed_package_in_a_real_manifest_is_named(tmp_path: Path) -> None:
    recorded = tiny_manifest(tmp_path)
    rerun = copy.deepcopy(recorded)
    rerun["packages"]["tabulate"] = "0.9.0"
    assert manifest.causes(recorded, rerun) == [
        f"package changed: tabulate {recorded['packages']['tabulate']} -> 0.9.0"]


def test_verify_lists_a_changed_package_even_when_every_output_is_identical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = write_study(tmp_path / "s.yaml", name="s")
    recorded = {**tiny_manifest(tmp_path), "study": {"path": str(study), "sha256": "x"},
                "outputs": {"cohort": {"sha256": "1"}}, "metrics": {"auroc": 0.7}}
    (tmp_path / "manifest.json").write_text(json.dumps(recorded))
    rerun = copy.deepcopy(recorded)
    rerun["packages"]["tabulate"] = "0.9.0"
    done = verify_with_rerun(tmp_path / "manifest.json", rerun, monkeypatch)
    assert done.exit_code == 0, done.output
    assert "verified: every output is identical" in done.output
    assert (f"Though these changed since the recorded run:\n  - package changed: tabulate "
            f"{recorded['packages']['tabulate']} -> 0.9.0\n") in done.output
