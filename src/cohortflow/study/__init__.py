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
from typing import Annotated, Any

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from cohortflow.errors import StudySpecError
from cohortflow.privacy import DEFAULT_MIN_CELL_COUNT
from cohortflow.study import _circe, _problems
from cohortflow.study._analyses import (
    ANALYSIS_ID,
    NAME,
    NAME_PART,
    SEPARATOR,
    Analysis,
    AnalysisGrid,
    Matching,
    Name,
    OutcomeSpec,
    RiskWindow,
    analysis_id,
)
from cohortflow.study._base import SpecModel
from cohortflow.study._cohort import (
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
from cohortflow.study._digests import file_digest as _file_digest
from cohortflow.study._features import (
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
from cohortflow.study._genomics import (
    DOSAGE,
    MISSING_CODE,
    PGX_PREFIX,
    PHENOTYPE_SLUGS,
    VARIANT_PREFIX,
    GenomicFeatures,
    Genomics,
    PgxCriterion,
    phenotype_slug,
)
from cohortflow.study._mart import MartPolicy
from cohortflow.study._model import Logistic, Model, Range
from cohortflow.study._omics import OMICS_PREFIX, OMICS_VALUE, OmicsFeatures, omics_code
from cohortflow.study._source import (
    PASSWORD_FIX,
    MedsSource,
    OmopCdm,
    Source,
    SynthSource,
    holds_password,
    redact,
)
from cohortflow.study._yaml import MAX_YAML_NODES, read_yaml

SINGLE_TARGET = "cohort"
"""The target cohort's name in a single-analysis study (``cohort:``), as the sweep's
``cohorts`` axis has always called it."""
SINGLE_TIME_AT_RISK = "tar"
"""The time at risk's name in a single-analysis study (``cohort.outcome.time_at_risk``)."""

DEMO_STUDY = "demo.yaml"
"""File name of the embedded default study in ``seeds/studies``."""

__all__ = [
    "AGGREGATION_ORDER",
    "ALL_CODES",
    "ANALYSIS_ID",
    "DEMO_STUDY",
    "DOSAGE",
    "MAX_YAML_NODES",
    "MISSING_CODE",
    "NAME_PART",
    "OMICS_PREFIX",
    "OMICS_VALUE",
    "PASSWORD_FIX",
    "PGX_PREFIX",
    "PHENOTYPE_SLUGS",
    "SEPARATOR",
    "SINGLE_TARGET",
    "SINGLE_TIME_AT_RISK",
    "STATIC_WINDOW",
    "VALUE_AGGREGATIONS",
    "VARIANT_PREFIX",
    "AgeRange",
    "Analysis",
    "AnalysisGrid",
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
    "GenomicFeatures",
    "Genomics",
    "Group",
    "InclusionRule",
    "Logistic",
    "MartPolicy",
    "Matching",
    "MedsSource",
    "Model",
    "Occurrence",
    "OmicsFeatures",
    "OmopCdm",
    "Outcome",
    "OutcomeSpec",
    "PgxCriterion",
    "Range",
    "RiskWindow",
    "RuleItem",
    "SequenceFeatures",
    "Source",
    "SpecModel",
    "Study",
    "SynthSource",
    "TimeAtRisk",
    "Washout",
    "Window",
    "analysis_id",
    "content_digest",
    "demo_study_path",
    "feature_key",
    "holds_password",
    "json_schema",
    "load_study",
    "omics_code",
    "parse_study",
    "phenotype_slug",
    "read_yaml",
    "redact",
]


class Study(SpecModel):
    """A whole study: data source, cohorts, outcomes, analyses, features, model, privacy.

    Two forms: one target cohort with its outcome label (``cohort:``, one analysis), or a
    cohort library crossed into many analyses (``cohorts:``, ``outcomes:``,
    ``times_at_risk:``, ``analyses:``).  Downstream code reads either through
    :meth:`library`, :meth:`analysis_list` and :meth:`risk_windows`, never the fields.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Study name; names the results.")
    seed: int = Field(42, description="Study seed for splits and models.")
    shards: int = Field(4, ge=1, le=4096, description="Event-store shards (by subject).")
    min_cell_count: int = Field(
        DEFAULT_MIN_CELL_COUNT, ge=1,
        description="Counts below this are suppressed in every shared output.")
    source: Source
    concept_sets: dict[str, ConceptSet] = Field(min_length=1)
    cohort: Cohort | None = Field(
        None, description="One target cohort with its outcome (a study of one analysis); "
                          "or use cohorts, outcomes, times_at_risk and analyses.")
    cohorts: dict[Name, Annotated[Cohort, _circe.OrCirce()]] = Field(
        {}, description="The cohort library: target (and outcome) cohorts by name; an entry "
                        "{circe: PATH} reads an ATLAS / Circe cohort definition's JSON.")
    outcomes: dict[Name, OutcomeSpec] = Field(
        {}, description="Outcomes by name: a concept set ({concept_set: gi_bleed}) or a "
                        "cohort of the library ({cohort: er_visit}).")
    times_at_risk: dict[Name, RiskWindow] = Field(
        {}, description="Times at risk by name, with their population settings.")
    analyses: list[AnalysisGrid] = Field(
        [], description="Targets x outcomes x times at risk, each entry a cross product.")
    genomics: Genomics | None = Field(
        None, description="Genotypes (VCF/BCF converted to VCF Zarr, or a VCF Zarr store) "
                          "linked to persons: for pgx criteria and features.genomics.")
    features: Features = Features()
    model: Model = Model()
    mart: MartPolicy = Field(
        MartPolicy(), description="How `cohortflow export-mart` de-identifies a cohort's "
                                  "OMOP CDM subset (safe defaults).")
    share_with_group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Unix group that may read (never write) the results tree; without "
                    "it the results are readable by their owner only.")

    def _unknown_concept_sets(self) -> list[InitErrorDetails]:
        """Every concept set the cohorts, the outcomes and the features name that is not
        defined, each at its place, with the closest defined name."""
        refs = [*self._concept_set_refs(),
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
        return errors

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        """``cohort:`` or the library keys, not both and not neither."""
        if not isinstance(data, dict):
            return data
        # an empty or null key is not given: a dumped study holds both forms' keys
        library = [k for k in ("cohorts", "outcomes", "times_at_risk", "analyses")
                   if data.get(k)]
        single = data.get("cohort") is not None
        if single and library:
            raise PydanticCustomError(
                "two_forms", f"give cohort (one analysis) or {', '.join(library)} (a cohort "
                "library), not both; fix: move the cohort under cohorts: and its outcome "
                "under outcomes:")
        if not single:
            missing = [k for k in ("cohorts", "outcomes", "times_at_risk", "analyses")
                       if not data.get(k)]
            if missing:
                raise PydanticCustomError(
                    "no_cohort", f"no cohort: give cohort (one analysis), or all of cohorts, "
                    f"outcomes, times_at_risk and analyses (missing: {', '.join(missing)})")
        return data

    def _concept_set_refs(self) -> list[tuple[str, str]]:
        if self.cohort is not None:
            return list(self.cohort.concept_set_refs())
        refs = [ref for name, cohort in self.cohorts.items()
                for ref in cohort.concept_set_refs(f"cohorts.{name}")]
        refs += [(f"outcomes.{name}.concept_set", o.concept_set)
                 for name, o in self.outcomes.items() if o.concept_set is not None]
        return refs

    @model_validator(mode="after")
    def _names_known(self) -> Study:
        """Every concept set, cohort, outcome and time at risk the study names is defined,
        and each form has what it needs: all problems in one error, each at its place,
        with the closest defined name."""
        errors = self._unknown_concept_sets()

        def problem(kind: str, loc: tuple[str | int, ...], name: str, message: str) -> None:
            errors.append(InitErrorDetails(type=PydanticCustomError(kind, message),
                                           loc=loc, input=name))

        def unknown(what: str, key: str, loc: tuple[str | int, ...], name: str,
                    known: list[str]) -> None:
            guess = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            if key == "outcomes" and name in self.cohorts:  # a cohort named as an outcome
                hint = f"'{name}' is a cohort: add {name}: {{cohort: {name}}} under outcomes; "
            problem(f"unknown_{key}", loc, name,
                    f"unknown {what} '{name}'; {hint}defined: {', '.join(known) or 'none'}; "
                    f"fix: name one of them, or define it under {key}")

        if self.cohort is not None and self.cohort.outcome is None:
            problem("missing_outcome", ("cohort", "outcome"), "",
                    "a study's cohort needs its outcome; fix: cohort: {..., outcome: "
                    "{concept_set: NAME}}")
        if self.cohort is not None and self.cohort.outcome is not None:
            # the outcome's concept set names its cohort and the analysis (folders, ids)
            name = self.cohort.outcome.concept_set
            if name is not None and (name == SINGLE_TARGET or not re.fullmatch(NAME, name)):
                problem("outcome_name", ("cohort", "outcome", "concept_set"), name,
                        f"the outcome's concept set '{name}' names the outcome's cohort and "
                        f"the analysis ({SINGLE_TARGET}__{name}__{SINGLE_TIME_AT_RISK}): "
                        "letters, digits, '-' and single '_' between them, and not "
                        f"'{SINGLE_TARGET}'; fix: rename the concept set, e.g. "
                        f"'{_a_name(name)}'")
        for name, cohort in self.cohorts.items():
            if cohort.outcome is not None:
                problem("library_outcome", ("cohorts", name, "outcome"), "",
                        "a cohort of the library has no outcome; fix: name it under "
                        "outcomes: and cross it with the cohort in analyses:")
        cohort_names = sorted(self.cohorts)
        for name, outcome in self.outcomes.items():
            if outcome.cohort is not None and outcome.cohort not in self.cohorts:
                unknown("cohort", "cohorts", ("outcomes", name, "cohort"), outcome.cohort,
                        cohort_names)
            if outcome.cohort is None and name in self.cohorts:
                problem("outcome_name", ("outcomes", name), name,
                        f"outcome '{name}' has the name of a cohort; fix: rename the outcome, "
                        f"or make it that cohort ({name}: {{cohort: {name}}})")
        libraries = {"targets": ("cohort", "cohorts", cohort_names),
                     "outcomes": ("outcome", "outcomes", sorted(self.outcomes)),
                     "times_at_risk": ("time at risk", "times_at_risk",
                                       sorted(self.times_at_risk))}
        sweep = self.model.sweep
        if self.cohort is None and sweep is not None:  # the analyses cross them instead
            for axis, given in (("outcomes", sweep.outcomes), ("cohorts", sweep.cohorts)):
                if given and given != [SINGLE_TARGET]:
                    problem("sweep_axis", ("model", "sweep", axis), ", ".join(given),
                            f"a study with analyses crosses {axis} under analyses:; fix: "
                            f"remove model.sweep.{axis} and name them in analyses:")
        matched: dict[str, tuple[int, Matching | None]] = {}  # analysis -> first entry's
        for i, grid in enumerate(self.analyses):
            for axis, names in grid.axes().items():
                what, key, known = libraries[axis]
                for j, name in enumerate(names):
                    if name not in known:
                        unknown(what, key, ("analyses", i, *grid.place(axis, j)), name, known)
            for design in grid.designs():
                first, matching = matched.setdefault(analysis_id(*design), (i, grid.matching))
                if matching != grid.matching:
                    problem("matching_conflict", ("analyses", i, "matching"),
                            analysis_id(*design),
                            f"analysis '{analysis_id(*design)}' is also in analyses.{first} "
                            "with other matching settings; fix: give it one matching block "
                            "(or list it once)")
                    break
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_validator(mode="after")
    def _genotypes_given(self) -> Study:
        """A pgx criterion or genomic features need the study's genotypes (``genomics:``);
        genotypes without files are a synthetic source's, which must plant them."""
        errors: list[InitErrorDetails] = []
        if self.genomics is None:
            cohorts = ([("cohort", self.cohort)] if self.cohort is not None
                       else [(f"cohorts.{n}", c) for n, c in self.cohorts.items()])
            places = [where for where, c in cohorts if c.pgx_criteria()]
            if self.features.genomics is not None:
                places.append("features.genomics")
            for where in places:
                errors.append(InitErrorDetails(type=PydanticCustomError(
                    "no_genotypes", "reads pharmacogene phenotypes, but the study declares no "
                    "genotypes; fix: add genomics: {vcf: [FILE.vcf.gz], linkage: FILE.csv}"),
                    loc=tuple(where.split(".")), input=None))
        elif self.genomics.from_synth and (self.source.synth is None
                                           or self.source.synth.genotypes is None):
            errors.append(InitErrorDetails(type=PydanticCustomError(
                "no_genotypes", "no vcf or zarr given, and the source plants no genotypes; "
                "fix: genomics: {vcf: [FILE.vcf.gz], linkage: FILE.csv}, or source: {synth: "
                "{..., genotypes: {share: 0.3}}}"), loc=("genomics",), input=None))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_serializer(mode="wrap")
    def _omit_no_genomics(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # left out of dumps when unused, so studies written before it keep their digests
        data: dict[str, Any] = handler(self)
        if data.get("genomics") is None:
            data.pop("genomics", None)
        return data

    @model_validator(mode="after")
    def _feature_sets_built(self) -> Study:
        """Every window and aggregation a feature set names is one the features build."""
        if self.model.sweep is not None:
            self.features.check_selections(self.model.sweep.feature_sets,
                                           ("model", "sweep", "feature_sets"))
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _circe_cohorts(cls, data: Any, handler: ModelWrapValidatorHandler[Study],
                       info: ValidationInfo) -> Study:
        """Read each library entry ``circe: PATH`` (relative to the study file's folder) into
        its cohort and concept sets; a refused one is reported with the study's other
        problems.  Defined after the other validators, so it wraps them all."""
        if not isinstance(data, dict):
            return handler(data)
        folder = (info.context or {}).get("folder")
        data, problems, refused = _circe.resolve(data, folder)
        if not problems:
            return handler(data)
        try:
            handler(data)
        except ValidationError as exc:
            raise _circe.merged(cls.__name__, problems, refused, exc) from None
        raise _circe.merged(cls.__name__, problems, refused, None)

    _folder: Path = PrivateAttr(default_factory=Path.cwd)

    # -- the cohort library and its analyses (both forms) -------------------------------------
    def outcome_specs(self) -> dict[str, OutcomeSpec]:
        """Every outcome by name (a single-analysis study's is named after its concept set,
        or ``death``)."""
        if self.cohort is None:
            return dict(self.outcomes)
        out = self._single_outcome()
        spec = OutcomeSpec(concept_set=out.concept_set, domain=out.domain,
                           first_occurrence=out.first_occurrence, value=out.value,
                           units=out.units)
        return {out.concept_set or "death": spec}

    def _single_outcome(self) -> Outcome:
        assert self.cohort is not None and self.cohort.outcome is not None  # validated
        return self.cohort.outcome

    def risk_windows(self) -> dict[str, RiskWindow]:
        """Every time at risk by name, with its population settings."""
        if self.cohort is None:
            return dict(self.times_at_risk)
        out = self._single_outcome()
        return {SINGLE_TIME_AT_RISK: out.risk_window()}

    def outcome_cohort(self, outcome: str) -> str:
        """The library cohort whose rows are ``outcome``'s dates."""
        spec = self.outcome_specs()[outcome]
        return spec.cohort if spec.cohort is not None else outcome

    def library(self) -> dict[str, Cohort]:
        """Every cohort by name, outcome label left out: the study's cohorts and one cohort
        of events per concept-set outcome (named after the outcome)."""
        cohorts = ({SINGLE_TARGET: self.cohort.without_outcome()} if self.cohort is not None
                   else dict(self.cohorts))
        for name, spec in self.outcome_specs().items():
            if spec.cohort is None:
                cohorts[name] = Cohort.of_events(spec.criterion())
        return cohorts

    _analyses: tuple[tuple[int, ...], dict[str, Analysis]] | None = PrivateAttr(None)

    def _analysis_index(self) -> dict[str, Analysis]:
        """Every analysis by id, in spec order; computed once per study (a workflow asks
        for it once per job while it builds the DAG).  The cache is keyed by the fields it
        reads, so a ``model_copy(update=...)`` of them never sees a stale one."""
        key = (id(self.cohort), id(self.outcomes), id(self.analyses))
        if self._analyses is not None and self._analyses[0] == key:
            return self._analyses[1]
        specs = self.outcome_specs()
        grids = (self.analyses if self.cohort is None else [AnalysisGrid(
            target=SINGLE_TARGET, outcome=next(iter(specs)),
            time_at_risk=SINGLE_TIME_AT_RISK)])
        out: dict[str, Analysis] = {}
        for grid in grids:
            for target, outcome, tar in grid.designs():
                aid = analysis_id(target, outcome, tar)
                if aid not in out:
                    cohort = specs[outcome].cohort
                    out[aid] = Analysis(aid, target, outcome, tar,
                                        cohort if cohort is not None else outcome,
                                        grid.matching)

        self._analyses = (key, out)
        return out

    def analysis_list(self) -> list[Analysis]:
        """Every analysis of the study, once each, in spec order."""
        return list(self._analysis_index().values())

    def analysis(self, analysis: str) -> Analysis:
        """One analysis by id."""
        found = self._analysis_index()
        if analysis not in found:
            raise StudySpecError(f"unknown analysis '{analysis}'; this study has: "
                                 f"{', '.join(found)}")
        return found[analysis]

    def targets(self) -> list[str]:
        """Every target cohort of an analysis, sorted (one feature tensor each)."""
        return sorted({a.target for a in self.analysis_list()})

    def cohorts_used(self) -> list[str]:
        """Every library cohort an analysis reads, as target or outcome, sorted."""
        return sorted({name for a in self.analysis_list()
                       for name in (a.target, a.outcome_cohort)})

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

    def _resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self._folder / path

    def genotype_files(self) -> list[Path]:
        """The VCF/BCF files to convert (``genomics.vcf``), resolved against the study
        file's folder; none for a store or a synthetic source's genotypes (the synth step's
        output)."""
        return [] if self.genomics is None else [self._resolve(p) for p in self.genomics.vcf]

    def genotype_store(self) -> Path | None:
        """The VCF Zarr store given as ``genomics.zarr`` (resolved), or None: converted."""
        g = self.genomics
        return None if g is None or g.zarr is None else self._resolve(g.zarr)

    def linkage_file(self) -> Path | None:
        """The linkage table ``genomics.linkage`` (resolved); None: the synthetic source's."""
        g = self.genomics
        return None if g is None or g.linkage is None else self._resolve(g.linkage)

    def genomics_digest(self) -> str:
        """The conversion's key (or the given store's check): the genotype files' content
        (a store: its files' paths and contents; each file hashed once per content, see
        :mod:`cohortflow.study._digests`), the partitions and the reference's contigs, so a
        replaced VCF of the same name reruns it, and editing anything else of the section
        does not."""
        g = self.genomics
        if g is None:
            return content_digest(None)
        store = self.genotype_store()
        files = [*self.genotype_files(), *([store] if store is not None else [])]
        key: dict[str, Any] = {"partitions": g.partitions,
                               "files": [_file_digest(f) for f in files]}
        if g.reference is not None:  # left out when unset: the keys of studies before it
            key["reference"] = list(g.reference_contigs() or ())
        return content_digest(key)

    def linkage_digest(self) -> str:
        """The linkage step's key: the genotypes' and the linkage table's content."""
        link = self.linkage_file()
        return content_digest({"genotypes": self.genomics_digest(),
                               "linkage": None if link is None else _file_digest(link)})

    def phenotypes_digest(self) -> str:
        """The phenotype step's key: the linked genotypes' and how absent sites count."""
        g = self.genomics
        return content_digest({"linkage": self.linkage_digest(),
                               "absent": None if g is None else g.absent})

    def variants_digest(self) -> str:
        """The variant-dosage step's key: the linked genotypes' and the declared variants."""
        spec = self.features.genomics
        return content_digest({"linkage": self.linkage_digest(),
                               "variants": [] if spec is None else spec.variants})

    def digest(self, exclude: frozenset[str] = frozenset()) -> str:
        """A stable hash of the study's content, independent of key order and comments."""
        # who may read the results, and how a mart would be exported, change no byte of them
        return content_digest(self.model_dump(mode="json",
                                              exclude={*exclude, "share_with_group", "mart"}))

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

    def cohort_digest(self, name: str) -> str:
        """A cohort shard's key: the cohort's definition and the concept sets it resolves
        (the vocabulary is the event store's ``codes.parquet``, an input file)."""
        cohort = self.library()[name]
        names = sorted({n for _, n in cohort.concept_set_refs()})
        return content_digest({
            "cohort": cohort.model_dump(mode="json"),
            "concept_sets": {n: self.concept_sets[n].model_dump(mode="json") for n in names}})

    def labels_digest(self, analysis: str) -> str:
        """An analysis's labels' key: its time at risk with the population settings (the
        target's and the outcome cohort's rows are input files)."""
        a = self.analysis(analysis)
        return content_digest({"analysis": a.id, "outcome_cohort": a.outcome_cohort,
                               "time_at_risk": self.risk_windows()[a.time_at_risk]
                               .model_dump(mode="json")})

    def matching_digest(self, analysis: str) -> str:
        """A matched analysis's matching key: its matching settings and the study seed that
        fixes the draw (its labels, cohort rows and the store are input files)."""
        a = self.analysis(analysis)
        return content_digest({"analysis": a.id, "seed": self.seed, "matching":
                               a.matching.model_dump(mode="json") if a.matching else None})

    def features_digest(self, target: str) -> str:
        """A target's feature tensor's key: the feature spec and the concept sets it turns
        into features (the cohort's rows are input files); also the tensor's
        ``features_digest`` attribute.  The study and target names are written into the
        tensor's attributes."""
        names = sorted(set(self.features.concept_sets) & set(self.concept_sets))
        key: dict[str, Any] = {
            "name": self.name, "target": target,
            "features": self.features.model_dump(mode="json"),
            "concept_sets": {n: self.concept_sets[n].model_dump(mode="json") for n in names}}
        if self.features.omics:  # the stores' and linkages' content (left out when none)
            key["omics"] = [[_file_digest(p) for p in self.omics_paths(block.name)]
                            for block in self.features.omics]
        return content_digest(key)

    def omics_paths(self, block: str) -> tuple[Path, Path]:
        """An omics block's store and linkage table, resolved against the study file's
        folder."""
        [spec] = [b for b in self.features.omics if b.name == block]
        return self._resolve(spec.store), self._resolve(spec.linkage)

    def selection_digest(self) -> str:
        """The model step's key: how the best configuration is picked.  The leaderboard
        holds scores, no counts, so ``min_cell_count`` is not in it."""
        return content_digest({"select_by": self.model.select_by})

    def display_digest(self) -> str:
        """The key of steps that only suppress for display (data quality, export): the
        minimum cell count."""
        return content_digest({"min_cell_count": self.min_cell_count})

    def report_digest(self) -> str:
        """The report's key: the whole study, since the page prints the study's digest
        (and its display settings: ``min_cell_count``, the model selection metric)."""
        return self.digest()


def _a_name(name: str) -> str:
    """A name like ``name`` that fits :data:`NAME` and is not the single form's target."""
    fitted = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]", "_", name)).strip("_") or "outcome"
    return f"{fitted}_outcome" if fitted == SINGLE_TARGET else fitted


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


def load_study(path: str | Path | None = None) -> Study:
    """Read and validate a study file; ``None`` loads the embedded demo study.

    Every problem is reported at once, each naming its field and a fix.  Relative paths in
    it (the source, concept-set seeds, library cohorts' circe JSON files) are read from the
    study file's folder.
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
    _check_genotype_paths(study, path)
    return study


def _check_genotype_paths(study: Study, path: Path) -> None:
    """Every file the genomics section names exists: refused now, naming its field, rather
    than by a workflow that cannot find an input."""
    g = study.genomics
    given: list[tuple[str, Path, Path]] = []
    if g is not None:
        given += [(f"genomics.vcf.{i}", v, p) for i, (v, p) in enumerate(
            zip(g.vcf, study.genotype_files(), strict=True))]
        for name, value, resolved in (("genomics.zarr", g.zarr, study.genotype_store()),
                                      ("genomics.linkage", g.linkage, study.linkage_file())):
            if value is not None and resolved is not None:
                given.append((name, value, resolved))
    for i, block in enumerate(study.features.omics):
        store, link = study.omics_paths(block.name)
        given += [(f"features.omics.{i}.store", block.store, store),
                  (f"features.omics.{i}.linkage", block.linkage, link)]
    missing = [(name, value, resolved) for name, value, resolved in given
               if not resolved.exists()]
    if missing:
        lines = [f"  - {name}: {value}: no such file ({resolved}); fix: correct the path "
                 "(a relative path is read from the study file's folder)"
                 for name, value, resolved in missing]
        raise StudySpecError(f"{path}: {len(missing)} problem(s) in the study file:\n"
                             + "\n".join(lines))


def parse_study(raw: dict[str, Any], origin: str = "<study>",
                folder: Path | None = None) -> Study:
    """Validate a study given as a mapping, turning pydantic errors into one clear message.

    ``folder`` is where relative concept-set seed and circe JSON paths are read from
    (default: the current directory).

    >>> parse_study({"name": "x", "sed": 1}, origin="s.yaml")
    Traceback (most recent call last):
    ...
    cohortflow.errors.StudySpecError: s.yaml: ...
    """
    try:
        return Study.model_validate(raw, context={"folder": folder})
    except ValidationError as exc:
        raise StudySpecError(_problems.message(exc, origin, Study)) from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the study file, generated from the typed model."""
    schema = Study.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cohortflow study"
    return schema
