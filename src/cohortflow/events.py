"""The event store: MEDS 0.4 layout, sharded by subject.

```
<store>/data/<shard>.parquet           subject_id, time, code, numeric_value (+ unit)
<store>/metadata/codes.parquet         code, description, parent_codes (+ ancestor_codes)
<store>/metadata/subject_splits.parquet subject_id, split
<store>/metadata/dataset.json
```

Shard membership is :func:`shard_of` — a pure function of subject_id and the shard count,
never of the machine or the profile — so every profile produces the same shards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from cohortflow.errors import StoreError

MEDS_VERSION = "0.4.0"
BIRTH = "MEDS_BIRTH"
DEATH = "MEDS_DEATH"
OBSERVATION_START = "OBSERVATION_PERIOD//START"
OBSERVATION_END = "OBSERVATION_PERIOD//END"
CODE_SEPARATOR = "//"
ANCESTOR_CODES = "ancestor_codes"

EVENT_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("numeric_value", pa.float32()),
        ("unit", pa.string()),
    ]
)
POLARS_EVENT_SCHEMA = pl.Schema(
    [
        ("subject_id", pl.Int64()),
        ("time", pl.Datetime("us")),
        ("code", pl.String()),
        ("numeric_value", pl.Float32()),
        ("unit", pl.String()),
    ]
)
SPLITS = ("train", "tuning", "held_out")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


def _mix64(x: np.ndarray, salt: int) -> np.ndarray:
    """SplitMix64 (state = (x + salt) * golden gamma, then its finaliser): a fixed,
    well-mixed 64-bit hash of each integer."""
    z = (x.astype(np.uint64) + np.uint64(salt)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shard_of(subject_ids: np.ndarray, shards: int) -> np.ndarray:
    """Shard index of each subject: a pure function of subject_id and the shard count.

    >>> shard_of(np.array([1, 2, 3, 1]), 4).tolist()
    [3, 0, 3, 3]
    """
    with np.errstate(over="ignore"):
        return (_mix64(np.asarray(subject_ids), salt=0) % np.uint64(shards)).astype(np.int64)


def split_of(subject_ids: np.ndarray) -> np.ndarray:
    """MEDS split (train / tuning / held_out) of each subject, a pure function of its id.

    >>> split_of(np.array([1, 2, 3])).tolist()
    ['train', 'train', 'held_out']
    """
    with np.errstate(over="ignore"):
        u = (_mix64(np.asarray(subject_ids), salt=1) >> np.uint64(11)).astype(np.float64) / 2**53
    edges = np.cumsum(SPLIT_FRACTIONS)[:-1]
    return np.asarray(SPLITS, dtype=object)[np.searchsorted(edges, u, side="right")]


def shard_names(shards: int) -> list[str]:
    """File stems of the shards, e.g. ``['0', '1']``."""
    return [str(i) for i in range(shards)]


def shard_path(store: Path, shard: str) -> Path:
    return Path(store) / "data" / f"{shard}.parquet"


def codes_path(store: Path) -> Path:
    return Path(store) / "metadata" / "codes.parquet"


def splits_path(store: Path) -> Path:
    return Path(store) / "metadata" / "subject_splits.parquet"


def dataset_json_path(store: Path) -> Path:
    return Path(store) / "metadata" / "dataset.json"


def source_fingerprint_path(store: Path) -> Path:
    """Row count and content hash of each source table the store was ingested from."""
    return Path(store) / "metadata" / "source_fingerprint.json"


def list_shards(store: Path) -> list[str]:
    """Shard names of an existing store, in numeric order; a clear error when there are none."""
    data = Path(store) / "data"
    shards = sorted((p.stem for p in data.glob("*.parquet")), key=_shard_key)
    if not shards:
        raise StoreError(
            f"{data}: no shard files (data/<shard>.parquet) found; "
            "fix: run `cohortflow ingest` to build the event store first"
        )
    return shards


def _shard_key(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 62, name)


def scan_shard(store: Path, shard: str) -> pl.LazyFrame:
    """Lazily read one shard of the event store."""
    path = shard_path(store, shard)
    if not path.is_file():
        raise StoreError(f"{path}: shard missing from the event store; fix: rerun the ingest step")
    return pl.scan_parquet(path)


def _read_metadata(path: Path, what: str, columns: str) -> pl.DataFrame:
    """A MEDS metadata table, or one clear error naming the file and its columns."""
    if not path.is_file():
        raise StoreError(
            f"{path}: {what} metadata missing; a MEDS dataset needs metadata/{path.name} with "
            f"columns {columns}; fix: rerun `cohortflow ingest` or add it to the dataset"
        )
    return pl.read_parquet(path)


def read_codes(store: Path) -> pl.DataFrame:
    """The store's codes metadata (code, description, parent_codes, and ancestor_codes
    where the OMOP ingest wrote the store)."""
    return _read_metadata(codes_path(store), "codes", "code, description, parent_codes")


def read_splits(store: Path) -> pl.DataFrame:
    """The store's subject splits (subject_id, split)."""
    return _read_metadata(splits_path(store), "subject splits", "subject_id, split")


def descendants(codes: pl.DataFrame, roots: Iterable[str]) -> set[str]:
    """Every code at or below ``roots``: the roots and each code that lists one of them in
    its ``ancestor_codes`` (the vocabulary's own closure, written by the OMOP ingest from
    ``concept_ancestor``, every level).  A codes table without that column (a MEDS dataset
    made elsewhere) falls back to the transitive closure of ``parent_codes``.

    >>> codes = pl.DataFrame({"code": ["A", "B", "C", "D"],
    ...                       "parent_codes": [[], ["A"], ["B"], []]})
    >>> sorted(descendants(codes, ["A"]))
    ['A', 'B', 'C']
    >>> closure = pl.DataFrame({"code": ["A", "B", "C"], "parent_codes": [[], ["A"], []],
    ...                         "ancestor_codes": [[], ["A"], ["A"]]})
    >>> sorted(descendants(closure, ["A"]))  # C lies below A with no parent link to it
    ['A', 'B', 'C']
    """
    found = set(roots)
    if ANCESTOR_CODES in codes.columns:
        below = (codes.select("code", ANCESTOR_CODES).explode(ANCESTOR_CODES)
                 .filter(pl.col(ANCESTOR_CODES).is_in(sorted(found))))
        return found | set(below["code"].to_list())
    return _walk_down(codes, found)


def _walk_down(codes: pl.DataFrame, roots: set[str]) -> set[str]:
    """The roots and everything reachable from them down the ``parent_codes`` links."""
    children: dict[str, list[str]] = {}
    for code, parents in codes.select("code", "parent_codes").iter_rows():
        for parent in parents or ():
            children.setdefault(parent, []).append(code)
    found: set[str] = set()
    stack = sorted(roots)
    while stack:
        code = stack.pop()
        if code in found:
            continue
        found.add(code)
        stack.extend(children.get(code, ()))
    return found


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically and reproducibly (same table, same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", write_statistics=True, use_dictionary=True)
    tmp.replace(path)


def write_json(obj: object, path: Path) -> None:
    """Write JSON atomically with sorted keys, so the same content gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
