"""The features of a study: windows, aggregations, demographics, sequences."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from cohortflow.study._base import SpecModel
from cohortflow.study._genomics import DOSAGE, GenomicFeatures
from cohortflow.study._omics import OMICS_VALUE, OmicsFeatures

ALL_CODES = "*"
"""In ``domains``: every code of the event store."""
Demographic = Literal["age", "sex", "race", "ethnicity"]
Aggregation = Literal[
    "count", "present", "days_since_last", "first", "last", "min", "max", "mean", "sum",
    "value_count",
]
VALUE_AGGREGATIONS: tuple[Aggregation, ...] = (
    "first", "last", "min", "max", "mean", "sum", "value_count"
)
"""Aggregations of numeric values; only codes that carry a value get them."""
AGGREGATION_ORDER: tuple[Aggregation, ...] = (
    "count", "present", "days_since_last", "first", "last", "min", "max", "mean", "sum",
    "value_count",
)
"""The order of the aggregations along the feature axis, whatever the study lists."""
TensorAggregation = Literal[Aggregation, "age_years", "dosage", "value"]
"""An aggregation on the feature axis: one of the study's, ``age_years`` (demographics),
``dosage`` (a variant's, ``features.genomics``) or ``value`` (an omics feature's,
``features.omics``)."""
STATIC_WINDOW = "all"
"""The window of demographic features (age at index, sex, race, ethnicity)."""
KEY_SEPARATOR = "|"
"""Joins code, window and aggregation into a feature's key, ``CONDITION//317009|365d|count``."""
_WINDOW_LABEL = re.compile(r"(?:(\d+)d|all|(all|-\d+d)\.\.(-?\d+d))")

TensorLayout = Literal["auto", "dense", "sparse"]
"""How the subject × feature ``values`` tensor is stored: a dense Zarr array, per-shard CSR
arrays, or the one the features step's rule picks (:mod:`cohortflow.features._sparse`)."""

_DEFAULT_DOMAINS: list[str] = ["CONDITION", "DRUG", "PROCEDURE", "MEASUREMENT"]
_DEFAULT_DEMOGRAPHICS: list[Demographic] = ["age", "sex"]
_DEFAULT_AGGREGATIONS: list[Aggregation] = ["count", "mean"]
_SEQUENCE_AGGREGATIONS: list[Aggregation] = ["count"]


class FeatureWindow(SpecModel):
    """Days relative to the index date, both ends inclusive, in whole calendar days.

    ``{start_days: -365, end_days: -31}`` covers the year before index except its last month;
    ``start_days`` left out means all history.  Windows never reach past the index day.
    On the feature axis a window is named by its :attr:`label`, which :meth:`parse` reads
    back, start and end included.
    """

    start_days: int | None = Field(
        None, le=0, description="First day (e.g. -365); left out = all history."
    )
    end_days: int = Field(0, le=0, description="Last day; 0 is the index day.")

    @model_validator(mode="after")
    def _ordered(self) -> FeatureWindow:
        if self.start_days is not None and self.start_days > self.end_days:
            raise ValueError(
                f"start_days ({self.start_days}) is after end_days ({self.end_days}); "
                "fix: windows: [{start_days: -365, end_days: -31}]"
            )
        return self

    @property
    def label(self) -> str:
        """The window's name on the feature axis: ``30d``, ``all`` or ``-365d..-31d``.

        >>> W = FeatureWindow
        >>> W(start_days=-30).label, W().label, W(start_days=-9, end_days=-2).label
        ('30d', 'all', '-9d..-2d')
        """
        if self.end_days == 0:
            return STATIC_WINDOW if self.start_days is None else f"{-self.start_days}d"
        start = STATIC_WINDOW if self.start_days is None else f"{self.start_days}d"
        return f"{start}..{self.end_days}d"

    @property
    def days(self) -> int | None:
        """Whole days the window covers; ``None`` for all history.

        >>> FeatureWindow(start_days=-365, end_days=-31).days, FeatureWindow().days
        (335, None)
        """
        return None if self.start_days is None else self.end_days - self.start_days + 1

    @classmethod
    def parse(cls, label: str) -> FeatureWindow:
        """The window a :attr:`label` names: ``30d``, ``all``, ``-365d..-31d``, ``all..-31d``.

        >>> FeatureWindow.parse("-365d..-31d")
        FeatureWindow(start_days=-365, end_days=-31)
        >>> FeatureWindow.parse("365")
        Traceback (most recent call last):
        ...
        ValueError: '365' is not a window label: write 'Nd' (the N days up to the index day, \
e.g. '365d'), 'all' (all history), or 'Sd..Ed' with S <= E < 0 (e.g. '-365d..-31d', 'all..-31d')
        """
        match = _WINDOW_LABEL.fullmatch(label) if isinstance(label, str) else None
        window = None
        if match is not None:
            days, start, end = match.groups()
            try:
                if days is not None:
                    window = cls(start_days=-int(days))
                elif end is None:
                    window = cls()
                else:
                    window = cls(start_days=None if start == STATIC_WINDOW else int(start[:-1]),
                                 end_days=int(end[:-1]))
            except ValidationError:
                window = None
        if window is None or window.label != label:
            canonical = f"; it is written '{window.label}'" if window is not None else ""
            raise ValueError(
                f"{label!r} is not a window label{canonical}: write 'Nd' (the N days up to "
                "the index day, e.g. '365d'), 'all' (all history), or 'Sd..Ed' with "
                "S <= E < 0 (e.g. '-365d..-31d', 'all..-31d')")
        return window




