"""Circe / ATLAS cohort JSON import: supported constructs translate, the rest is refused."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cohortflow import cohorts, events
from cohortflow.circe import CirceError, circe_to_study, import_circe
from tests.test_eunomia import reference


def concept(cid: int, name: str) -> dict[str, Any]:
    return {"CONCEPT_ID": cid, "CONCEPT_NAME": name, "STANDARD_CONCEPT": "S",
            "INVALID_REASON": "V", "CONCEPT_CODE": str(cid), "DOMAIN_ID": "Drug",
            "VOCABULARY_ID": "RxNorm", "CONCEPT_CLASS_ID": "Ingredient"}


# An ATLAS export (keys and nulls as ATLAS writes them): new users of NSAIDs with 365 days of
# prior observation, no GI bleed ever before, exit at the end of continuous exposure.
ATLAS: dict[str, Any] = {
    "cdmVersionRange": ">=5.0.0",
    "PrimaryCriteria": {
        "CriteriaList": [{"DrugExposure": {"CodesetId": 0, "First": True}}],
        "ObservationWindow": {"PriorDays": 365, "PostDays": 0},
        "PrimaryCriteriaLimit": {"Type": "First"},
    },
    "AdditionalCriteria": None,
    "ConceptSets": [
        {"id": 0, "name": "NSAIDs", "expression": {"items": [
            {"concept": concept(1118084, "celecoxib"), "isExcluded": False,
             "includeDescendants": True, "includeMapped": False},
            {"concept": concept(1124300, "diclofenac"), "isExcluded": False,
             "includeDescendants": True, "includeMapped": False}]}},
        {"id": 1, "name": "GI bleed", "expression": {"items": [
            {"concept": concept(192671, "Gastrointestinal hemorrhage"), "isExcluded": False,
             "includeDescendants": True, "includeMapped": False}]}},
    ],
    "QualifiedLimit": {"Type": "First"},
    "ExpressionLimit": {"Type": "First"},
    "InclusionRules": [{
        "name": "No GI bleed before the index date",
        "description": None,
        "expression": {
            "Type": "ALL",
            "CriteriaList": [{
                "Criteria": {"ConditionOccurrence": {"CodesetId": 1, "ConditionTypeExclude":
                                                     False}},
                "StartWindow": {"Start": {"Days": None, "Coeff": -1},
                                "End": {"Days": 1, "Coeff": -1},
                                "UseIndexEnd": False, "UseEventEnd": False},
                "RestrictVisit": False, "IgnoreObservationPeriod": True,
                "Occurrence": {"Type": 0, "Count": 0, "IsDistinct": False},
            }],
            "DemographicCriteriaList": [],
            "Groups": [],
        },
    }],
    "EndStrategy": {"CustomEra": {"DrugCodesetId": 0, "GapDays": 30, "Offset": 0,
                                  "DaysSupplyOverride": None}},
    "CensoringCriteria": [],
    "CollapseSettings": {"CollapseType": "ERA", "EraPad": 0},
    "CensorWindow": {},
}


def test_atlas_definition_translates_construct_by_construct() -> None:
    study = circe_to_study(ATLAS, "nsaid new users", outcome="cs1_gi_bleed")
    cohort = study["cohort"]
    assert study["name"] == "nsaid_new_users"
    assert study["concept_sets"]["cs0_nsaids"]["include"] == [
        {"concept_id": 1118084, "descendants": True},
        {"concept_id": 1124300, "descendants": True}]
    assert cohort["entry"] == {"criteria": [{"domain": "DRUG", "concept_set": "cs0_nsaids",
                                             "first_occurrence": True}], "limit": "first"}
    assert (cohort["prior_observation_days"], cohort["post_observation_days"]) == (365, 0)
    assert cohort["inclusion_rules"] == [{
        "name": "No GI bleed before the index date", "type": "all", "criteria": [
            {"occurrence": {"domain": "CONDITION", "concept_set": "cs1_gi_bleed",
                            "count": {"op": "exactly", "n": 0},
                            "window": {"start_days": None, "end_days": -1,
                                       "anchor": "index_start", "event_date": "start",
                                       "same_observation_period": False}}}]}]
    assert cohort["limit"] == "first"
    assert cohort["exit"] == {"strategy": "continuous_exposure", "concept_set": "cs0_nsaids",
                              "gap_days": 30, "offset_days": 0, "era_pad_days": 0}


def test_more_constructs_translate() -> None:
    raw = copy.deepcopy(ATLAS)
    raw["ConceptSets"][1]["expression"]["items"].append(
        {"concept": concept(4, "x"), "isExcluded": True, "includeDescendants": False})
    raw["PrimaryCriteria"]["CriteriaList"].append({"Measurement": {
        "CodesetId": 1, "ValueAsNumber": {"Value": 5, "Op": "bt", "Extent": 10},
        "Unit": [{"CONCEPT_ID": 8840, "CONCEPT_NAME": "milligram per deciliter"}]}})
    raw["InclusionRules"][0]["expression"].update({
        "Type": "AT_LEAST", "Count": 1,
        "DemographicCriteriaList": [{"Age": {"Value": 18, "Op": "gt"},
                                     "Gender": [{"CONCEPT_ID": 8532}]}],
        "Groups": [{"Type": "ANY", "CriteriaList": [], "Groups": [],
                    "DemographicCriteriaList": [{"Age": {"Value": 65, "Op": "lt"}}]}]})
    raw["EndStrategy"] = {"DateOffset": {"DateField": "EndDate", "Offset": 7}}
    raw["CensoringCriteria"] = [{"Death": {}}]
    cohort = circe_to_study(raw, "x")["cohort"]
    assert cohort["entry"]["criteria"][1] == {
        "domain": "MEASUREMENT", "concept_set": "cs1_gi_bleed", "value": {"min": 5, "max": 10},
        "units": ["milligram per deciliter"]}
    rule = cohort["inclusion_rules"][0]
    assert (rule["type"], rule["count"]) == ("at_least", 1)
    assert rule["criteria"][1:] == [{"age": {"min": 19}}, {"sex": [8532]},
                                    {"group": {"type": "any", "criteria": [
                                        {"age": {"max": 64}}]}}]
    assert cohort["exit"] == {"strategy": "date_offset", "offset_days": 7, "date_field": "end",
                              "censoring": [{"domain": "DEATH"}], "era_pad_days": 0}


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(ATLAS)
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


CORR = ["InclusionRules", 0, "expression", "CriteriaList", 0]


@pytest.mark.parametrize(("raw", "construct"), [
    (_with(["AdditionalCriteria"], {"Type": "ALL", "CriteriaList": []}), "AdditionalCriteria"),
    (_with([*CORR, "EndWindow"], {"Start": {"Days": 0, "Coeff": 1}}), "EndWindow"),
    (_with([*CORR, "RestrictVisit"], True), "RestrictVisit"),
    (_with([*CORR, "Occurrence", "IsDistinct"], True), "IsDistinct"),
    (_with([*CORR, "Criteria"], {"ConditionEra": {"CodesetId": 1}}), "ConditionEra"),
    (_with([*CORR, "Criteria", "ConditionOccurrence", "OccurrenceStartDate"],
           {"Value": "2010-01-01", "Op": "gt"}), "OccurrenceStartDate"),
    (_with(["ConceptSets", 0, "expression", "items", 0, "includeMapped"], True),
     "includeMapped"),
    (_with(["CollapseSettings"], {"CollapseType": "COLLAPSE", "EraPad": 0}), "CollapseType"),
    (_with(["CensorWindow"], {"StartDate": "2010-01-01", "EndDate": None}), "StartDate"),
    (_with(["PrimaryCriteria", "CriteriaList", 0, "DrugExposure", "Age"],
           {"Value": 18, "Op": "gte"}), "Age"),
    (_with(["PrimaryCriteria", "CriteriaList"], [{"Measurement": {
        "CodesetId": 1, "ValueAsNumber": {"Value": 5, "Op": "gt"}}}]), "Op 'gt'"),
])
def test_unsupported_constructs_are_refused_by_name(raw: dict[str, Any], construct: str) -> None:
    with pytest.raises(CirceError, match=f"the Circe construct {construct}"):
        circe_to_study(raw, "x", origin="cohort.json")


def test_cli_writes_a_valid_study_and_refuses_with_the_construct(tmp_path: Path) -> None:
    good, bad, out = tmp_path / "nsaids.json", tmp_path / "bad.json", tmp_path / "study.yaml"
    good.write_text(json.dumps(ATLAS))
    bad.write_text(json.dumps(_with(["AdditionalCriteria"], {"Type": "ALL"})))
    cli = [sys.executable, "-m", "cohortflow"]
    done = subprocess.run([*cli, "import-circe", str(good), "--out", str(out),
                           "--outcome", "cs1_gi_bleed"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(out.read_text())["cohort"]["outcome"] == {
        "concept_set": "cs1_gi_bleed"}
    valid = subprocess.run([*cli, "validate", str(out)], capture_output=True, text=True)
    assert valid.returncode == 0, valid.stderr
    refused = subprocess.run([*cli, "import-circe", str(bad)], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "AdditionalCriteria is not supported" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_imported_atlas_cohort_equals_the_hand_written_study_on_eunomia(
        tmp_path: Path, eunomia_store: Path) -> None:
    path = tmp_path / "nsaids.json"
    path.write_text(json.dumps(ATLAS))
    study, _ = import_circe(path, outcome="cs1_gi_bleed")
    plan = cohorts.plan_of(study, study.library()[study.targets()[0]], eunomia_store)
    rows = []
    for shard in events.list_shards(eunomia_store):
        last = cohorts.make_episodes(plan)(events.scan_shard(eunomia_store, shard))[-1][1]
        rows += last.select("subject_id", "start", "end").collect().rows()
    assert sorted(rows) == reference("eunomia_nsaid_new_users")
