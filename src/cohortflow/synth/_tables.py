"""One chunk's arrays as the eight OMOP CDM v5.4 Arrow tables (:data:`vocab.SCHEMAS`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from cohortflow.synth import vocab as V  # noqa: N812

DAY_US = 86_400_000_000
SCHEMAS = V.SCHEMAS


def _days(a: np.ndarray) -> pa.Array:
    return pa.array(a.astype("datetime64[D]"), pa.date32())


def _micros(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype("datetime64[us]"), pa.timestamp("us"))


def _stamp(day: np.ndarray, us: np.ndarray | int = 0) -> pa.Array:
    """Timestamps from day numbers plus microseconds into the day."""
    return _micros(day * DAY_US + us)


def _table(name: str, cols: dict[str, object]) -> pa.Table:
    """Build a table in ``SCHEMAS[name]`` order; absent columns are all null."""
    n = len(next(iter(cols.values())))  # type: ignore[arg-type]
    return table_of(SCHEMAS[name], n, cols)


def table_of(schema: pa.Schema, n: int, cols: dict[str, object]) -> pa.Table:
    """``n`` rows in ``schema``'s column order: a scalar is repeated, an absent column is
    all null."""
    arrays = []
    for field in schema:
        value = cols.get(field.name)
        if value is None:
            arrays.append(pa.nulls(n, field.type))
        elif np.isscalar(value):
            arrays.append(pa.repeat(pa.scalar(value, field.type), n))
        else:
            arrays.append(value if isinstance(value, pa.Array) else pa.array(value, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _lookup(keys: tuple[int, ...], values: Mapping[int, float], concepts: np.ndarray,
            dtype: type) -> np.ndarray:
    table: np.ndarray = np.array([values[k] for k in keys], dtype)
    return table[np.searchsorted(np.array(keys), concepts)]


def omop_tables(rng: np.random.Generator, first_id: int, n: int, ids: dict[str, int],
                obs: dict[str, np.ndarray], male: np.ndarray, race: np.ndarray,
                hispanic: np.ndarray, visit: dict[str, np.ndarray],
                cond: tuple[np.ndarray, ...], drug: tuple[np.ndarray, ...],
                meas: tuple[np.ndarray, ...], proc: tuple[np.ndarray, ...]
                ) -> dict[str, pa.Table]:
    """Turn one chunk's arrays into the eight OMOP tables, rows sorted by person and date."""

    def new_ids(table: str, k: int) -> np.ndarray:
        ids[table] += k
        return np.arange(ids[table] - k + 1, ids[table] + 1, dtype=np.int64)

    pid = first_id + np.arange(n, dtype=np.int64)
    birth = obs["birth"].astype("datetime64[D]")
    year = birth.astype("datetime64[Y]")
    month = birth.astype("datetime64[M]")
    out = {"person": _table("person", {
        "person_id": pid, "gender_concept_id": np.where(male, V.MALE, V.FEMALE),
        "year_of_birth": year.astype(np.int64) + 1970,
        "month_of_birth": (month - year).astype(np.int64) + 1,
        "day_of_birth": (birth - month).astype(np.int64) + 1,
        "birth_datetime": _stamp(obs["birth"]), "race_concept_id": race,
        "ethnicity_concept_id": np.where(hispanic, V.HISPANIC, V.NOT_HISPANIC),
        "gender_source_value": pa.array(np.where(male, "M", "F")),
        "gender_source_concept_id": 0, "race_source_concept_id": 0,
        "ethnicity_source_concept_id": 0})}
    p_person, p_start = obs["p_person"], obs["p_start"]
    out["observation_period"] = _table("observation_period", {
        "observation_period_id": new_ids("observation_period", p_start.size),
        "person_id": pid[p_person], "observation_period_start_date": _days(p_start),
        "observation_period_end_date": _days(obs["p_end"]),
        "period_type_concept_id": V.PERIOD_ENCOUNTERS})

    # Visits: appended exacerbation visits sort into place; rank maps local index -> row.
    vdate, vtype, vend_cap = visit["date"], visit["type"], visit["p_end"]
    order = np.argsort((visit["period"] << 12) | (vdate - p_start[visit["period"]]),
                       kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    vid = new_ids("visit_occurrence", order.size)[rank]
    start_us = rng.integers(8 * 60, 20 * 60, vdate.size) * 60_000_000
    inpatient = vtype == V.INPATIENT
    vend = np.minimum(vdate + inpatient * rng.integers(1, 6, vdate.size), vend_cap)
    end_us = np.where(inpatient & (vend > vdate), rng.integers(10 * 60, 16 * 60, vdate.size)
                      * 60_000_000, start_us + rng.integers(15, 180, vdate.size) * 60_000_000)
    vstamp = vdate * DAY_US + start_us
    person = pid[visit["person"]]
    out["visit_occurrence"] = _table("visit_occurrence", {
        "visit_occurrence_id": vid[order], "person_id": person[order],
        "visit_concept_id": vtype[order], "visit_start_date": _days(vdate[order]),
        "visit_start_datetime": _micros(vstamp[order]),
        "visit_end_date": _days(vend[order]),
        "visit_end_datetime": _stamp(vend[order], end_us[order]),
        "visit_type_concept_id": V.EHR, "visit_source_concept_id": 0})

    def common(prefix: str, table: str, v: np.ndarray, c: np.ndarray) -> dict[str, object]:
        return {f"{table}_id": new_ids(table, v.size), "person_id": person[v],
                f"{prefix}_concept_id": c, "visit_occurrence_id": vid[v],
                f"{prefix}_source_concept_id": 0}

    def by_visit(*arrays: np.ndarray) -> list[np.ndarray]:
        o = np.argsort(rank[arrays[0]], kind="stable")
        return [a[o] for a in arrays]

    v, c = by_visit(*cond)
    end = np.minimum(vdate[v] + rng.integers(0, 15, v.size), vend_cap[v])
    out["condition_occurrence"] = _table("condition_occurrence", {
        **common("condition", "condition_occurrence", v, c),
        "condition_start_date": _days(vdate[v]),
        "condition_start_datetime": _micros(vstamp[v]),
        "condition_end_date": _days(end), "condition_end_datetime": _stamp(end),
        "condition_type_concept_id": V.EHR, "condition_status_concept_id": 0})

    v, c = by_visit(*drug)
    keys = tuple(sorted(V.DAYS_SUPPLY))
    supply = _lookup(keys, V.DAYS_SUPPLY, c, np.int64)
    end = np.minimum(vdate[v] + supply - 1, vend_cap[v])
    out["drug_exposure"] = _table("drug_exposure", {
        **common("drug", "drug_exposure", v, c),
        "drug_exposure_start_date": _days(vdate[v]),
        "drug_exposure_start_datetime": _micros(vstamp[v]),
        "drug_exposure_end_date": _days(end), "drug_exposure_end_datetime": _stamp(end),
        "drug_type_concept_id": V.EHR, "refills": 0, "days_supply": supply,
        "quantity": _lookup(keys, V.QUANTITY, c, np.float64), "route_concept_id": 0})

    v, c, value = by_visit(*meas)
    keys = tuple(sorted(V.UNITS))
    slot = np.searchsorted(np.array(keys), c)
    eos = c == V.EOSINOPHILS
    out["measurement"] = _table("measurement", {
        **common("measurement", "measurement", v, c),
        "measurement_date": _days(vdate[v]),
        "measurement_datetime": _micros(vstamp[v]),
        "measurement_type_concept_id": V.EHR, "operator_concept_id": 0,
        "value_as_number": value, "value_as_concept_id": 0,
        "unit_concept_id": np.array([V.UNITS[k][0] for k in keys])[slot],
        "range_low": pa.array(np.zeros(v.size), mask=~eos),
        "range_high": pa.array(np.full(v.size, 0.5), mask=~eos),
        "unit_source_value": pa.array([V.UNITS[k][1] for k in keys]).take(slot),
        "unit_source_concept_id": 0})

    v, c = by_visit(*proc)
    out["procedure_occurrence"] = _table("procedure_occurrence", {
        **common("procedure", "procedure_occurrence", v, c),
        "procedure_date": _days(vdate[v]),
        "procedure_datetime": _micros(vstamp[v]),
        "procedure_type_concept_id": V.EHR, "modifier_concept_id": 0, "quantity": 1})

    dead = np.flatnonzero(obs["dead"])
    out["death"] = _table("death", {
        "person_id": pid[dead], "death_date": _days(obs["death"][dead]),
        "death_datetime": _stamp(obs["death"][dead]), "death_type_concept_id": V.EHR,
        "cause_concept_id": 0, "cause_source_concept_id": 0})
    return out