@dataclass(frozen=True)
class FeatureKey:
    """One feature of the tensor: a code, a window (start and end kept) and an aggregation.

    Its text form, the tensor's ``feature`` coordinate, joins the three with ``|``; the code
    comes first and may itself hold a ``|``, window labels and aggregations never do.

    >>> key = FeatureKey.parse("CONDITION//317009|-365d..-31d|count")
    >>> key.window.start_days, key.window.end_days, str(key)
    (-365, -31, 'CONDITION//317009|-365d..-31d|count')
    >>> FeatureKey.parse("CONDITION//317009|365d")
    Traceback (most recent call last):
    ...
    ValueError: 'CONDITION//317009|365d' is not a feature key: write code|window|aggregation, \
e.g. 'CONDITION//317009|365d|count'
    """

    code: str
    window: FeatureWindow
    aggregation: str

    def __str__(self) -> str:
        return feature_key(self.code, self.window.label, self.aggregation)

    @classmethod
    def parse(cls, text: str) -> FeatureKey:
        parts = text.rsplit(KEY_SEPARATOR, 2)
        if len(parts) != 3 or not parts[0]:
            raise ValueError(f"{text!r} is not a feature key: write code|window|aggregation, "
                             "e.g. 'CONDITION//317009|365d|count'")
        code, window, aggregation = parts
        if aggregation not in _TENSOR_AGGREGATIONS:
            raise ValueError(f"{text!r}: unknown aggregation {aggregation!r}; known: "
                             f"{', '.join(_TENSOR_AGGREGATIONS)}")
        return cls(code, FeatureWindow.parse(window), aggregation)


_TENSOR_AGGREGATIONS: tuple[str, ...] = (*AGGREGATION_ORDER, "age_years", DOSAGE,
                                         OMICS_VALUE)


def _window_label(label: str) -> str:
    FeatureWindow.parse(label)
    return label


WindowLabel = Annotated[str, AfterValidator(_window_label)]
"""A window named by its label on the feature axis (``30d``, ``all``, ``-365d..-31d``)."""


def feature_key(code: str, window: str, aggregation: str) -> str:
    """The text key of a feature from its code, window label and aggregation.

    >>> feature_key("MEDS_BIRTH", "all", "age_years")
    'MEDS_BIRTH|all|age_years'
    """
    return f"{code}{KEY_SEPARATOR}{window}{KEY_SEPARATOR}{aggregation}"


class SequenceFeatures(SpecModel):
    """A time-binned tensor, subject × time_bin × feature, for sequence models.

    Bins are ``bin_days`` whole days each, oldest first; the last bin ends on the index day.
    """

    bins: int = Field(12, ge=1, le=1000, description="Number of time bins.")
    bin_days: int = Field(30, ge=1, description="Days per bin (30 ≈ monthly).")
    aggregations: list[Aggregation] = Field(
        default_factory=lambda: list(_SEQUENCE_AGGREGATIONS), min_length=1,
        description="Aggregations per (code, bin).",
    )


