"""The model sweep of a study: families, hyperparameter spaces, axes, splits, selection.

A study either names one model (the short form ``model: {family: logistic_l2, C: 1.0}``)
or a sweep: model families with hyperparameter grids or ranges, crossed with the axes
outcomes × cohorts × feature sets × seeds.  Every point of that cross product is one
*configuration*, trained and evaluated as one Snakemake job (see :mod:`cohortflow.models`).

>>> Model.model_validate({"family": "logistic_l2", "C": 0.5}).families()[0].C
[0.5]
>>> Model.model_validate({"sweep": {"families": [{"family": "random_forest"}]}}
...     ).families()[0].n_estimators
[200]
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, model_validator

from cohortflow.study._base import SpecModel
from cohortflow.study._features import TensorAggregation, WindowLabel


class Range(SpecModel):
    """A continuous (or integer) range sampled by a random search."""

    low: float = Field(description="Smallest value.")
    high: float = Field(description="Largest value.")
    log: bool = Field(False, description="Sample uniformly on a log scale (for C, rates).")
    integer: bool = Field(False, description="Round samples to integers.")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high}); "
                             "fix: e.g. {low: 0.01, high: 10, log: true}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0; fix: e.g. {low: 0.001, high: 10, "
                             "log: true}")
        return self


Floats = list[float] | Range
Ints = list[int] | Range


class Logistic(SpecModel):
    """Penalised logistic regression on max-abs scaled features (mean-imputed)."""

    family: Literal["logistic"] = "logistic"
    penalty: list[Literal["l1", "l2", "elasticnet"]] = Field(
        ["l2"], min_length=1, description="Penalties to try: l1 (lasso), l2 (ridge), "
        "elasticnet (l1_ratio mixes them).")
    C: Floats = Field([1.0], description="Inverse regularisation strength "
                      "(smaller = stronger shrinkage); 0.01-10 suits max-abs scaled features.")
    l1_ratio: Floats = Field([0.5], description="Elastic-net mix (0 = l2, 1 = l1); "
                             "used by the elasticnet penalty only.")


class GradientBoosting(SpecModel):
    """Histogram gradient-boosted trees (scikit-learn HistGradientBoostingClassifier)."""

    family: Literal["gradient_boosting"] = "gradient_boosting"
    learning_rate: Floats = Field([0.1], description="Shrinkage per tree; 0.03-0.3.")
    max_iter: Ints = Field([100], description="Boosting rounds.")
    max_leaf_nodes: Ints = Field([15], description="Leaves per tree; 7-63.")
    min_samples_leaf: Ints = Field([20], description="Persons per leaf, at least.")
    l2_regularization: Floats = Field([0.0], description="L2 penalty on leaf values.")


class RandomForest(SpecModel):
    """A random forest (scikit-learn RandomForestClassifier)."""

    family: Literal["random_forest"] = "random_forest"
    n_estimators: Ints = Field([200], description="Trees.")
    max_depth: Ints = Field([8], description="Depth of each tree.")
    min_samples_leaf: Ints = Field([5], description="Persons per leaf, at least.")
    max_features: Floats = Field([0.3], description="Fraction of features per split.")


Family = Annotated[Logistic | GradientBoosting | RandomForest, Field(discriminator="family")]


class FeatureSet(SpecModel):
    """A named selection of the study's feature tensor (empty lists keep everything)."""

    windows: list[WindowLabel] = Field(
        [], description="Windows to keep, by their names on the feature axis: 'Nd', 'all' or "
        "'Sd..Ed', e.g. ['365d', 'all', '-365d..-31d'].")
    aggregations: list[TensorAggregation] = Field(
        [], description="Aggregations to keep, e.g. ['count'] (demographics: age_years, "
        "present).")
    domains: list[str] = Field([], description="Code domains to keep, e.g. ['CONDITION'] "
                               "(demographic features have the domains MEDS_BIRTH, GENDER).")


class Search(SpecModel):
    """How hyperparameter spaces become configurations."""

    method: Literal["grid", "random"] = Field(
        "grid", description="grid: every combination of the listed values; random: "
        "`samples` draws per family (ranges allowed).")
    samples: int = Field(10, ge=1, description="Draws per family of a random search.")


class Sweep(SpecModel):
    """Model families crossed with outcomes × cohorts × feature sets × seeds."""

    families: list[Family] = Field(min_length=1, description="Model families and spaces.")
    search: Search = Search()
    outcomes: list[str] = Field(
        [], description="Outcomes to predict, by concept-set name; [] = the cohort's outcome "
        "(a study defines one outcome today).")
    cohorts: list[str] = Field(
        ["cohort"], description="Cohorts to train on; `cohort` is the study's one cohort.")
    feature_sets: dict[str, FeatureSet] = Field(
        {"all": FeatureSet()}, min_length=1, description="Named selections of the tensor.")
    seeds: list[int] = Field([0], min_length=1, description="Replicates; each configuration's "
                             "seed derives from the study seed and the configuration id.")


class Split(SpecModel):
    """How persons are split into train and test, and train into CV folds."""

    method: Literal["stratified", "time", "meds"] = Field(
        "stratified", description="stratified: a random test set of `test_fraction` of the "
        "persons with and without the outcome; time: index dates from `test_from` on test; "
        "meds: the event store's held_out split tests.")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="Share of persons tested.")
    test_from: dt.date | None = Field(None, description="First index date of the test set "
                                      "(method time), e.g. 2019-01-01.")
    cv_folds: int = Field(3, ge=2, le=20, description="Stratified CV folds inside train; "
                          "they alone pick the best configuration (the test set never does).")

    @model_validator(mode="after")
    def _time_needs_date(self) -> Split:
        if self.method == "time" and self.test_from is None:
            raise ValueError("the time split needs test_from; fix: e.g. "
                             "split: {method: time, test_from: 2019-01-01}")
        return self


class Model(SpecModel):
    """The prediction models: one (``family``, ``C``) or a ``sweep``."""

    family: Literal["logistic_l2"] | None = Field(
        None, description="Short form of a single model (L2 logistic regression).")
    C: float | None = Field(None, gt=0, description="C of the short form.")
    sweep: Sweep | None = Field(None, description="Model families crossed with the axes.")
    split: Split = Split()
    select_by: Literal["auroc", "auprc", "brier"] = Field(
        "auroc", description="Mean CV metric that picks the best configuration per outcome.")

    @model_validator(mode="after")
    def _one_form(self) -> Model:
        if self.sweep is not None and (self.family is not None or self.C is not None):
            raise ValueError("give either family/C (one model) or sweep, not both; fix: move "
                             "the model into sweep.families, e.g. [{family: logistic, C: [1.0]}]")
        return self

    def families(self) -> list[Logistic | GradientBoosting | RandomForest]:
        """The sweep's families; the short form is one L2 logistic regression."""
        if self.sweep is not None:
            return list(self.sweep.families)
        return [Logistic(penalty=["l2"], C=[self.C if self.C is not None else 1.0])]
