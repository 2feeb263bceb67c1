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
from pydantic_core import InitErrorDetails, PydanticCustomError

from cohortflow.errors import StudySpecError
from cohortflow.spec._base import SpecModel
from cohortflow.spec._cohort import (
    AgeRange,
    Cohort,
    ConceptRef,
    ConceptSet,
    Count,
    Criterion,
    Entry,
    Exit,
    Group,
    InclusionRule,
    Occurrence,
    Outcome,
    RuleItem,
    TimeAtRisk,
    Washout,
    Window,
)
from cohortflow.spec._features import (
    AGGREGATION_ORDER,
    ALL_CODES,
    STATIC_WINDOW,
    VALUE_AGGREGATIONS,
    FeatureKey,
    Features,
    FeatureWindow,
    SequenceFeatures,
    feature_key,
)
from cohortflow.spec._model import Logistic, Model, Range
from cohortflow.spec._source import (
    PASSWORD_FIX,
    MedsSource,
    OmopCdm,
    Source,
    SynthSource,
    holds_password,
    redact,
)

DEMO_STUDY = "demo.yaml"
"""File name of the embedded default study in ``seeds/studies``."""

__all__ = [
    "AGGREGATION_ORDER",
    "ALL_CODES",
    "DEMO_STUDY",
    "MAX_YAML_NODES",
    "PASSWORD_FIX",
    "STATIC_WINDOW",
    "VALUE_AGGREGATIONS",
    "AgeRange",
    "Cohort",
    "ConceptRef",
    "ConceptSet",
    "Count",
    "Criterion",
    "Entry",
    "Exit",
    "FeatureKey",
    "FeatureWindow",
    "Features",
    "Group",
    "InclusionRule",
    "Logistic",
    "MedsSource",
    "Model",
    "Occurrence",
    "OmopCdm",
    "Outcome",
    "Range",
    "RuleItem",
    "SequenceFeatures",
    "Source",
    "SpecModel",
    "Study",
    "SynthSource",
    "TimeAtRisk",
    "Washout",
    "Window",
    "content_digest",
    "demo_study_path",
    "feature_key",
    "holds_password",
    "json_schema",
    "load_study",
    "parse_study",
    "read_yaml",
    "redact",
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
    share_with_group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Unix group that may read (never write) the results tree; without "
                    "it the results are readable by their owner only.")

    @model_validator(mode="after")
    def _concept_sets_exist(self) -> Study:
        """Every concept set the cohort and the features name is defined: all unknown
        names at once, each at its place, with the closest defined name."""
        refs = [*self.cohort.concept_set_refs(),
                *((f"features.concept_sets.{i}", name)
                  for i, name in enumerate(self.features.concept_sets))]
        known = sorted(self.concept_sets)
        errors: list[InitErrorDetails] = []
        for where, name in refs:
            if name in self.concept_sets:
                continue
            guess = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            message = (f"unknown concept set '{name}'; {hint}defined: {', '.join(known)}; "
                       "fix: name one of them, or define it under concept_sets")
            errors.append(InitErrorDetails(
                type=PydanticCustomError("unknown_concept_set", message),
                loc=tuple(where.split(".")), input=name))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_validator(mode="after")
    def _feature_sets_built(self) -> Study:
        """Every window and aggregation a feature set names is one the features build."""
        if self.model.sweep is not None:
            self.features.check_selections(self.model.sweep.feature_sets,
                                           ("model", "sweep", "feature_sets"))
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
        # who may read the results changes no byte of them
        return content_digest(self.model_dump(mode="json",
                                              exclude={*exclude, "share_with_group"}))

    # Rerun keys: one per step, each covering exactly the parts of the study that step
    # reads (its files are Snakemake inputs and need no key).  Editing a part reruns the
    # steps that read it, and, through their outputs, the steps downstream of them.

    def synth_digest(self) -> str:
        """The synth step's key: the generator's settings (``source.synth``)."""
        return content_digest({"synth": self.source.model_dump(mode="json")["synth"]})

    def ingest_digest(self) -> str:
        """The ingest's key: the source (format, location, schema), the shard count and the
        dataset name written into the store.  ``min_cell_count`` is not in it: the store's
        data-quality record keeps exact counts, suppressed when they are shared."""
        return content_digest({"name": self.name, "shards": self.shards,
                               "source": self.source.model_dump(mode="json")})

    def cohort_digest(self) -> str:
        """A cohort shard's key: the cohort definition and the concept sets it resolves
        (the vocabulary is the event store's ``codes.parquet``, an input file)."""
        names = sorted({name for _, name in self.cohort.concept_set_refs()})
        return content_digest({
            "cohort": self.cohort.model_dump(mode="json"),
            "concept_sets": {n: self.concept_sets[n].model_dump(mode="json") for n in names}})

    def features_digest(self) -> str:
        """The feature tensor's key: the feature spec and the concept sets it turns into
        features (the cohort's rows are input files); also the tensor's ``features_digest``
        attribute.  The study name is written into the tensor's attributes."""
        names = sorted(set(self.features.concept_sets) & set(self.concept_sets))
        return content_digest({
            "name": self.name, "features": self.features.model_dump(mode="json"),
            "concept_sets": {n: self.concept_sets[n].model_dump(mode="json") for n in names}})

    def display_digest(self) -> str:
        """The key of steps that only suppress for display (data quality, export): the
        minimum cell count."""
        return content_digest({"min_cell_count": self.min_cell_count})

    def report_digest(self) -> str:
        """The report's key: the whole study, since the page prints the study's digest
        (and its display settings: ``min_cell_count``, the model selection metric)."""
        return self.digest()


