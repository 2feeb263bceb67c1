"""The cohort engine: concept sets, entry events, inclusion rules, exits, labels, attrition.

A cohort definition follows OHDSI Circe/ATLAS: entry events of any domain, an observation
window, named inclusion rules (occurrence counts in windows, age, sex, washout; combined
with ALL / ANY / AT_MOST / AT_LEAST), an exit strategy with censoring and era collapse, then
the prediction label (time at risk, time to event, censoring).  The logic is pure functions
over one shard's events (:func:`make_cohort`), testable on a five-row frame;
:func:`build_shard` adds the I/O; :func:`write_shard` and :func:`write_attrition` are the
workflow's cohort steps.
"""

from __future__ import annotations

from cohortflow.cohorts._concepts import CohortPlan, concept_codes
from cohortflow.cohorts._engine import (
    COHORT_SCHEMA,
    EPISODE_COLUMNS,
    make_cohort,
    make_episodes,
)
from cohortflow.cohorts._events import (
    END_PREFIX,
    merge_intervals,
    observation_periods,
    occurrences,
)
from cohortflow.cohorts._io import (
    build_shard,
    merge_attrition,
    plan_of,
    read_cohort,
    write_attrition,
    write_shard,
)

__all__ = [
    "COHORT_SCHEMA",
    "END_PREFIX",
    "EPISODE_COLUMNS",
    "CohortPlan",
    "build_shard",
    "concept_codes",
    "make_cohort",
    "make_episodes",
    "merge_attrition",
    "merge_intervals",
    "observation_periods",
    "occurrences",
    "plan_of",
    "read_cohort",
    "write_attrition",
    "write_shard",
]
