"""The typed study model: the one place where a study YAML file is read.

A study file declares where the data comes from, the cohort, the features, the model and the
privacy threshold.  Everything downstream receives a :class:`Study`, never a dict.

>>> study = Study.model_validate({
...     "name": "tiny",
...     "source": {"synth": {"persons": 100}},
...     "concept_sets": {"asthma": {"include": [{"concept_id": 317009}]}},
...     "cohort": {"entry": {"concept_set": "asthma"},
...                "outcome": {"concept_set": "asthma"}},
... })
>>> study.features.windows_days
[30, 365]
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator

from cohortflow.errors import StudySpecError
from cohortflow.spec._base import SpecModel
from cohortflow.spec._cohort import (
    Cohort,
    ConceptRef,
    ConceptSet,
    Criterion,
    Entry,
    Exit,
    InclusionRule,
    Outcome,
    TimeAtRisk,
)
from cohortflow.spec._features import Features
from cohortflow.spec._model import Model
from cohortflow.spec._source import MedsSource, OmopSource, Source, SynthSource

DEMO_STUDY = "demo.yaml"
"""File name of the embedded default study in ``seeds/studies``."""

__all__ = [
    "DEMO_STUDY",
    "Cohort",
    "ConceptRef",
    "ConceptSet",
    "Criterion",
    "Entry",
    "Exit",
    "Features",
    "InclusionRule",
    "MedsSource",
    "Model",
    "OmopSource",
    "Outcome",
    "Source",
    "SpecModel",
    "Study",
    "SynthSource",
    "TimeAtRisk",
    "demo_study_path",
    "json_schema",
    "load_study",
    "parse_study",
]


class Study(SpecModel):
    """A whole study: data source, cohort, features, model, privacy."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Study name; names the results.")
    seed: int = Field(42, description="Study seed for splits and models.")
    shards: int = Field(4, ge=1, le=4096, description="Event-store shards (by subject).")
    min_cell_count: int = Field(
        11, ge=1, description="Counts below this are suppressed in every shared output."
    )
    source: Source
    concept_sets: dict[str, ConceptSet] = Field(min_length=1)
    cohort: Cohort
    features: Features = Features()
    model: Model = Model()

    @model_validator(mode="after")
    def _concept_sets_exist(self) -> Study:
        for where, name in self.cohort.concept_set_refs():
            if name not in self.concept_sets:
                known = ", ".join(sorted(self.concept_sets))
                raise ValueError(f"{where}: unknown concept set '{name}'; defined: {known}")
        return self

    _folder: Path = PrivateAttr(default_factory=Path.cwd)

    def source_path(self) -> Path | None:
        """The OMOP or MEDS source's path (None for synthetic or database sources), a
        relative one resolved against the folder of the study file.

        >>> Study.model_validate({"name": "x", "source": {"omop": {"path": "cdm"}},
        ...     "concept_sets": {"a": {"include": [{"concept_id": 1}]}},
        ...     "cohort": {"entry": {"concept_set": "a"}, "outcome": {"concept_set": "a"}},
        ... }).source_path() == Path.cwd() / "cdm"
        True
        """
        omop, meds = self.source.omop, self.source.meds
        path = meds.path if meds is not None else omop.path if omop is not None else None
        if path is None:
            return None
        return path if path.is_absolute() else self._folder / path

    def digest(self, exclude: frozenset[str] = frozenset()) -> str:
        """A stable hash of the study's content, independent of key order and comments."""
        canonical = json.dumps(self.model_dump(mode="json", exclude=set(exclude)),
                               sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def data_digest(self) -> str:
        """The digest of everything but the model sweep: what the data steps (synth, ingest,
        cohort, features) depend on, so adding a configuration reruns only the sweep."""
        return self.digest(exclude=frozenset({"model"}))


def demo_study_path() -> Path:
    """Path of the embedded demo study (``seeds/studies/demo.yaml``)."""
    here = Path(str(resources.files("cohortflow")))
    for root in (here, *here.parents):
        candidate = root / "seeds" / "studies" / DEMO_STUDY
        if candidate.is_file():
            return candidate
    raise StudySpecError(
        f"the embedded demo study seeds/studies/{DEMO_STUDY} was not found above {here}; "
        "fix: install cohortflow from its repository with `pip install -e .`"
    )


def load_study(path: str | Path | None = None) -> Study:
    """Read and validate a study file; ``None`` loads the embedded demo study.

    Every problem is reported at once, each naming its field and a fix.
    """
    path = Path(path) if path is not None else demo_study_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StudySpecError(f"{path}: study file not found") from None
    except yaml.YAMLError as exc:
        raise StudySpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise StudySpecError(f"{path}: a study file is a YAML mapping with keys such as 'name'")
    study = parse_study(raw, origin=str(path))
    # Relative source paths mean "next to the study file", whatever directory a run uses;
    # the folder is kept beside the model so the study's digest does not depend on it.
    study._folder = path.resolve().parent
    return study


def parse_study(raw: dict[str, Any], origin: str = "<study>") -> Study:
    """Validate a study given as a mapping, turning pydantic errors into one clear message.

    >>> parse_study({"name": "x", "sed": 1}, origin="s.yaml")
    Traceback (most recent call last):
    ...
    cohortflow.errors.StudySpecError: s.yaml: ...
    """
    try:
        return Study.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise StudySpecError(
            f"{origin}: {len(lines)} problem(s) in the study file:\n" + "\n".join(lines)
        ) from None


def _describe(err: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    field = ".".join(loc) or "<root>"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        guess = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else f"known keys: {', '.join(known)}"
        return f"  - {field}: unknown key; {hint}"
    if kind == "missing":
        return f"  - {field}: required field is missing"
    received = err.get("input")
    shown = repr(received) if not isinstance(received, dict) else "a mapping"
    shown = re.sub(r"(://[^/:@\s]*:)[^@\s]*@", r"\1***@", shown)  # never echo a password
    shown = re.sub(r"(?i)(password=)[^&\s']*", r"\1***", shown)
    return f"  - {field}: {err['msg']} (got {shown}){_example(loc) or _bound_hint(err)}"


def _bound_hint(err: Any) -> str:
    """A fix for a list too short or a number too small, where the field has no default."""
    ctx = err.get("ctx") or {}
    if err["type"] == "too_short":
        return f"; fix: give at least {ctx.get('min_length', 1)} item(s)"
    if err["type"] in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        return f"; fix: use a value {'of at least' if 'ge' in ctx else 'above'} {bound}"
    return ""


def _example(loc: list[str]) -> str:
    """A corrected example for a field that has a default, e.g. '; fix: e.g. shards: 4'."""
    model: Any = Study
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        if field is not None:
            model = _model_of(field.annotation)
        if model is None:
            return ""
    field = model.model_fields.get(loc[-1]) if loc else None
    if field is None or field.is_required():
        return ""
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return ""
    return f"; fix: e.g. {loc[-1]}: {json.dumps(default, default=str)}"


def _known_keys(loc: list[str]) -> list[str]:
    """Field names accepted at a location of the study, for 'did you mean' hints."""
    model: Any = Study
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:  # a concept-set name or a list index: same model below it
            continue
        model = _model_of(field.annotation)
        if model is None:
            return []
    return sorted((f.alias or name) for name, f in model.model_fields.items())


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the study file, generated from the typed model."""
    schema = Study.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cohortflow study"
    return schema
