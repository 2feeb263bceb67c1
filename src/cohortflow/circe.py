"""OHDSI Circe / ATLAS cohort JSON → a cohortflow study.

Supported: ConceptSets (include/exclude, descendants), PrimaryCriteria (CriteriaList of
ConditionOccurrence, DrugExposure, DrugEra, ProcedureOccurrence, Measurement, Observation,
VisitOccurrence, Death; First; Measurement ValueAsNumber and Unit; ObservationWindow;
PrimaryCriteriaLimit), InclusionRules (ALL/ANY/AT_MOST/AT_LEAST groups of occurrence
criteria with StartWindow, age and gender, nested groups), ExpressionLimit, EndStrategy
(DateOffset, CustomEra), CensoringCriteria and CollapseSettings.  Anything else is refused
with a :class:`CirceError` that names the construct; nothing is dropped silently.

Two uses: ``cohortflow import-circe`` writes a one-analysis study (:func:`import_circe`), and a
study's library entry ``circe: PATH`` is read at study load (:func:`circe_cohort`, through
``cohortflow.study``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cohortflow.errors import CirceError

if TYPE_CHECKING:  # the study model reads library entries ``circe: PATH`` through this module
    from cohortflow.study import Study

DOMAINS = {
    "ConditionOccurrence": "CONDITION", "DrugExposure": "DRUG", "DrugEra": "DRUG_ERA",
    "ProcedureOccurrence": "PROCEDURE", "Measurement": "MEASUREMENT",
    "Observation": "OBSERVATION", "VisitOccurrence": "VISIT", "Death": "DEATH",
}
OCCURRENCE_OPS = {0: "exactly", 1: "at_most", 2: "at_least"}


def _given(value: Any) -> bool:
    return value not in (None, False, [], {}, "")


class _Reader:
    def __init__(self, origin: str, prefix: str = "") -> None:
        self.origin = origin
        self.prefix = prefix
        self.names: dict[int, str] = {}

    def refuse(self, where: str, construct: str) -> CirceError:
        return CirceError(
            f"{self.origin}: {where}: the Circe construct {construct} is not supported by "
            "cohortflow; fix: remove it in ATLAS (or express it in the study file by hand)")

    def only(self, node: dict[str, Any], allowed: set[str], where: str) -> None:
        for key, value in node.items():
            if key not in allowed and _given(value):
                raise self.refuse(where, key)

    def concept_sets(self, raw: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cs in raw:
            where = f"ConceptSets[id={cs.get('id')}]"
            slug = re.sub(r"[^a-z0-9]+", "_", str(cs.get("name", "")).lower()).strip("_")
            name = self.prefix + f"cs{cs['id']}_{slug}"[:60].rstrip("_")
            self.names[int(cs["id"])] = name
            include: list[dict[str, Any]] = []
            exclude: list[dict[str, Any]] = []
            for item in cs.get("expression", {}).get("items", []):
                self.only(item, {"concept", "isExcluded", "includeDescendants"}, where)
                ref = {"concept_id": int(item["concept"]["CONCEPT_ID"]),
                       "descendants": bool(item.get("includeDescendants", False))}
                (exclude if item.get("isExcluded") else include).append(ref)
            if not include:
                raise CirceError(f"{self.origin}: {where}: a concept set with no included "
                                 "concept; fix: add a concept in ATLAS")
            out[name] = {"include": include, **({"exclude": exclude} if exclude else {})}
        return out

    def codeset(self, node: dict[str, Any], key: str, where: str) -> str:
        cid = node.get(key)
        if cid is None or int(cid) not in self.names:
            raise CirceError(f"{self.origin}: {where}.{key}: unknown concept set id {cid}; "
                             "fix: refer to an id in ConceptSets")
        return self.names[int(cid)]

    def criterion(self, wrapped: dict[str, Any], where: str) -> dict[str, Any]:
        kinds = [k for k, v in wrapped.items() if v is not None]
        if len(kinds) != 1 or kinds[0] not in DOMAINS:
            raise self.refuse(where, "/".join(kinds) or "an empty criterion")
        kind = kinds[0]
        node, here = wrapped[kind] or {}, f"{where}.{kind}"
        allowed = {"CodesetId", "First"} | ({"ValueAsNumber", "Unit"}
                                             if kind == "Measurement" else set())
        self.only(node, allowed, here)
        out: dict[str, Any] = {"domain": DOMAINS[kind]}
        if kind != "Death" or node.get("CodesetId") is not None:
            out["concept_set"] = self.codeset(node, "CodesetId", here)
        if node.get("First"):
            out["first_occurrence"] = True
        if _given(node.get("ValueAsNumber")):
            out["value"] = self.value_range(node["ValueAsNumber"], f"{here}.ValueAsNumber")
        if _given(node.get("Unit")):
            out["units"] = [u["CONCEPT_NAME"] for u in node["Unit"]]
        return out

    def value_range(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        op, value, extent = node.get("Op"), node.get("Value"), node.get("Extent")
        ranges: dict[str, dict[str, Any]] = {
            "gte": {"min": value}, "lte": {"max": value}, "eq": {"min": value, "max": value},
            "bt": {"min": value, "max": extent}}
        if op not in ranges:
            raise self.refuse(where, f"Op '{op}' (exclusive bound)")
        return ranges[op]

    def age(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        op, value, extent = node.get("Op"), int(node.get("Value") or 0), node.get("Extent")
        ranges: dict[str, dict[str, Any]] = {
            "gte": {"min": value}, "gt": {"min": value + 1}, "lte": {"max": value},
            "lt": {"max": value - 1}, "eq": {"min": value, "max": value},
            "bt": {"min": value, "max": extent}}
        if op not in ranges:
            raise self.refuse(where, f"Age Op '{op}'")
        return ranges[op]

    def window(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        self.only(node, {"Start", "End", "UseIndexEnd", "UseEventEnd"}, where)

        def bound(side: str) -> int | None:
            part = node.get(side) or {}
            return None if part.get("Days") is None else int(part["Days"]) * int(part["Coeff"])

        return {"start_days": bound("Start"), "end_days": bound("End"),
                "anchor": "index_end" if node.get("UseIndexEnd") else "index_start",
                "event_date": "end" if node.get("UseEventEnd") else "start"}

    def group(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        self.only(node, {"Type", "Count", "CriteriaList", "DemographicCriteriaList", "Groups"},
                  where)
        kind = str(node.get("Type", "ALL")).lower()
        items: list[dict[str, Any]] = []
        for i, corr in enumerate(node.get("CriteriaList") or []):
            here = f"{where}.CriteriaList[{i}]"
            self.only(corr, {"Criteria", "StartWindow", "Occurrence", "IgnoreObservationPeriod"},
                      here)
            occ = corr.get("Occurrence") or {}
            self.only(occ, {"Type", "Count"}, f"{here}.Occurrence")
            window = self.window(corr.get("StartWindow") or {}, f"{here}.StartWindow")
            window["same_observation_period"] = not corr.get("IgnoreObservationPeriod", False)
            items.append({"occurrence": {
                **self.criterion(corr["Criteria"], f"{here}.Criteria"),
                "count": {"op": OCCURRENCE_OPS[int(occ.get("Type", 2))],
                          "n": int(occ.get("Count", 1))},
                "window": window}})
        for i, demo in enumerate(node.get("DemographicCriteriaList") or []):
            here = f"{where}.DemographicCriteriaList[{i}]"
            self.only(demo, {"Age", "Gender"}, here)
            if _given(demo.get("Age")):
                items.append({"age": self.age(demo["Age"], f"{here}.Age")})
            if _given(demo.get("Gender")):
                items.append({"sex": [int(g["CONCEPT_ID"]) for g in demo["Gender"]]})
        for i, sub in enumerate(node.get("Groups") or []):
            items.append({"group": self.group(sub, f"{where}.Groups[{i}]")})
        if not items:
            raise CirceError(f"{self.origin}: {where}: an empty criteria group; fix: add a "
                             "criterion in ATLAS or remove the rule")
        out: dict[str, Any] = {"type": kind, "criteria": items}
        if kind in ("at_most", "at_least"):
            out["count"] = int(node.get("Count", 0))
        return out

    def exit(self, raw: dict[str, Any]) -> dict[str, Any]:
        end = raw.get("EndStrategy") or {}
        self.only(end, {"DateOffset", "CustomEra"}, "EndStrategy")
        out: dict[str, Any] = {}
        if _given(end.get("DateOffset")):
            offset = end["DateOffset"]
            out = {"strategy": "date_offset", "offset_days": int(offset.get("Offset", 0)),
                   "date_field": "end" if offset.get("DateField") == "EndDate" else "start"}
        elif _given(end.get("CustomEra")):
            era = end["CustomEra"]
            out = {"strategy": "continuous_exposure",
                   "concept_set": self.codeset(era, "DrugCodesetId", "EndStrategy.CustomEra"),
                   "gap_days": int(era.get("GapDays", 0)), "offset_days": int(era.get("Offset", 0))}
            if era.get("DaysSupplyOverride") is not None:
                out["days_supply_override"] = int(era["DaysSupplyOverride"])
        censoring = [self.criterion(c, f"CensoringCriteria[{i}]")
                     for i, c in enumerate(raw.get("CensoringCriteria") or [])]
        if censoring:
            out["censoring"] = censoring
        collapse = raw.get("CollapseSettings") or {}
        if collapse.get("CollapseType", "ERA") != "ERA":
            raise self.refuse("CollapseSettings", f"CollapseType {collapse['CollapseType']}")
        out["era_pad_days"] = int(collapse.get("EraPad", 0))
        return out


def circe_cohort(raw: dict[str, Any], origin: str = "<circe>",
                 prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The cohort (no outcome) and the concept sets of a Circe cohort expression, as study
    mappings; every concept set name starts with ``prefix`` (a library entry's
    ``<cohort>__``, so its names cannot meet another cohort's).

    >>> cs = [{"id": 0, "name": "Celecoxib", "expression": {"items": [
    ...     {"concept": {"CONCEPT_ID": 1118084}, "includeDescendants": True}]}}]
    >>> raw = {"ConceptSets": cs, "PrimaryCriteria": {"CriteriaList": [
    ...     {"DrugExposure": {"CodesetId": 0}}]}}
    >>> cohort, sets = circe_cohort(raw, prefix="nsaids__")
    >>> cohort["entry"]["criteria"], list(sets)
    ([{'domain': 'DRUG', 'concept_set': 'nsaids__cs0_celecoxib'}], ['nsaids__cs0_celecoxib'])
    """
    reader = _Reader(origin, prefix)
    reader.only(raw, {"ConceptSets", "PrimaryCriteria", "QualifiedLimit", "ExpressionLimit",
                      "InclusionRules", "EndStrategy", "CensoringCriteria", "CollapseSettings",
                      "CensorWindow", "cdmVersionRange", "Title"}, "<root>")
    reader.only(raw.get("CensorWindow") or {}, set(), "CensorWindow")
    concept_sets = reader.concept_sets(raw.get("ConceptSets") or [])
    primary = raw.get("PrimaryCriteria") or {}
    reader.only(primary, {"CriteriaList", "ObservationWindow", "PrimaryCriteriaLimit"},
                "PrimaryCriteria")
    criteria = [reader.criterion(c, f"PrimaryCriteria.CriteriaList[{i}]")
                for i, c in enumerate(primary.get("CriteriaList") or [])]
    if not criteria:
        raise CirceError(f"{origin}: PrimaryCriteria.CriteriaList is empty; fix: add an "
                         "entry event in ATLAS")
    window = primary.get("ObservationWindow") or {}
    limit = str((primary.get("PrimaryCriteriaLimit") or {}).get("Type", "All")).lower()
    rules = []
    for i, rule in enumerate(raw.get("InclusionRules") or []):
        group = reader.group(rule.get("expression") or {}, f"InclusionRules[{i}]")
        rules.append({"name": rule.get("name") or f"Inclusion rule {i + 1}", **group})
    cohort: dict[str, Any] = {
        "entry": {"criteria": criteria, "limit": limit},
        "prior_observation_days": int(window.get("PriorDays", 0)),
        "post_observation_days": int(window.get("PostDays", 0)),
        "inclusion_rules": rules,
        "limit": str((raw.get("ExpressionLimit") or {}).get("Type", "All")).lower(),
        "exit": reader.exit(raw),
    }
    return cohort, concept_sets


