"""Library cohorts given as ATLAS / Circe JSON (``cohorts: {NAME: {circe: PATH}}``).

At study load each such entry becomes the cohort ``cohortflow import-circe`` would write,
and the JSON's concept sets join the study's as ``NAME__<set>`` (a library name holds no
``__``, so two cohorts' sets never meet).  The study keeps only the resolved definition:
its digests change with the JSON's content, not with its path or layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from pydantic import GetJsonSchemaHandler, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, core_schema

from cohortflow.study._analyses import SEPARATOR

CIRCE_KEY = "circe"
"""The key of a library entry read from a Circe JSON file."""

STAND_IN: dict[str, Any] = {"entry": {"criteria": [{"domain": "DEATH"}]}}
"""A valid cohort that takes a refused entry's place while the rest of the study is checked,
so its problems are reported together (the study is refused, the stand-in never runs)."""

_BUILTIN = frozenset(get_args(core_schema.ErrorType))
"""pydantic's own error kinds (the others are the study's custom ones)."""


def is_circe(entry: Any) -> bool:
    """Whether a raw library entry is ``{circe: PATH}``."""
    return isinstance(entry, dict) and CIRCE_KEY in entry


def prefix(cohort: str) -> str:
    """The start of every concept set name a circe cohort brings.

    >>> prefix("nsaids")
    'nsaids__'
    """
    return f"{cohort}{SEPARATOR}"


def resolve(data: dict[str, Any], folder: Path | None
            ) -> tuple[dict[str, Any], list[InitErrorDetails], list[str]]:
    """``data`` with each ``circe:`` library entry read (the cohort in its place, its concept
    sets added), the problems found, and the cohorts refused (each has a stand-in)."""
    library = data.get("cohorts")
    if not isinstance(library, dict) or not any(is_circe(e) for e in library.values()):
        return data, [], []
    given = data.get("concept_sets")
    concept_sets = dict(given) if isinstance(given, dict) else {}
    cohorts: dict[Any, Any] = {}
    problems: list[InitErrorDetails] = []
    refused: list[str] = []
    for name, entry in library.items():
        if not is_circe(entry):
            cohorts[name] = entry
            continue
        try:
            cohort, sets = _read(name, entry, folder)
            taken = sorted(set(sets) & set(concept_sets))
            if taken:
                raise ValueError(
                    f"concept set '{taken[0]}' of this cohort's JSON (its sets are named "
                    f"{prefix(str(name))}<set>) is also defined under concept_sets "
                    f"(concept_sets.{taken[0]}); fix: rename concept_sets.{taken[0]}, or "
                    "rename the cohort")
        except ValueError as exc:  # CirceError is one
            problems.append(InitErrorDetails(
                type=PydanticCustomError("circe", str(exc)),
                loc=("cohorts", name, CIRCE_KEY), input=entry.get(CIRCE_KEY)))
            cohorts[name] = STAND_IN
            refused.append(str(name))
            continue
        cohorts[name] = cohort
        concept_sets.update(sets)
    resolved = {**data, "cohorts": cohorts}
    if given is None or isinstance(given, dict):  # a wrong type is reported as it is
        resolved["concept_sets"] = concept_sets
    return resolved, problems, refused


def _read(name: str, entry: dict[str, Any], folder: Path | None
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cohort and concept sets of one ``{circe: PATH}`` entry; a ValueError that names
    the JSON file, its field and the fix."""
    from cohortflow.circe import circe_cohort, read_circe  # circe builds on this package

    extra = sorted(str(k) for k in entry if k != CIRCE_KEY)
    if extra:
        raise ValueError(f"a circe entry holds only circe: PATH (got also {', '.join(extra)}); "
                         "fix: edit the definition in ATLAS, or write the cohort out by hand "
                         "(`cohortflow import-circe` prints it)")
    given = entry[CIRCE_KEY]
    if not isinstance(given, str | Path) or not str(given):
        raise ValueError("not a path; fix: give the path of a cohort definition's JSON "
                         "exported from ATLAS, e.g. circe: atlas/nsaids.json (a relative path "
                         "is read from the study file's folder)")
    path = Path(given)
    if not path.is_absolute() and folder is not None:
        path = Path(folder) / path
    if not path.exists():
        raise ValueError(f"{path}: file not found; fix: give the path of a cohort "
                         "definition's JSON exported from ATLAS (a relative path is read from "
                         "the study file's folder)")
    return circe_cohort(read_circe(path), str(path), prefix(name))


def without_collateral(errors: list[Any], refused: list[str]) -> list[Any]:
    """Validation errors less those a refused circe cohort causes elsewhere: its concept
    sets, never added, named by outcomes or features as unknown."""
    starts = tuple(prefix(name) for name in refused)
    return [e for e in errors
            if not (e["type"] == "unknown_concept_set" and str(e["input"]).startswith(starts))]


class OrCirce:
    """JSON Schema of a library entry: a cohort, or ``{circe: PATH}``."""

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [handler(core_schema), {
            "type": "object", "additionalProperties": False, "required": [CIRCE_KEY],
            "properties": {CIRCE_KEY: {
                "type": "string", "title": "Circe",
                "description": "An ATLAS / Circe cohort definition's JSON file, read at "
                               "study load (a relative path from the study file's folder); "
                               "its concept sets join concept_sets as <cohort>__<set>."}}}]}


def merged(title: str, problems: list[InitErrorDetails], refused: list[str],
           exc: ValidationError | None) -> ValidationError:
    """One validation error: the circe entries' problems and the rest of the study's (less
    the collateral of a refused entry), so the study reports them all at once."""
    details = list(problems)
    for err in without_collateral(exc.errors() if exc is not None else [], refused):
        kind = err["type"]
        detail = InitErrorDetails(
            type=kind if kind in _BUILTIN else PydanticCustomError(kind, err["msg"]),
            loc=err["loc"], input=err["input"])
        if kind in _BUILTIN and "ctx" in err:
            detail["ctx"] = err["ctx"]
        details.append(detail)
    return ValidationError.from_exception_data(title, details)