class Features(SpecModel):
    """Per-code aggregates in lookback windows, plus demographics."""

    windows_days: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [30, 365],
        description="Lookback windows in days; a window of d days covers [index - d, index].",
    )
    windows: list[FeatureWindow] = Field(
        default_factory=list,
        description="More windows as [start_days, end_days] relative to the index "
        "(start_days left out = all history).",
    )
    aggregations: list[Aggregation] = Field(
        default_factory=lambda: list(_DEFAULT_AGGREGATIONS), min_length=1,
        description="Aggregations per (code, window); value aggregations apply to codes with "
        "numeric values.",
    )
    domains: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_DOMAINS),
        description="Code prefixes whose codes become features: an entry takes every code "
        "equal to it or starting with it and a '/' (CONDITION takes CONDITION//201826, SNOMED "
        "takes SNOMED/74474003, LAB//50912 takes LAB//50912//mg/dL, MEDS_DEATH takes "
        "MEDS_DEATH); any prefix of the event store works (OBSERVATION_PERIOD, DRUG_ERA, "
        "ICD10CM...); '*' = every code.",
    )
    codes: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="More event-store codes that become features, each by its exact code, "
        "e.g. [MEDS_DEATH, LAB//potassium].",
    )
    concept_sets: list[str] = Field(
        default_factory=list,
        description="Concept sets (names in concept_sets) that each become one feature code "
        "CONCEPT_SET//<name>.",
    )
    rollup: Literal["none", "ancestors"] = Field(
        "none", description="'ancestors': an event also counts for every ancestor of its code "
        "(codes.parquet parent_codes).",
    )
    min_code_subjects: int = Field(
        0, ge=0, description="Keep a code only if at least this many training-split subjects "
        "have it in a window (counted on the train split only, so nothing leaks).",
    )
    demographics: list[Demographic] = Field(
        default_factory=lambda: list(_DEFAULT_DEMOGRAPHICS), description="Demographic features."
    )
    sequence: SequenceFeatures | None = Field(None, description="Also build a time-binned tensor.")
    genomics: GenomicFeatures | None = Field(
        None, description="Features from the study's genotypes (genomics:): pharmacogene "
        "phenotypes (one-hot) and variant dosages, with a missing indicator for persons "
        "without genotypes; null: none.")
    omics: list[OmicsFeatures] = Field(
        default_factory=list, description="Omics blocks (expression, methylation, proteins, "
        "metabolites): each a samples x features Zarr or AnnData store with its own linkage, "
        "giving OMICS//<name>//<feature>|all|value and OMICS//<name>//missing|all|present.")
    window_end: Literal["index_day", "before_index_time"] = Field(
        "index_day",
        description="Where windows reaching the index day end (and the last sequence bin): "
        "index_day = the whole index day counts, any hour (OHDSI); before_index_time = only "
        "events strictly before index_time count.",
    )
    layout: TensorLayout = Field(
        "auto",
        description="How the values tensor is stored: dense = one Zarr array; sparse = per-shard "
        "CSR arrays (indptr/indices/data), for wide tensors with few cells set (10^4+ "
        "features, under 1% filled); auto = sparse when the features step finds at least "
        "2,048 features and at most 5% of the cells set, else dense.  Models read both alike.",
    )

    @field_validator("domains")
    @classmethod
    def _domain_form(cls, domains: list[str]) -> list[str]:
        for domain in domains:
            if domain != ALL_CODES and (not domain.strip() or domain != domain.strip()
                                        or domain.endswith("/")):
                raise ValueError(
                    f"{domain!r} is not a code prefix: give the leading part of codes up to "
                    f"(not including) a '/', e.g. CONDITION, SNOMED or LAB//50912, a whole "
                    f"code such as MEDS_DEATH, or '{ALL_CODES}' for every code; fix: "
                    "domains: [CONDITION, MEDS_DEATH]"
                )
        return domains

    @model_validator(mode="after")
    def _something_to_compute(self) -> Features:
        labels = [w.label for w in self.all_windows()]
        if not labels and (self.domains or self.codes or self.concept_sets):
            raise ValueError(
                "no window: give windows_days or windows; fix: windows_days: [30, 365]"
            )
        if len(set(labels)) != len(labels):
            raise ValueError(f"windows repeat: {labels}; fix: list each window once")
        names = [b.name for b in self.omics]
        if len(set(names)) != len(names):
            raise ValueError(f"omics block names repeat: {names}; fix: give each block its "
                             "own name")
        return self

    @model_serializer(mode="wrap")
    def _omit_defaults_added_later(self, handler: SerializerFunctionWrapHandler
                                   ) -> dict[str, Any]:
        # Settings added after studies were written (the default layout, no genomics, no
        # omics) are left out of dumps, so those studies keep their features digests (and
        # their tensors stay current).  Pydantic keeps one serializer per model: this is it.
        data: dict[str, Any] = handler(self)
        if data.get("layout") == "auto":
            del data["layout"]
        if data.get("genomics") is None:
            data.pop("genomics", None)
        if not data.get("omics"):
            data.pop("omics", None)
        return data

    def all_windows(self) -> list[FeatureWindow]:
        """``windows_days`` (shortest first) as windows, then ``windows`` in study order.

        >>> [w.label for w in Features(windows_days=[365, 7], windows=[{}]).all_windows()]
        ['7d', '365d', 'all']
        """
        days = [FeatureWindow(start_days=-d) for d in sorted(self.windows_days)]
        return days + list(self.windows)

    def built_windows(self) -> list[str]:
        """Labels of the windows on the feature axis: the study's windows, and ``all`` for
        demographics.

        >>> Features(windows_days=[30], demographics=["age"]).built_windows()
        ['30d', 'all']
        """
        labels = [w.label for w in self.all_windows()]
        if (self.demographics or self.genomics) and STATIC_WINDOW not in labels:
            labels.append(STATIC_WINDOW)
        return labels

    def built_aggregations(self) -> list[str]:
        """Aggregations on the feature axis: the study's, ``age_years`` for the age and
        ``present`` for sex, race and ethnicity.

        >>> Features(aggregations=["mean", "count"], demographics=["age"]).built_aggregations()
        ['count', 'mean', 'age_years']
        """
        built: set[str] = set(self.aggregations)
        if set(self.demographics) - {"age"} or self.genomics is not None or self.omics:
            built.add("present")
        order: list[str] = [a for a in AGGREGATION_ORDER if a in built]
        if "age" in self.demographics:
            order.append("age_years")
        if self.genomics is not None and self.genomics.variants:
            order.append(DOSAGE)
        if self.omics:
            order.append(OMICS_VALUE)
        return order

    def check_selections(self, selections: Mapping[str, _Selection],
                         where: tuple[str, ...]) -> None:
        """Refuse feature-set selections that name a window or an aggregation the tensor
        does not have, every one at once, each at its place (``where`` + name + field).

        >>> from types import SimpleNamespace as S
        >>> Features(windows_days=[30]).check_selections(
        ...     {"recent": S(windows=["7d"], aggregations=["count"])}, ("feature_sets",))
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for Features
        feature_sets.recent.windows.0
          the features build no window '7d'; built: 30d, all; fix: name one of them, or \
add the window under features.windows_days or features.windows ...
        """
        windows, aggregations = self.built_windows(), self.built_aggregations()
        errors: list[InitErrorDetails] = []
        for name, selection in selections.items():
            for field, wanted, built, where_built in (
                    ("windows", selection.windows, windows,
                     "features.windows_days or features.windows"),
                    ("aggregations", selection.aggregations, aggregations,
                     "features.aggregations (or features.demographics)")):
                singular = field[:-1]
                for i, value in enumerate(wanted):
                    if value in built:
                        continue
                    message = (f"the features build no {singular} {value!r}; built: "
                               f"{', '.join(built)}; fix: name one of them, or add the "
                               f"{singular} under {where_built}")
                    errors.append(InitErrorDetails(
                        type=PydanticCustomError("unknown_feature_selection", message),
                        loc=(*where, name, field, i), input=value))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)


class _Selection(Protocol):
    """What :meth:`Features.check_selections` reads of a feature set."""

    @property
    def windows(self) -> Iterable[str]: ...

    @property
    def aggregations(self) -> Iterable[str]: ...


# Former names, kept for one release: ``Window`` clashed with the cohort's observation window
# (``cohortflow.study._cohort.Window``) and ``Sequence`` with ``collections.abc.Sequence``.
Window = FeatureWindow
Sequence = SequenceFeatures