def circe_to_study(raw: dict[str, Any], name: str, origin: str = "<circe>",
                   outcome: str | None = None, source_path: str = "cdm.duckdb") -> dict[str, Any]:
    """A study mapping (ready for YAML) from a Circe cohort expression.

    ``outcome`` names the outcome concept set (default: the first one), since a Circe cohort
    defines no prediction outcome.

    >>> cs = [{"id": 0, "name": "Celecoxib", "expression": {"items": [
    ...     {"concept": {"CONCEPT_ID": 1118084}, "includeDescendants": True}]}}]
    >>> raw = {"ConceptSets": cs, "PrimaryCriteria": {"CriteriaList": [
    ...     {"DrugExposure": {"CodesetId": 0, "First": True}}]}}
    >>> circe_to_study(raw, "x")["cohort"]["entry"]["criteria"]
    [{'domain': 'DRUG', 'concept_set': 'cs0_celecoxib', 'first_occurrence': True}]
    >>> circe_to_study({**raw, "AdditionalCriteria": {"Type": "ALL"}}, "x", "c.json")
    Traceback (most recent call last):
    ...
    cohortflow.errors.CirceError: c.json: <root>: the Circe construct AdditionalCriteria ...
    """
    cohort, concept_sets = circe_cohort(raw, origin)
    cohort["outcome"] = {"concept_set": outcome or next(iter(concept_sets))}
    return {"name": re.sub(r"[^A-Za-z0-9_-]+", "_", name), "source": {"omop": {
        "path": source_path}}, "concept_sets": concept_sets, "cohort": cohort}


