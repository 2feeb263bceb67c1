"""Deterministic synthetic OMOP CDM v5.4 data with a planted, known risk.

:func:`generate` writes a pediatric population (everyone aged 0-17 throughout
observation) as Parquet: one directory of parts per clinical table, one part per chunk of
:data:`CHUNK_PERSONS` persons, plus the vocabulary subset (``concept.parquet``,
``concept_ancestor.parquet``), ``oracle.json`` (the planted study and the best AUROC any
model can reach) and ``synth.json`` (rows per table; marks the directory as ours).

The planted study is the demo study: children whose first asthma code has >= 365 days of
prior observation, and an acute exacerbation of asthma in the year after it.  The true risk
is logistic and linear in things written before the index date (see :data:`RISK`), so a
logistic model on lookback counts and means can recover most of it.

The ``warehouse`` preset (``generate(..., preset="warehouse")``) writes the same planted study
into a realistic warehouse: over 20,000 concepts in five domains with a 5-level hierarchy
(``_warehouse_vocab``), Zipf-like code frequencies, 1,200 measurement codes with units and
values, an ``observation`` table, and heavy-tailed utilisation (events per person: median
about 110, 99th percentile in the thousands); ``_warehouse`` and ``_warehouse_tables`` draw
it per block of 1,000 persons, so its rows do not depend on ``chunk_persons``.

Demo output depends only on ``(persons, seed)``: chunk ``i`` draws from
``np.random.default_rng([seed, i])`` and every file is written with fixed options.

The package's rooms: :mod:`~cohortflow.synth.vocab` (the concepts, their hierarchy and the
table layouts), ``_planted`` (the planted study and :func:`auroc`), ``_population`` (one
chunk's persons, visits and events), ``_tables`` (those arrays as OMOP tables) and
``_generate`` (the output directory and the files written; :func:`synthesize`, the
workflow's synth step).

Three more planted truths, off by default (and then nothing above changes): a rare disease
(``generate(..., rare_disease_per_million=N)``, ``_rare``), drift after a date
(``generate(..., drift={...})``, demo preset, ``_drift``) and genotypes with a gene x drug
interaction (``generate(..., genotypes={...})``, demo preset, ``_genotypes``); ``_plants``
applies them to each chunk from their own random streams and ``_plant_rows`` holds their
row surgery.
"""

from cohortflow.synth import vocab
from cohortflow.synth._generate import (
    CHUNK_PERSONS,
    GENERATOR_VERSION,
    PRESETS,
    TABLES,
    WAREHOUSE_CHUNK_PERSONS,
    SynthSummary,
    generate,
    synthesize,
)
from cohortflow.synth._planted import (
    ASTHMA_ENTRY,
    LOOKBACK_DAYS,
    OUTCOME_DAYS,
    PRIOR_OBS_DAYS,
    RISK,
    auroc,
    planted_study,
)
from cohortflow.synth._warehouse_tables import SCHEMAS as WAREHOUSE_SCHEMAS
from cohortflow.synth._warehouse_tables import TABLES as WAREHOUSE_TABLES
from cohortflow.synth._warehouse_vocab import Vocabulary, warehouse_vocabulary
from cohortflow.synth.vocab import SCHEMAS

__all__ = [
    "ASTHMA_ENTRY",
    "CHUNK_PERSONS",
    "GENERATOR_VERSION",
    "LOOKBACK_DAYS",
    "OUTCOME_DAYS",
    "PRESETS",
    "PRIOR_OBS_DAYS",
    "RISK",
    "SCHEMAS",
    "TABLES",
    "WAREHOUSE_CHUNK_PERSONS",
    "WAREHOUSE_SCHEMAS",
    "WAREHOUSE_TABLES",
    "SynthSummary",
    "Vocabulary",
    "auroc",
    "generate",
    "planted_study",
    "synthesize",
    "vocab",
    "warehouse_vocabulary",
]
