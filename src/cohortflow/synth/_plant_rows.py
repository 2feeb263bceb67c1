"""Row surgery shared by the synth plants (:mod:`._rare`, :mod:`._drift`): new rows put in
place, new row ids, a chunk's tables read as day numbers, extra vocabulary rows.

A plant changes only the rows it must: new rows are inserted where their person and date
sort them and take ids above :data:`PLANTED_IDS`, so the other rows keep their order and
their ids, and no existing random stream is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortflow.synth import vocab as V  # noqa: N812

DAY_US = 86_400_000_000
_DAY_SPAN = 1 << 20  # more days than any date in a synthetic CDM is from 1970
PLANTED_IDS = 1_000_000_000_000  # planted rows' ids start above it, far above the others


def days(table: pa.Table, column: str) -> np.ndarray:
    """A date32 (or timestamp) column as int64 days since 1970."""
    col = table.column(column)
    if pa.types.is_timestamp(col.type):
        us = np.asarray(pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False), np.int64)
        return np.floor_divide(us, DAY_US)
    return np.asarray(pc.cast(col, pa.int32()).to_numpy(zero_copy_only=False), np.int64)


def ints(table: pa.Table, column: str) -> np.ndarray:
    """An integer column as int64 (nulls as 0)."""
    return np.array(pc.fill_null(table.column(column), 0).to_numpy(zero_copy_only=False),
                    np.int64)  # a writable copy


def sort_key(person: np.ndarray, day: np.ndarray) -> np.ndarray:
    """One int64 per row that orders rows by person, then day."""
    return np.asarray(person * _DAY_SPAN + (day + _DAY_SPAN // 2), np.int64)


def new_ids(ids: dict[str, int], table: str, k: int) -> np.ndarray:
    """``k`` fresh row ids of ``table`` for planted rows: from :data:`PLANTED_IDS` + 1 on,
    counted per table in ``ids`` (advanced in place), so no other row's id moves."""
    key = f"planted:{table}"
    ids[key] = ids.get(key, PLANTED_IDS) + k
    return np.arange(ids[key] - k + 1, ids[key] + 1, dtype=np.int64)


def insert_rows(table: pa.Table, key: np.ndarray, new: pa.Table, new_key: np.ndarray
                ) -> pa.Table:
    """``table`` with the rows of ``new`` inserted after the last row whose ``key`` is not
    above theirs (the existing rows keep their order; ``key`` is sorted as the rows are).

    >>> t = pa.table({"x": [1, 3]})
    >>> new = pa.table({"x": [2, 4, 0]})
    >>> insert_rows(t, np.array([1, 3]), new, np.array([2, 4, 0])).column("x").to_pylist()
    [0, 1, 2, 3, 4]
    """
    if new.num_rows == 0:
        return table
    order = np.argsort(new_key, kind="stable")
    pos = np.searchsorted(key, new_key[order], side="right")
    n = table.num_rows
    take = np.insert(np.arange(n), pos, n + order)
    return pa.concat_tables([table, new.cast(table.schema)]).take(pa.array(take))


def repeat_rows(table: pa.Table, counts: np.ndarray, ids: dict[str, int], name: str
                ) -> pa.Table:
    """Each row ``counts[i]`` times (0 drops it): the first copy keeps its row, the others
    follow it with fresh ids in ``<name>_id``."""
    counts = np.asarray(counts, np.int64)
    take = np.repeat(np.arange(table.num_rows), counts)
    first = np.r_[True, take[1:] != take[:-1]] if take.size else np.zeros(0, bool)
    out = table.take(pa.array(take))
    id_col = f"{name}_id"
    row_ids = ints(out, id_col)
    row_ids[~first] = new_ids(ids, name, int((~first).sum()))
    return out.set_column(out.schema.get_field_index(id_col), id_col,
                          pa.array(row_ids, pa.int64()))


def with_concepts(concept: pa.Table, rows: Sequence[tuple[int, str, str, str, str, str | None,
                                                          str]]) -> pa.Table:
    """The ``concept`` table with ``rows`` (as in :data:`vocab.CONCEPTS`) added, sorted by
    concept_id."""
    if not rows:
        return concept
    first = concept.slice(0, 1)  # the added rows are valid as the vocabulary's first one
    extra = V.concept_rows(list(rows), first.column("valid_start_date")[0].as_py(),
                           first.column("valid_end_date")[0].as_py()).cast(concept.schema)
    both = pa.concat_tables([concept, extra])
    return both.take(pc.sort_indices(both, [("concept_id", "ascending")]))


def with_ancestors(ancestor: pa.Table, rows: Iterable[tuple[int, int, int, int]]) -> pa.Table:
    """The ``concept_ancestor`` table with ``rows`` (ancestor, descendant, min and max levels)
    added, sorted by ancestor then descendant."""
    rows = list(rows)
    if not rows:
        return ancestor
    a, d, lo, hi = zip(*rows, strict=True)
    extra = pa.table({"ancestor_concept_id": pa.array(a, pa.int64()),
                      "descendant_concept_id": pa.array(d, pa.int64()),
                      "min_levels_of_separation": pa.array(lo, pa.int32()),
                      "max_levels_of_separation": pa.array(hi, pa.int32())}
                     ).cast(ancestor.schema)
    both = pa.concat_tables([ancestor, extra])
    return both.take(pc.sort_indices(both, [("ancestor_concept_id", "ascending"),
                                            ("descendant_concept_id", "ascending")]))
