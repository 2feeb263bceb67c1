"""Per-person keys and per-column rules of the mart: pure functions over Polars frames.

Every person gets two keyed values from the pseudonym secret: a 63-bit integer pseudonym
(the HMAC-SHA256 of the id, as :func:`cohortflow.privacy.pseudonyms` computes it) and a
date shift (an HMAC of the id under another message domain, so the two are unrelated),
a whole number of days in ``[-d, -1] ∪ [1, d]``.  Each column of a clinical table is then
pseudonymised, renumbered, remapped, shifted, kept, nulled or dropped by its name and type
(:func:`column_action`): only structured columns are kept, so a column nobody listed (a
site's own free-text field) is dropped, never copied.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import polars as pl

from cohortflow.errors import CohortflowError

PSEUDONYM_BITS = 63
SHIFT_DOMAIN = b"date-shift:"
"""The HMAC message prefix of date shifts (pseudonyms hash the bare id)."""

NUMERIC_KEPT = frozenset({
    "value_as_number", "range_low", "range_high", "quantity", "days_supply", "refills",
    "year_of_birth"})
"""Structured, non-identifying numbers kept as they are."""
LINKED = frozenset({"visit_occurrence_id", "preceding_visit_occurrence_id"})
"""Foreign keys to a mart table: remapped to its new ids."""

# What each action means, for the record (the same words every time).
DETAILS = {
    "pseudonymised": "keyed HMAC-SHA256 of the id, 63-bit integer",
    "renumbered": "1..n in the order of (person, date, concept, source id)",
    "remapped": "the new id of the row it points to",
    "shifted": "moved by the person's keyed date shift (whole days, never 0)",
    "kept": "structured value kept as it is",
    "kept by policy": "listed in mart.keep_columns",
    "nulled": "points to a table the mart does not hold",
    "dropped": "free text, *_source_value or a column not known to be structured",
}


def person_keys(person_ids: Iterable[int], secret: str, max_shift: int) -> pl.DataFrame:
    """``person_id`` → (``new_person_id``, ``shift_days``) for each id, in the given order.

    Two persons whose pseudonyms collide are refused (about one chance in 10^7 for a
    million persons): a new key fixes it.

    >>> keys = person_keys([1, 2], "k", 365)
    >>> keys.columns, keys["new_person_id"].to_list()[0] == int("0aa2054d88556d7e", 16)
    (['person_id', 'new_person_id', 'shift_days'], True)
    >>> all(s != 0 and abs(s) <= 365 for s in keys["shift_days"])
    True
    """
    key = secret.encode()
    ids, pseudonyms, shifts = [], [], []
    mask = (1 << PSEUDONYM_BITS) - 1
    for person_id in person_ids:
        message = str(int(person_id)).encode()
        digest = hmac.new(key, message, hashlib.sha256).digest()
        ids.append(int(person_id))
        pseudonyms.append(int.from_bytes(digest[:8], "big") & mask)
        shifts.append(shift_days(hmac.new(key, SHIFT_DOMAIN + message,
                                          hashlib.sha256).digest(), max_shift))
    frame = pl.DataFrame({"person_id": ids, "new_person_id": pseudonyms,
                          "shift_days": shifts},
                         schema={"person_id": pl.Int64, "new_person_id": pl.Int64,
                                 "shift_days": pl.Int32})
    if frame["new_person_id"].n_unique() != frame.height:
        raise CohortflowError(
            "two persons of the cohort got the same 63-bit pseudonym under this key; fix: "
            "export COHORTFLOW_PSEUDONYM_KEY=<a new long random secret> and export again")
    return frame


def shift_days(digest: bytes, max_shift: int) -> int:
    """A non-zero whole number of days in ``[-max_shift, max_shift]`` from a keyed digest,
    every value equally likely (up to 2^-60).

    >>> shift_days(bytes(8), 365), shift_days(b"\\xff" * 8, 365), shift_days(bytes(8), 1)
    (-365, 221, -1)
    """
    value = int.from_bytes(digest[:8], "big") % (2 * max_shift)
    return value - max_shift if value < max_shift else value - max_shift + 1


def is_date(name: str, dtype: pl.DataType) -> bool:
    """Whether a column holds a date or a time stamp (by type, or by its OMOP name when a
    CSV source gives it as text)."""
    return (dtype == pl.Date or isinstance(dtype, pl.Datetime)
            or (dtype == pl.String and name.endswith(("_date", "_datetime"))))


def column_action(table: str, name: str, dtype: pl.DataType, own_id: str | None,
                  keep: frozenset[str]) -> str:
    """What the mart does with one column of a clinical table (one of :data:`DETAILS`).

    >>> [column_action("measurement", c, t, "measurement_id", frozenset()) for c, t in [
    ...     ("person_id", pl.Int64), ("measurement_id", pl.Int64),
    ...     ("visit_occurrence_id", pl.Int64), ("measurement_date", pl.Date),
    ...     ("measurement_concept_id", pl.Int64), ("value_as_number", pl.Float64),
    ...     ("provider_id", pl.Int64), ("measurement_time", pl.String),
    ...     ("value_source_value", pl.String)]]  # doctest: +NORMALIZE_WHITESPACE
    ['pseudonymised', 'renumbered', 'remapped', 'shifted', 'kept', 'kept', 'nulled',
     'dropped', 'dropped']
    """
    if name == "person_id":
        return "pseudonymised"
    if name == own_id:
        return "renumbered"
    if name in LINKED:
        return "remapped"
    if is_date(name, dtype):
        return "shifted"
    if name.endswith("concept_id") or name in NUMERIC_KEPT:
        return "kept"
    if f"{table}.{name}" in keep:
        return "kept by policy"
    if name.endswith("_id"):
        return "nulled"
    return "dropped"


def as_dates(frame: pl.DataFrame) -> pl.DataFrame:
    """Date and time-stamp columns given as text (a CSV source) parsed; a time stamp with a
    time zone made naive (its wall-clock time kept), as the ingest reads it.

    >>> as_dates(pl.DataFrame({"a_date": ["2020-01-02"], "a_datetime": ["2020-01-02 10:00:00"]})
    ...         ).dtypes
    [Date, Datetime(time_unit='us', time_zone=None)]
    """
    columns = []
    for name, dtype in frame.schema.items():
        if dtype == pl.String and name.endswith("_date"):
            columns.append(pl.col(name).str.strip_chars().str.to_date(strict=False))
        elif dtype == pl.String and name.endswith("_datetime"):
            columns.append(pl.col(name).str.strip_chars().str.to_datetime(
                strict=False, time_unit="us"))
        elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            columns.append(pl.col(name).dt.replace_time_zone(None))
    return frame.with_columns(columns) if columns else frame


def shifted(name: str, dtype: pl.DataType) -> pl.Expr:
    """A date or time-stamp column moved by the row's ``shift_days``.

    >>> from datetime import date
    >>> pl.DataFrame({"d": [date(2020, 3, 1)], "shift_days": [-1]}).select(
    ...     shifted("d", pl.Date)).item()
    datetime.date(2020, 2, 29)
    """
    return (pl.col(name) + pl.duration(days=pl.col("shift_days"))).cast(dtype).alias(name)
