"""Windowed feature tensors: per-shard aggregation → xarray → Zarr v3.

A feature is a (code, window, aggregation) triple.

Windows are whole calendar days relative to the index date (day 0 = the index day).
``windows_days: [d]`` gives the window ``d`` days, ``[index - d, index]``, index day
included; ``windows: [{start_days: s, end_days: e}]`` gives ``[index + s, index + e]``
(``e <= 0``), both ends included; ``start_days`` left out is all history (``all``).  Events
after the index day never count.  ``window_end`` says how the index day itself counts
(:data:`WINDOW_SEMANTICS`): ``index_day`` (the default, OHDSI) takes it whole, at any hour,
so an event later that day than the index time counts; ``before_index_time`` takes only the
events strictly before the index time.

Aggregations over the events of a code in a window: ``count`` (0 when none), ``present``
(1/0), ``days_since_last`` (whole days from the last event to the index date), and over the
non-null numeric values, ``first``, ``last`` (earliest / latest event; events at the same
timestamp keep the event store's order), ``min``, ``max``, ``mean``, ``sum``, and
``value_count`` (the number of events with a value; 0 when none).  Everything but count,
present and value_count is NaN when there is nothing to aggregate; a null numeric value
counts as an event but never as a value.  Only codes with a numeric value somewhere get the
value aggregations.

Feature codes are the event codes of the study's ``domains`` (code prefixes: an entry takes
every code equal to it or starting with it and a ``/``, so ``CONDITION``, ``MEDS_DEATH``,
``OBSERVATION_PERIOD``, or ``SNOMED`` and ``LAB//50912`` of a MEDS dataset; ``*`` is every
code) and of ``codes`` (exact codes), each concept set of ``concept_sets`` as
``CONCEPT_SET//<name>`` (resolved as a cohort resolves it: :func:`resolve_concept_sets`),
and with ``rollup: ancestors`` every ancestor of a code (``codes.parquet`` parent_codes).
A code stays only if at least ``min_code_subjects`` subjects of the train split have it
(demographics always stay).
Demographics: ``age_years`` at index (code MEDS_BIRTH) and ``present`` for each sex, race
and ethnicity code.  The optional sequence tensor bins the same codes into ``bins`` bins of
``bin_days`` days, oldest first, the last bin ending on the index day.

Store: one per target cohort (``features/<target>/features.zarr``), read by every outcome
and time at risk of that target, so nothing in it depends on a label.  ``values`` (subject ×
feature) and, with a sequence, ``sequence`` (subject × time_bin × sequence_feature), in one
Zarr v3 store with consolidated metadata and nothing else in it, so ``xarray.open_zarr``
opens it without a warning; one row per episode of the target cohort, in the order of its
shard tables (shard after shard: an analysis's labels name their episode's ``row``); see
:mod:`cohortflow.features._store` for the region writes and the marker.  Each feature is a
:class:`cohortflow.study.FeatureKey`; the ``feature`` index holds its text,
``code|window|aggregation`` (``ds.sel(feature="CONDITION//317009|365d|count")``), beside the
``code``, ``window`` and ``aggregation`` coordinates, and :func:`feature_keys` reads the
axis back as typed keys (a window label keeps its start and end).  The sequence tensor's
``sequence_feature`` index reads ``code|bin|aggregation``.

Layout (``features.layout``): ``dense`` stores ``values`` as one Zarr array; ``sparse``
stores each cohort shard's rows as CSR arrays (``indptr``/``indices``/``data``) in the group
``values_csr`` of the same store, beside the same coordinates; ``auto`` (the default) picks
sparse for a wide, mostly empty tensor (:data:`AUTO_RULE`).  The attributes ``layout``,
``layout_requested``, ``layout_rule``, ``set_cells`` and ``fill`` record the choice.  A cell
not stored holds its column's fill (0 for counts, NaN for value aggregations: missing is
never zero), so both layouts hold the same tensor bit for bit.  :func:`read_matrix` reads
either as a ``scipy.sparse.csr_matrix`` (rows and columns chosen, one shard at a time, never
the dense whole) with :func:`fill_values`; :func:`open_features` opens either (a sparse
store's ``values`` is a lazy dense view).  The sequence tensor is always dense.

:func:`build_store` writes the store with the Dask scheduler it is given (default: the active
one); :func:`build_tensor`, the workflow's features step, runs it on a Dask cluster of its
own, never the process's default (jobs may share a process as threads).
"""

from cohortflow.features._aggregate import (
    code_map,
    feature_events,
    in_window,
    selected,
    sequence_cells,
    static_cells,
    window_cells,
)
from cohortflow.features._build import (
    WINDOW_SEMANTICS,
    aggregate_shard,
    build_store,
    build_tensor,
    resolve_concept_sets,
    shard_block,
)
from cohortflow.features._index import (
    FeatureIndex,
    dense_block,
    dense_sequence,
    feature_index,
    feature_keys,
    sequence_index,
)
from cohortflow.features._sparse import (
    AUTO_MAX_FILL,
    AUTO_MIN_FEATURES,
    AUTO_RULE,
    SPARSE_GROUP,
    fill_values,
    layout_of,
    read_matrix,
    to_dense,
)
from cohortflow.features._store import (
    COMPLETE_ATTR,
    ChunkPlan,
    finish,
    open_features,
    work_paths,
    write_boundaries,
    write_region,
)
from cohortflow.study import STATIC_WINDOW

__all__ = [
    "AUTO_MAX_FILL",
    "AUTO_MIN_FEATURES",
    "AUTO_RULE",
    "COMPLETE_ATTR",
    "SPARSE_GROUP",
    "STATIC_WINDOW",
    "WINDOW_SEMANTICS",
    "ChunkPlan",
    "FeatureIndex",
    "aggregate_shard",
    "build_store",
    "build_tensor",
    "code_map",
    "dense_block",
    "dense_sequence",
    "feature_events",
    "feature_index",
    "feature_keys",
    "fill_values",
    "finish",
    "in_window",
    "layout_of",
    "open_features",
    "read_matrix",
    "resolve_concept_sets",
    "selected",
    "sequence_cells",
    "sequence_index",
    "shard_block",
    "static_cells",
    "to_dense",
    "window_cells",
    "work_paths",
    "write_boundaries",
    "write_region",
]
