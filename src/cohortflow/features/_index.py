"""The feature axis and the dense blocks built from tidy cells."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import xarray as xr

from cohortflow import events
from cohortflow.features._aggregate import ZERO_FILLED, value_aggregations
from cohortflow.study import STATIC_WINDOW, FeatureKey, Features, FeatureWindow, feature_key


@dataclass(frozen=True)
class FeatureIndex:
    """An ordered feature axis: one (code, window, aggregation) per column."""

    code: tuple[str, ...]
    window: tuple[str, ...]
    aggregation: tuple[str, ...]

    def keys(self) -> list[str]:
        """The text key of each column, the tensor's ``feature`` index.

        >>> FeatureIndex.of([("CONDITION//1", "365d", "count")]).keys()
        ['CONDITION//1|365d|count']
        """
        return [feature_key(*key) for key in zip(self.code, self.window, self.aggregation,
                                                 strict=True)]

    def position(self) -> dict[tuple[str, str, str], int]:
        keys = zip(self.code, self.window, self.aggregation, strict=True)
        return {key: i for i, key in enumerate(keys)}

    def frame(self) -> pl.DataFrame:
        """(feature_code, window, aggregation, col) — the join key of tidy cells."""
        return pl.DataFrame({
            "feature_code": list(self.code), "window": list(self.window),
            "aggregation": list(self.aggregation),
            "col": np.arange(len(self), dtype=np.int64),
        }, schema={"feature_code": pl.String, "window": pl.String, "aggregation": pl.String,
                   "col": pl.Int64})

    def fill(self) -> np.ndarray:
        """The value of each column where a subject has nothing: 0 for counts, else NaN."""
        return np.array([0.0 if a in ZERO_FILLED else np.nan for a in self.aggregation],
                        dtype=np.float32)

    def __len__(self) -> int:
        return len(self.code)

    @classmethod
    def of(cls, keys: list[tuple[str, str, str]]) -> FeatureIndex:
        code, window, aggregation = zip(*keys, strict=True) if keys else ((), (), ())
        return cls(tuple(code), tuple(window), tuple(aggregation))


def feature_keys(ds: xr.Dataset) -> list[FeatureKey]:
    """The tensor's feature axis read back as typed keys, windows with start and end.

    >>> ds = xr.Dataset(coords={"code": ("feature", ["C//1", "MEDS_BIRTH"]),
    ...                         "window": ("feature", ["-365d..-31d", "all"]),
    ...                         "aggregation": ("feature", ["count", "age_years"])})
    >>> [(k.code, k.window.start_days, k.window.end_days) for k in feature_keys(ds)]
    [('C//1', -365, -31), ('MEDS_BIRTH', None, 0)]
    """
    windows: dict[str, FeatureWindow] = {}
    keys = []
    for code, window, aggregation in zip(ds["code"].values, ds["window"].values,
                                         ds["aggregation"].values, strict=True):
        label = str(window)
        if label not in windows:
            windows[label] = FeatureWindow.parse(label)
        keys.append(FeatureKey(str(code), windows[label], str(aggregation)))
    return keys


def kept_codes(spec: Features, vocabulary: pl.DataFrame) -> pl.DataFrame:
    """Codes seen anywhere, merged over shards, kept when at least ``min_code_subjects``
    train-split subjects have them; sorted by code.

    >>> vocab = pl.DataFrame({"feature_code": ["B", "A", "B"], "has_value": [True, False, False],
    ...                       "n_train": [1, 5, 2]})
    >>> kept_codes(Features(min_code_subjects=3), vocab).rows()
    [('A', False, 5), ('B', True, 3)]
    >>> kept_codes(Features(min_code_subjects=6), vocab).height
    0
    """
    merged = vocabulary.group_by("feature_code").agg(pl.col("has_value").any(),
                                                      pl.col("n_train").sum())
    return merged.filter(pl.col("n_train") >= spec.min_code_subjects).sort("feature_code")


def feature_index(spec: Features, vocabulary: pl.DataFrame,
                  static_codes: list[str] | None = None) -> FeatureIndex:
    """The feature axis: sorted codes × windows × aggregations, then demographics.

    >>> vocab = pl.DataFrame({"feature_code": ["DRUG//1", "MEASUREMENT//2"],
    ...                       "has_value": [False, True], "n_train": [4, 4]})
    >>> ix = feature_index(Features(windows_days=[30], demographics=["age"]), vocab)
    >>> list(zip(ix.code, ix.window, ix.aggregation))  # doctest: +NORMALIZE_WHITESPACE
    [('DRUG//1', '30d', 'count'), ('MEASUREMENT//2', '30d', 'count'),
     ('MEASUREMENT//2', '30d', 'mean'), ('MEDS_BIRTH', 'all', 'age_years')]
    """
    keys: list[tuple[str, str, str]] = []
    for code, has_value, _ in kept_codes(spec, vocabulary).iter_rows():
        for window in spec.all_windows():
            for aggregation in value_aggregations(spec.aggregations, has_value):
                keys.append((code, window.label, aggregation))
    if "age" in spec.demographics:
        keys.append((events.BIRTH, STATIC_WINDOW, "age_years"))
    keys.extend((code, STATIC_WINDOW, "present") for code in sorted(set(static_codes or ())))
    return FeatureIndex.of(keys)


def sequence_index(spec: Features, vocabulary: pl.DataFrame) -> FeatureIndex:
    """The feature axis of the time-binned tensor: sorted codes × sequence aggregations."""
    if spec.sequence is None:
        return FeatureIndex.of([])
    keys: list[tuple[str, str, str]] = [
        (code, "bin", aggregation)
        for code, has_value, _ in kept_codes(spec, vocabulary).iter_rows()
        for aggregation in value_aggregations(spec.sequence.aggregations, has_value)
    ]
    return FeatureIndex.of(keys)


def dense_block(index: FeatureIndex, cells: pl.DataFrame, n_rows: int) -> np.ndarray:
    """Scatter tidy cells into a (rows × features) float32 block; absent cells are filled.

    >>> ix = FeatureIndex.of([("A", "30d", "count"), ("A", "30d", "mean")])
    >>> cells = pl.DataFrame({"row": [1], "feature_code": ["A"], "window": ["30d"],
    ...                       "aggregation": ["mean"], "value": [2.5]})
    >>> dense_block(ix, cells, 2).tolist()
    [[0.0, nan], [0.0, 2.5]]
    """
    block = np.broadcast_to(index.fill(), (n_rows, len(index))).copy()
    placed = cells.join(index.frame(), on=["feature_code", "window", "aggregation"])
    block[placed["row"].to_numpy(), placed["col"].to_numpy()] = placed["value"].to_numpy()
    return block


def dense_sequence(index: FeatureIndex, cells: pl.DataFrame, n_rows: int,
                   bins: int) -> np.ndarray:
    """Scatter tidy sequence cells into a (rows × bins × features) float32 block."""
    block = np.broadcast_to(index.fill(), (n_rows, bins, len(index))).copy()
    placed = cells.with_columns(window=pl.lit("bin")).join(
        index.frame(), on=["feature_code", "window", "aggregation"])
    block[placed["row"].to_numpy(), placed["bin"].to_numpy(), placed["col"].to_numpy()] = (
        placed["value"].to_numpy())
    return block
