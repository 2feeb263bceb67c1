"""Scoring fresh extracts with a model package, and monitoring the scoring runs for drift.

``cohortflow score PKG --source SRC --as-of D`` scores, as of the day D, every person the
packaged target cohort holds on D (:mod:`cohortflow.scoring._asof` defines "eligible as of
D": the cohort built from the extract as known on D, episode open on D), with the packaged
features at index time D, and writes ``<out>/<package digest[:12]>/<D>/``
(:mod:`cohortflow.scoring._run`).  :func:`score_index` scores any explicit
``(subject_id, index_time)`` table (for a study's own persons: the study's predictions);
:func:`outcomes` labels earlier scorings from a later extract, as the study's labels step
does.  docs/scoring.md tells how to schedule it.

Monitoring (:mod:`cohortflow.scoring._drift`, docs/monitoring.md): the package's training
:func:`reference_profile`, :func:`drift` of a run against it (PSI per feature and of the
score, missingness, new and vanished codes), :func:`prospective` discrimination and
calibration once outcomes have accrued, and :func:`monitor_page`, the offline HTML page of a
series of runs.
"""

from cohortflow.errors import DriftError, ScoringError
from cohortflow.scoring._asof import as_of_time, eligible, eligible_steps, known_on
from cohortflow.scoring._definitions import Definitions, check_store, check_tables
from cohortflow.scoring._drift import (
    DEFAULT_THRESHOLDS,
    PSI_EPSILON,
    Thresholds,
    drift,
    persons_with_codes,
    prospective,
    psi,
    reference_profile,
)
from cohortflow.scoring._monitor_html import render as monitor_page
from cohortflow.scoring._outcomes import LABEL_COLUMNS, outcomes
from cohortflow.scoring._run import HistoryRow, ScoringRun, history, parse_as_of, prepare
from cohortflow.scoring._run import score as run_scoring
from cohortflow.scoring._score import (
    FEATURES_FILE,
    code_counts,
    feature_matrix,
    pooled_histogram,
    score_index,
    summary,
    write_eligible,
    write_features,
    write_scores,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FEATURES_FILE",
    "LABEL_COLUMNS",
    "PSI_EPSILON",
    "Definitions",
    "DriftError",
    "HistoryRow",
    "ScoringError",
    "ScoringRun",
    "Thresholds",
    "as_of_time",
    "check_store",
    "check_tables",
    "code_counts",
    "drift",
    "eligible",
    "eligible_steps",
    "feature_matrix",
    "history",
    "known_on",
    "monitor_page",
    "outcomes",
    "parse_as_of",
    "persons_with_codes",
    "pooled_histogram",
    "prepare",
    "prospective",
    "psi",
    "reference_profile",
    "run_scoring",
    "score_index",
    "summary",
    "write_eligible",
    "write_features",
    "write_scores",
]
