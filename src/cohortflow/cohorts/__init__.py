"""The cohort engine: concept sets, entry events, inclusion rules, exits, labels, attrition.

A cohort definition follows OHDSI Circe/ATLAS: entry events of any domain, an observation
window, named inclusion rules (occurrence counts in windows, age, sex, washout; combined
with ALL / ANY / AT_MOST / AT_LEAST), an exit strategy with censoring and era collapse, then
the prediction labels (time at risk, time to event, censoring).  A cohort's episodes are pure
functions over one shard's events (:func:`make_episodes`); an analysis's labels are a pure
function of its target's episodes and its outcome's rows (:func:`label_steps`); each is
testable on a five-row frame (:func:`make_cohort` composes them for a single-form cohort).
:func:`build_shard` adds the I/O; :func:`write_shard`, :func:`write_attrition` and
:func:`write_labels` are the workflow's cohort and label steps; :func:`write_matching` the
match step of an analysis with matched case-control sampling (:func:`match_controls`).
"""

from __future__ import annotations

from cohortflow.cohorts._concepts import CohortPlan, concept_codes
from cohortflow.cohorts._engine import (
    COHORT_SCHEMA,
    EPISODE_COLUMNS,
    LABEL_SCHEMA,
    label_steps,
    make_cohort,
    make_episodes,
    number_rows,
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
    outcome_rows,
    plan_of,
    read_cohort,
    read_episodes,
    write_attrition,
    write_labels,
    write_shard,
)
from cohortflow.cohorts._matching import (
    MATCHED_SCHEMA,
    balance,
    match_controls,
    match_seed,
    write_matching,
)

__all__ = [
    "COHORT_SCHEMA",
    "END_PREFIX",
    "EPISODE_COLUMNS",
    "LABEL_SCHEMA",
    "MATCHED_SCHEMA",
    "CohortPlan",
    "balance",
    "build_shard",
    "concept_codes",
    "label_steps",
    "make_cohort",
    "make_episodes",
    "match_controls",
    "match_seed",
    "merge_attrition",
    "merge_intervals",
    "number_rows",
    "observation_periods",
    "occurrences",
    "outcome_rows",
    "plan_of",
    "read_cohort",
    "read_episodes",
    "write_attrition",
    "write_labels",
    "write_matching",
    "write_shard",
]