def content_digest(value: Any) -> str:
    """A 16-hex-digit hash of a JSON value, independent of key order.

    >>> content_digest({"a": 1, "b": [2]}) == content_digest({"b": [2], "a": 1})
    True
    """
    canonical = json.dumps(value, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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


MAX_YAML_NODES = 100_000
"""Most values (scalars, lists, mappings) a study file may hold once its aliases are
expanded: far above any real study, far below what a few nested aliases (an "alias
bomb") expand to."""
MAX_PROBLEMS = 20
"""Problems listed one by one in a validation error; the rest are counted."""
MAX_SHOWN = 80
"""Characters of a received value shown in a message."""


class _StudyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (naming both lines)."""

    origin = "<study>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # '<<' merges may be overridden by the mapping's own keys
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first:
                raise StudySpecError(
                    f"{self.origin}: key '{key}' is given twice in one mapping (lines "
                    f"{first[key]} and {line}); YAML would silently keep only the last; "
                    "fix: delete one of them or merge their contents")
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """Values ``node`` holds once every alias is expanded, without expanding them: an
    alias is the same node object, so each distinct node is counted once, by multiplication.
    A node that contains itself (a recursive alias) counts as unbounded."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_:
        return MAX_YAML_NODES + 1
    open_.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, open_) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, open_) + _expanded_size(v, memo, open_)
                    for k, v in node.value)
    open_.discard(key)
    memo[key] = min(size, MAX_YAML_NODES + 1)  # stay small: bombs multiply
    return memo[key]


def read_yaml(text: str, origin: str) -> Any:
    """Parse a study file's text: safe YAML, no key given twice, at most
    :data:`MAX_YAML_NODES` values once aliases are expanded (an alias bomb is refused
    before it is expanded).

    >>> read_yaml("a: 1\\nb: [x, y]\\n", "s.yaml")
    {'a': 1, 'b': ['x', 'y']}
    >>> read_yaml("name: a\\nseed: 1\\nname: b\\n", "s.yaml")
    Traceback (most recent call last):
    ...
    cohortflow.errors.StudySpecError: s.yaml: key 'name' is given twice in one mapping (lines 1 \
and 3); YAML would silently keep only the last; fix: delete one of them or merge their contents
    """
    loader = _StudyLoader(text)
    loader.origin = origin
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_YAML_NODES:
            raise StudySpecError(
                f"{origin}: the file expands to more than {MAX_YAML_NODES:,} values once its "
                "aliases (*name) are expanded, or an alias refers to itself; a study needs far "
                "fewer; fix: write the values out, or use each alias only where one copy is "
                "meant")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise StudySpecError(f"{origin}: not valid YAML: {exc}") from None
    except RecursionError:
        raise StudySpecError(f"{origin}: values nested too deeply; fix: a study file is a few "
                             "levels of mappings and lists") from None
    finally:
        loader.dispose()


def load_study(path: str | Path | None = None) -> Study:
    """Read and validate a study file; ``None`` loads the embedded demo study.

    Every problem is reported at once, each naming its field and a fix.  Relative paths in
    it (the source, concept-set seeds) are read from the study file's folder.
    """
    path = Path(path) if path is not None else demo_study_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudySpecError(f"{path}: study file not found; fix: give the path of the "
                             "study's YAML file") from None
    except IsADirectoryError:
        raise StudySpecError(f"{path}: is a directory; fix: give the path of the study's YAML "
                             f"file, e.g. {path / 'study.yaml'}") from None
    except UnicodeDecodeError as exc:
        raise StudySpecError(f"{path}: not UTF-8 text (byte {exc.start}); fix: save the study "
                             "file as UTF-8") from None
    except OSError as exc:
        raise StudySpecError(f"{path}: cannot read the study file ({exc.strerror}); fix: give "
                             "a readable YAML file") from None
    raw = read_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise StudySpecError(f"{path}: a study file is a YAML mapping with keys such as 'name'")
    folder = path.resolve().parent
    study = parse_study(raw, origin=str(path), folder=folder)
    # Relative source paths mean "next to the study file", whatever directory a run uses;
    # the folder is kept beside the model so the study's digest does not depend on it.
    study._folder = folder
    return study


def parse_study(raw: dict[str, Any], origin: str = "<study>",
                folder: Path | None = None) -> Study:
    """Validate a study given as a mapping, turning pydantic errors into one clear message.

    ``folder`` is where relative concept-set seed paths are read from (default: the
    current directory).

    >>> parse_study({"name": "x", "sed": 1}, origin="s.yaml")
    Traceback (most recent call last):
    ...
    cohortflow.errors.StudySpecError: s.yaml: ...
    """
    try:
        return Study.model_validate(raw, context={"folder": folder})
    except ValidationError as exc:
        errors = exc.errors()
        lines = [_describe(err) for err in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            lines.append(f"  - ... and {len(errors) - MAX_PROBLEMS} more")
        raise StudySpecError(
            f"{origin}: {len(errors)} problem(s) in the study file:\n" + "\n".join(lines)
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
    if len(shown) > MAX_SHOWN:  # a value may be huge (many aliases): show its start only
        shown = shown[:MAX_SHOWN] + f"... ({len(shown):,} characters)"
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
