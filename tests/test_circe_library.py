"""Library cohorts read from ATLAS / Circe JSON (``cohorts: {NAME: {circe: PATH}}``): the
same cohort as the hand-written entry, a digest that follows the JSON's content, and every
problem named at ``cohorts.<name>.circe`` with the study's other problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from cohortflow.errors import StudySpecError
from cohortflow.study import Study, load_study, parse_study
from tests.helpers import build_cohorts
from tests.test_circe import ATLAS, _with
from tests.test_eunomia import reference

# The cohort ATLAS defines, written out by hand as a library entry; its concept sets are
# named as a circe entry names them: <cohort>__cs<id>_<name>.
HAND_WRITTEN = """
concept_sets:
  nsaids__cs0_nsaids:
    include: [{concept_id: 1118084, descendants: true}, {concept_id: 1124300, descendants: true}]
  nsaids__cs1_gi_bleed:
    include: [{concept_id: 192671, descendants: true}]
cohorts:
  nsaids:
    entry:
      criteria: [{domain: DRUG, concept_set: nsaids__cs0_nsaids, first_occurrence: true}]
      limit: first
    prior_observation_days: 365
    post_observation_days: 0
    inclusion_rules:
      - name: No GI bleed before the index date
        type: all
        criteria:
          - occurrence:
              domain: CONDITION
              concept_set: nsaids__cs1_gi_bleed
              count: {op: exactly, n: 0}
              window: {start_days: null, end_days: -1, same_observation_period: false}
    limit: first
    exit: {strategy: continuous_exposure, concept_set: nsaids__cs0_nsaids, gap_days: 30,
           offset_days: 0, era_pad_days: 0}
