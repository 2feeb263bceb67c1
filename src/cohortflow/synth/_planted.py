"""The planted study: its cohort, outcome and true risk model, and the oracle's AUROC.

The true risk is logistic and linear in things written before the index date (see
:data:`RISK`), so a logistic model on lookback counts and means can recover most of it;
:func:`planted_study` describes it in words and as data for ``oracle.json``.
"""

from __future__ import annotations

import numpy as np

from cohortflow.synth import vocab as V  # noqa: N812

LOOKBACK_DAYS, PRIOR_OBS_DAYS, OUTCOME_DAYS = 365, 365, 365

# Planted risk: logit = intercept + sum(coef * feature), features over [index-365, index].
RISK = {
    "intercept": -2.0,
    "allergic_rhinitis_any": 0.9,
    "atopic_dermatitis_any": 0.6,
    "albuterol_count": 0.3,
    "male": 0.4,
    "age_years": -0.08,
    "eosinophils_mean": 1.2,
}
ASTHMA_ENTRY = (V.ASTHMA, V.CHILDHOOD_ASTHMA, V.ALLERGIC_ASTHMA)


def plant_outcome(rng: np.random.Generator, features: dict[str, np.ndarray],
                  asthma: np.ndarray, index: np.ndarray, onset_period: np.ndarray,
                  p_start: np.ndarray, p_end: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each child's outcome drawn from the planted risk of its ``features`` (keys of
    :data:`RISK`): the risk, the exacerbation day, whether it is recorded (an asthmatic
    child with the event while still observed) and whether the child is eligible (enough
    observation before the index date in the period ``onset_period`` holds)."""
    logit = RISK["intercept"] + sum(RISK[k] * np.asarray(f, float) for k, f in features.items())
    risk = 1.0 / (1.0 + np.exp(-logit))
    event = rng.random(asthma.size) < risk
    exac_day = index + rng.integers(1, OUTCOME_DAYS + 1, asthma.size)
    recorded = asthma & event & (exac_day <= p_end[onset_period])
    eligible = asthma & (index - p_start[onset_period] >= PRIOR_OBS_DAYS)
    return risk, exac_day, recorded, eligible


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact area under the ROC curve (Mann-Whitney, ties count one half); NaN if undefined.

    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    >>> auroc(np.array([0.5, 0.5]), np.array([0, 1]))
    0.5
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    n1 = int(labels.sum())
    n0 = labels.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], ranked.size]
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def planted_study() -> dict[str, object]:
    """The planted demo study, in words and as data (written to ``oracle.json``).

    >>> planted_study()["outcome"]["concept_id"]
    2000000003
    """
    return {
        "description": (
            "Children whose first asthma code (317009 Asthma or a descendant, excluding the "
            "exacerbation code 2000000003, which is only ever planted after index) has at "
            "least 365 days of prior observation in the observation period containing it; "
            "index = that date.  Outcome: condition 2000000003 'Acute exacerbation of asthma' "
            "between index+1 and index+365 days, recorded only while the child is still "
            "observed.  True risk: logistic in features written in [index-365, index] (index "
            "day included): any allergic rhinitis (257007), any atopic dermatitis (133834), "
            "the number of albuterol inhaler exposures (2000000101, a descendant of ingredient "
            "1154343), male sex, age at index in years, and the mean blood eosinophil count "
            "(2000000201, thousand per microliter; 0 when not measured in the lookback)."),
        "cohort": {"entry_concept_ids": list(ASTHMA_ENTRY), "entry_ancestor_concept_id":
                   V.ASTHMA, "entry_excludes": [V.EXACERBATION], "first_only": True,
                   "prior_observation_days": PRIOR_OBS_DAYS},
        "outcome": {"concept_id": V.EXACERBATION, "domain": "CONDITION",
                    "time_at_risk": {"start_days": 1, "end_days": OUTCOME_DAYS}},
        "risk_model": {
            "link": "logit", "lookback_days": LOOKBACK_DAYS, "coefficients": dict(RISK),
            "features": {
                "allergic_rhinitis_any": {"table": "condition_occurrence",
                                          "concept_ids": [V.ALLERGIC_RHINITIS], "agg": "any"},
                "atopic_dermatitis_any": {"table": "condition_occurrence",
                                          "concept_ids": [V.ATOPIC_DERMATITIS], "agg": "any"},
                "albuterol_count": {"table": "drug_exposure", "concept_ids": [V.ALBUTEROL_MDI],
                                    "agg": "count"},
                "male": {"table": "person", "gender_concept_id": V.MALE},
                "age_years": {"table": "person", "agg": "(index - birth) / 365.25"},
                "eosinophils_mean": {"table": "measurement", "concept_ids": [V.EOSINOPHILS],
                                     "agg": "mean value_as_number, 0 if none"},
            }},
    }