def read_circe(path: Path) -> dict[str, Any]:
    """The Circe cohort expression in a JSON file, or a :class:`CirceError` naming the file
    and the fix.

    >>> read_circe(Path("/nonexistent/nsaids.json"))
    Traceback (most recent call last):
    ...
    cohortflow.errors.CirceError: /nonexistent/nsaids.json: file not found; fix: give the path ...
    """
    fix = "fix: give the path of a cohort definition's JSON exported from ATLAS"
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CirceError(f"{path}: file not found; {fix}") from None
    except IsADirectoryError:
        raise CirceError(f"{path}: is a directory; {fix}") from None
    except UnicodeDecodeError as exc:
        raise CirceError(f"{path}: not UTF-8 text (byte {exc.start}); {fix}") from None
    except OSError as exc:
        raise CirceError(f"{path}: cannot read it ({exc.strerror}); {fix}") from None
    except json.JSONDecodeError as exc:
        raise CirceError(f"{path}: not valid JSON ({exc}); fix: export the cohort "
                         "definition's JSON from ATLAS") from None
    if not isinstance(raw, dict):
        raise CirceError(f"{path}: a Circe cohort definition is a JSON object, not "
                         f"{type(raw).__name__}; fix: export the cohort definition's JSON "
                         "from ATLAS")
    return raw


def import_circe(path: Path, outcome: str | None = None) -> tuple[Study, dict[str, Any]]:
    """Read a Circe JSON file; return the validated study and its mapping (for YAML)."""
    from cohortflow.study import parse_study

    path = Path(path)
    study = circe_to_study(read_circe(path), path.stem, str(path), outcome)
    return parse_study(study, origin=str(path)), study