"""


def library_study(folder: Path, cohorts: dict[str, Any], atlas: dict[str, Any] | None = ATLAS,
                  **changes: Any) -> Path:
    """A library study in ``folder`` with ``cohorts`` (and atlas/nsaids.json holding
    ``atlas``), one analysis of cohort ``nsaids``; ``changes`` replace top-level keys."""
    (folder / "atlas").mkdir(parents=True, exist_ok=True)
    if atlas is not None:
        (folder / "atlas" / "nsaids.json").write_text(json.dumps(atlas))
    raw: dict[str, Any] = {
        "name": "nsaid_library", "shards": 2, "source": {"omop": {"path": "cdm"}},
        "concept_sets": {"asthma": {"include": [{"concept_id": 317009}]}},
        "cohorts": {"asthma": {"entry": {"concept_set": "asthma"}}, **cohorts},
        "outcomes": {"gi_bleed": {"concept_set": "nsaids__cs1_gi_bleed"}},
        "times_at_risk": {"1y": {"start_days": 1, "end_days": 365}},
        "analyses": [{"target": "nsaids", "outcome": "gi_bleed", "time_at_risk": "1y"}],
        **changes}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def hand_written_study(folder: Path) -> Path:
    """The library study with the ATLAS cohort written out by hand."""
    hand = yaml.safe_load(HAND_WRITTEN)
    path = library_study(folder, hand["cohorts"], atlas=None)
    raw = yaml.safe_load(path.read_text())
    raw["concept_sets"].update(hand["concept_sets"])
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


CIRCE = {"nsaids": {"circe": "atlas/nsaids.json"}}


def test_a_circe_entry_is_the_hand_written_cohort(tmp_path: Path) -> None:
    circe = load_study(library_study(tmp_path / "circe", CIRCE))
    hand = load_study(hand_written_study(tmp_path / "hand"))
    assert circe.cohorts == hand.cohorts
    assert circe.concept_sets == hand.concept_sets
    assert sorted(circe.concept_sets) == ["asthma", "nsaids__cs0_nsaids",
                                          "nsaids__cs1_gi_bleed"]
    assert circe.cohort_digest("nsaids") == hand.cohort_digest("nsaids")
    # the study keeps the resolved definition: dumped and read again, it is the same study
    again = parse_study(circe.model_dump(mode="json", by_alias=True))
    assert again.cohorts == circe.cohorts and again.digest() == circe.digest()


def test_a_circe_entry_builds_the_hand_written_episodes_on_eunomia(
        tmp_path: Path, eunomia_store: Path) -> None:
    tables = []
    for kind, path in (("circe", library_study(tmp_path / "circe", CIRCE)),
                       ("hand", hand_written_study(tmp_path / "hand"))):
        build_cohorts(path, eunomia_store, tmp_path / kind / "cohort", "nsaids")
        tables.append(pl.read_parquet(tmp_path / kind / "cohort" / "shards" / "*.parquet")
                      .sort("subject_id", "start"))
    assert tables[0].equals(tables[1])
    rows = tables[0].select("subject_id", "start", "end").rows()
    assert sorted(rows) == reference("eunomia_nsaid_new_users")


def digests(path: Path) -> dict[str, str]:
    study = load_study(path)
    return {name: study.cohort_digest(name) for name in ("nsaids", "asthma")}


def test_the_digest_follows_the_json_content_only(tmp_path: Path) -> None:
    path = library_study(tmp_path, CIRCE)
    atlas_file = tmp_path / "atlas" / "nsaids.json"
    before = digests(path)
    atlas_file.write_text(json.dumps(ATLAS, indent=4))  # the same content, laid out anew
    assert digests(path) == before
    atlas_file.write_text(json.dumps(_with(["EndStrategy", "CustomEra", "GapDays"], 60)))
    gap = digests(path)
    assert gap["nsaids"] != before["nsaids"] and gap["asthma"] == before["asthma"]
    more = _with(["ConceptSets", 1, "expression", "items"],
                 [*ATLAS["ConceptSets"][1]["expression"]["items"],
                  {"concept": {"CONCEPT_ID": 4}, "isExcluded": True}])
    atlas_file.write_text(json.dumps(more))  # a concept set of the JSON, not its cohort
    assert digests(path)["nsaids"] not in (before["nsaids"], gap["nsaids"])
    atlas_file.write_text(json.dumps(ATLAS))
    raw = yaml.safe_load(path.read_text())
    raw["cohorts"]["asthma"]["prior_observation_days"] = 30  # an unrelated cohort
    path.write_text(yaml.safe_dump(raw))
    after = digests(path)
    assert after["nsaids"] == before["nsaids"] and after["asthma"] != before["asthma"]


def refusal(path: Path) -> str:
    with pytest.raises(StudySpecError) as info:
        load_study(path)
    return str(info.value)


@pytest.mark.parametrize(("entry", "atlas", "expected"), [
    ({"circe": "atlas/missing.json"}, ATLAS,
     "atlas/missing.json: file not found; fix: give the path of a cohort definition's JSON"),
    ({"circe": "atlas"}, ATLAS, "atlas: is a directory; fix:"),
    ({"circe": "study.yaml"}, ATLAS, "study.yaml: not valid JSON"),
    ({"circe": "atlas/nsaids.json"}, [ATLAS], "a Circe cohort definition is a JSON object"),
    ({"circe": "atlas/nsaids.json"}, _with(["AdditionalCriteria"], {"Type": "ALL"}),
     "atlas/nsaids.json: <root>: the Circe construct AdditionalCriteria is not supported"),
    ({"circe": "atlas/nsaids.json"},
     _with(["InclusionRules", 0, "expression", "CriteriaList", 0, "RestrictVisit"], True),
     "atlas/nsaids.json: InclusionRules[0].CriteriaList[0]: the Circe construct RestrictVisit"),
    ({"circe": "atlas/nsaids.json", "limit": "first"}, ATLAS,
     "a circe entry holds only circe: PATH (got also limit); fix:"),
    ({"circe": 3}, ATLAS, "not a path; fix: give the path of a cohort definition's JSON"),
])
def test_a_refused_circe_entry_names_the_study_the_field_and_the_fix(
        tmp_path: Path, entry: dict[str, Any], atlas: Any, expected: str) -> None:
    path = library_study(tmp_path, {"nsaids": entry})
    (tmp_path / "atlas" / "nsaids.json").write_text(json.dumps(atlas))
    message = refusal(path)
    assert message.startswith(f"{path}: 1 problem(s) in the study file:\n")
    assert "  - cohorts.nsaids.circe: " in message and "fix:" in message
    assert expected in message
    # the outcome naming one of its concept sets is not reported again as unknown
    assert "unknown concept set" not in message


def test_a_concept_set_name_taken_by_the_study_is_refused_naming_both(tmp_path: Path) -> None:
    taken = {"nsaids__cs1_gi_bleed": {"include": [{"concept_id": 1}]}}
    path = library_study(tmp_path, CIRCE, concept_sets=taken)
    message = refusal(path)
    assert ("cohorts.nsaids.circe: concept set 'nsaids__cs1_gi_bleed' of this cohort's JSON "
            "(its sets are named nsaids__<set>) is also defined under concept_sets "
            "(concept_sets.nsaids__cs1_gi_bleed); fix: rename") in message


def test_circe_problems_come_in_one_message_with_the_others(tmp_path: Path) -> None:
    bad = {"nsaids": {"circe": "atlas/missing.json"}, "celecoxib": {"circe": "study.yaml"}}
    path = library_study(tmp_path, bad, shards=0)
    message = refusal(path)
    assert message.startswith(f"{path}: 3 problem(s)")
    for field in ("cohorts.nsaids.circe: ", "cohorts.celecoxib.circe: ", "shards: "):
        assert f"  - {field}" in message
    # the study's name checks (run once the fields are valid) report with them too
    path = library_study(tmp_path, bad, analyses=[
        {"target": "nsaids", "outcome": "gi_bleed", "time_at_risk": "2y"}])
    message = refusal(path)
    assert message.startswith(f"{path}: 3 problem(s)")
    assert "  - analyses.0.time_at_risk: unknown time at risk '2y'" in message


def test_a_circe_entry_alone_brings_the_concept_sets_a_study_needs(tmp_path: Path) -> None:
    raw = yaml.safe_load(library_study(tmp_path, CIRCE).read_text())
    del raw["concept_sets"]
    del raw["cohorts"]["asthma"]
    study = parse_study(raw, folder=tmp_path)
    assert sorted(study.concept_sets) == ["nsaids__cs0_nsaids", "nsaids__cs1_gi_bleed"]
    assert isinstance(study, Study) and study.targets() == ["nsaids"]


def test_the_schema_takes_a_circe_entry(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from cohortflow.study import json_schema

    raw = yaml.safe_load(library_study(tmp_path, CIRCE).read_text())
    jsonschema.validate(raw, json_schema())
    raw["cohorts"]["nsaids"]["limit"] = "first"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, json_schema())
