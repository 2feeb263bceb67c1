"""The study file: typed model, clear errors through the CLI, generated JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cohortflow.errors import StudySpecError
from cohortflow.study import json_schema, load_study, parse_study
from tests.conftest import REPO, write_study


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cohortflow", *args], capture_output=True,
                          text=True, check=False)


def test_demo_study_is_the_embedded_default() -> None:
    study = load_study()
    assert study == load_study(REPO / "seeds" / "studies" / "demo.yaml")
    assert study.name == "demo" and study.source.synth is not None


def test_misspelled_key_and_wrong_type_get_one_clear_message(tmp_path: Path) -> None:
    bad = write_study(tmp_path / "bad.yaml", shards="four")
    bad.write_text(bad.read_text().replace("min_cell_count:", "min_cel_count:"))
    result = cli("validate", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert str(bad) in message and "2 problem(s)" in message
    assert "min_cel_count: unknown key; did you mean 'min_cell_count'?" in message
    assert "shards: Input should be a valid integer" in message
    assert "(got 'four'); fix: e.g. shards: 4" in message


def test_valid_study_passes_validate() -> None:
    result = cli("validate", str(REPO / "seeds" / "studies" / "demo.yaml"))
    assert result.returncode == 0, result.stderr
    assert "valid study 'demo'" in result.stderr


def test_run_refuses_a_bad_study_before_snakemake_starts(tmp_path: Path) -> None:
    bad = write_study(tmp_path / "bad.yaml", cohort__entry__concept_set="asthmaa")
    result = cli("run", str(bad), "--results", str(tmp_path / "results"))
    assert result.returncode == 2
    assert "cohort.entry.concept_set: unknown concept set 'asthmaa'" in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("raw_change", "expected"), [
    ({"source": {}}, "give exactly one of 'synth', 'omop' or 'meds'"),
    ({"min_cell_count": 0}, "min_cell_count: Input should be greater than or equal to 1"),
    ({"cohort": {"entry": {"concept_set": "asthma"}, "outcome": {
        "concept_set": "asthma", "time_at_risk": {"start_days": 10, "end_days": 1}}}},
     "end_days (1) is before start_days (10)"),
    ({"concept_sets": {"asthma": {"include": []}}}, "include: List should have at least 1"),
])
def test_invalid_values_name_the_field(raw_change: dict, expected: str) -> None:
    raw = json.loads(json.dumps(load_study().model_dump(mode="json", by_alias=True)))
    raw.update(raw_change)
    with pytest.raises(StudySpecError) as info:
        parse_study(raw, origin="s.yaml")
    assert expected in str(info.value)


def test_missing_study_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StudySpecError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")


def test_committed_json_schema_is_generated_from_the_model() -> None:
    committed = json.loads((REPO / "workflow" / "schemas" / "study.schema.json").read_text())
    assert committed == json_schema(), "run `make schema` to regenerate it"
