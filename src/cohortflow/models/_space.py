"""The parameter space of a sweep: every configuration, its stable id and its seed.

A configuration is one point of analyses (target × outcome × time at risk) × families ×
hyperparameters × feature sets × seeds.  Its id is a hash of its parameters (so adding a
configuration to a sweep leaves every other id, directory and result alone), and its seed
derives from the study seed and that id.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cohortflow.errors import StudySpecError
from cohortflow.study import Range, Study


@dataclass(frozen=True)
class Configuration:
    """One model configuration of a sweep."""

    id: str
    family: str
    hyperparameters: dict[str, Any]
    analysis: str
    cohort: str
    outcome: str
    time_at_risk: str
    feature_set: str
    selection: dict[str, list[str]]
    replicate: int
    seed: int

    def params(self) -> dict[str, Any]:
        """Everything that defines the configuration (written to ``params.json``)."""
        return {"id": self.id, "family": self.family, "hyperparameters": self.hyperparameters,
                "analysis": self.analysis, "cohort": self.cohort, "outcome": self.outcome,
                "time_at_risk": self.time_at_risk, "feature_set": self.feature_set,
                "feature_selection": self.selection,
                "replicate": self.replicate, "seed": self.seed}


def config_id(params: dict[str, Any]) -> str:
    """A stable 12-hex-digit id of a configuration's parameters (key order does not matter).

    >>> config_id({"family": "logistic", "C": 1.0}) == config_id({"C": 1.0, "family": "logistic"})
    True
    >>> config_id({"family": "logistic", "C": 1.0})
    'd039f16d2a95'
    """
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def derive_seed(study_seed: int, cid: str) -> int:
    """A configuration's seed: a 31-bit hash of the study seed and the configuration id.

    >>> derive_seed(42, "d039f16d2a95"), derive_seed(43, "d039f16d2a95")
    (47050364, 997602965)
    """
    digest = hashlib.sha256(f"{study_seed}/{cid}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _round(value: float) -> float:
    """Six significant digits, so sampled values (and the ids made of them) read well."""
    return float(f"{value:.6g}")


def _draw(space: list[Any] | Range, rng: np.random.Generator) -> Any:
    if isinstance(space, list):
        return space[int(rng.integers(len(space)))]
    if space.log:
        value = math.exp(rng.uniform(math.log(space.low), math.log(space.high)))
    else:
        value = rng.uniform(space.low, space.high)
    return round(value) if space.integer else _round(value)


def family_points(family: Any, method: str, samples: int, study_seed: int,
                  where: str) -> list[dict[str, Any]]:
    """The hyperparameter settings of one family: a grid, or ``samples`` random draws.

    >>> from cohortflow.study import Logistic
    >>> family_points(Logistic(penalty=["l1", "l2"], C=[0.1, 1.0]), "grid", 1, 42, "f")
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'penalty': 'l1', 'C': 0.1}, {'penalty': 'l1', 'C': 1.0},
     {'penalty': 'l2', 'C': 0.1}, {'penalty': 'l2', 'C': 1.0}]
    """
    spaces = {k: getattr(family, k) for k in type(family).model_fields if k != "family"}
    if family.family == "logistic" and "elasticnet" not in family.penalty:
        spaces.pop("l1_ratio")  # only the elastic net mixes penalties
    if method == "grid":
        ranges = [k for k, v in spaces.items() if isinstance(v, Range)]
        if ranges:
            raise StudySpecError(
                f"{where}.{ranges[0]}: a range needs a random search; fix: list values "
                f"({ranges[0]}: [0.1, 1.0]) or set model.sweep.search: {{method: random}}")
        names = list(spaces)
        points = [dict(zip(names, combo, strict=True))
                  for combo in itertools.product(*(spaces[n] for n in names))]
    else:
        seed = int(config_id({"seed": study_seed, "space": family.model_dump(mode="json")}), 16)
        rng = np.random.default_rng(seed)
        points = [{k: _draw(v, rng) for k, v in spaces.items()} for _ in range(samples)]
    if family.family == "logistic":
        for point in points:
            if point["penalty"] != "elasticnet":
                point.pop("l1_ratio", None)
    unique = {config_id(p): p for p in points}  # random draws from short lists repeat
    return list(unique.values())


def configurations(study: Study) -> dict[str, Configuration]:
    """Every configuration of the study's sweep, by id, in spec order.

    >>> from cohortflow.study import load_study
    >>> configs = configurations(load_study())
    >>> len(configs) >= 1 and all(len(i) == 12 for i in configs)
    True
    """
    model = study.model
    sweep = model.sweep
    _check_axes(study)
    feature_sets = ({n: s.model_dump() for n, s in sweep.feature_sets.items()} if sweep
                    else {"all": {"windows": [], "aggregations": [], "domains": []}})
    seeds = sweep.seeds if sweep else [0]
    method, samples = (sweep.search.method, sweep.search.samples) if sweep else ("grid", 1)
    points = [(family.family, point) for i, family in enumerate(model.families())
              for point in family_points(family, method, samples, study.seed,
                                         f"model.sweep.families[{i}]")]
    out: dict[str, Configuration] = {}
    for analysis in study.analysis_list():
        for (family, point), (fs_name, fs), replicate in itertools.product(
                points, feature_sets.items(), seeds):
            key = {"family": family, "hyperparameters": point, "cohort": analysis.target,
                   "outcome": analysis.outcome, "time_at_risk": analysis.time_at_risk,
                   "feature_set": fs_name, "feature_selection": fs, "replicate": replicate}
            cid = config_id(key)
            out[cid] = Configuration(cid, family, point, analysis.id, analysis.target,
                                     analysis.outcome, analysis.time_at_risk, fs_name, fs,
                                     replicate, derive_seed(study.seed, cid))
    return out


def _check_axes(study: Study) -> None:
    """The sweep's old ``outcomes`` and ``cohorts`` axes name the single-analysis study's
    outcome and cohort; a study with analyses crosses them there instead."""
    sweep = study.model.sweep
    if sweep is None:
        return
    if study.cohort is None:
        if sweep.outcomes or sweep.cohorts != ["cohort"]:
            raise StudySpecError(
                "model.sweep.outcomes / cohorts: a study with analyses crosses targets and "
                "outcomes there; fix: remove them from model.sweep and list the targets and "
                "outcomes under analyses:")
        return
    outcome = next(iter(study.outcome_specs()))
    for name in sweep.outcomes:
        if name != outcome:
            raise StudySpecError(
                f"model.sweep.outcomes: unknown outcome '{name}'; this study's cohort has "
                f"the outcome '{outcome}' (cohort.outcome.concept_set); fix: outcomes: "
                f"[{outcome}]")
    for name in sweep.cohorts:
        if name != "cohort":
            raise StudySpecError(
                f"model.sweep.cohorts: unknown cohort '{name}'; a study defines one cohort, "
                "named `cohort` after its key; fix: cohorts: [cohort]")


def rerun_digest(study: Study, config: Configuration) -> str:
    """A sweep configuration's rerun key: what its result depends on besides its input
    files (labels, features, splits): its parameters (with its derived seed), the split
    spec and the study seed, which places persons in the test set and the CV folds.
    Other configurations, the selection metric and the display threshold
    (``min_cell_count``: the report pools calibration bins) leave its job alone.

    >>> from cohortflow.study import load_study
    >>> s = load_study(); c = next(iter(configurations(s).values()))
    >>> len(rerun_digest(s, c))
    12
    """
    return config_id({"params": config.params(), "split": study.model.split.model_dump(
        mode="json"), "seed": study.seed})
