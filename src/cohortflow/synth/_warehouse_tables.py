"""A warehouse block's arrays as OMOP CDM v5.4 Arrow tables: the demo's eight plus
``observation`` (:data:`SCHEMAS`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cohortflow.synth import vocab as V  # noqa: N812
from cohortflow.synth._tables import _days, _micros, _stamp, table_of
from cohortflow.synth._warehouse import Block, Events
from cohortflow.synth._warehouse_vocab import warehouse_vocabulary

_OBSERVATION = (
    "observation_id:I person_id:I observation_concept_id:I observation_date:d "
    "observation_datetime:t observation_type_concept_id:I value_as_number:f value_as_string:s "
    "value_as_concept_id:I qualifier_concept_id:I unit_concept_id:I provider_id:I "
    "visit_occurrence_id:I visit_detail_id:I observation_source_value:s "
    "observation_source_concept_id:I unit_source_value:s qualifier_source_value:s "
    "value_source_value:s observation_event_id:I obs_event_field_concept_id:I")
_TYPES = {"I": pa.int64(), "d": pa.date32(), "t": pa.timestamp("us"), "s": pa.string(),
          "f": pa.float64()}
SCHEMAS = {**V.SCHEMAS, "observation": pa.schema(
    [(c, _TYPES[t]) for c, t in (f.split(":") for f in _OBSERVATION.split())])}
TABLES = tuple(SCHEMAS)


def _table(name: str, n: int, cols: dict[str, object]) -> pa.Table:
    """A table in ``SCHEMAS[name]`` order; absent columns are all null."""
    return table_of(SCHEMAS[name], n, cols)


def block_tables(block: Block, first_id: int, ids: dict[str, int]) -> dict[str, pa.Table]:
    """The nine OMOP tables of ``block``, whose first person gets ``first_id``; ``ids`` holds
    the last row id used per table and is advanced in place."""

    def new_ids(table: str, k: int) -> np.ndarray:
        ids[table] += k
        return np.arange(ids[table] - k + 1, ids[table] + 1, dtype=np.int64)

    p, n = block.person, block.person["male"].size
    pid = first_id + np.arange(n, dtype=np.int64)
    birth = p["birth"].astype("datetime64[D]")
    year = birth.astype("datetime64[Y]")
    month = birth.astype("datetime64[M]")
    out = {"person": _table("person", n, {
        "person_id": pid, "gender_concept_id": np.where(p["male"], V.MALE, V.FEMALE),
        "year_of_birth": year.astype(np.int64) + 1970,
        "month_of_birth": (month - year).astype(np.int64) + 1,
        "day_of_birth": (birth - month).astype(np.int64) + 1,
        "birth_datetime": _stamp(p["birth"]), "race_concept_id": p["race"],
        "ethnicity_concept_id": np.where(p["hispanic"], V.HISPANIC, V.NOT_HISPANIC),
        "gender_source_value": pa.array(np.where(p["male"], "M", "F")),
        "gender_source_concept_id": 0, "race_source_concept_id": 0,
        "ethnicity_source_concept_id": 0})}
    per = block.period
    out["observation_period"] = _table("observation_period", per["start"].size, {
        "observation_period_id": new_ids("observation_period", per["start"].size),
        "person_id": pid[per["person"]], "observation_period_start_date": _days(per["start"]),
        "observation_period_end_date": _days(per["end"]),
        "period_type_concept_id": V.PERIOD_ENCOUNTERS})
    vis = block.visit
    m = vis["date"].size
    vid = new_ids("visit_occurrence", m)
    person = pid[vis["person"]]
    out["visit_occurrence"] = _table("visit_occurrence", m, {
        "visit_occurrence_id": vid, "person_id": person, "visit_concept_id": vis["type"],
        "visit_start_date": _days(vis["date"]),
        "visit_start_datetime": _micros(vis["date"] * 86_400_000_000 + vis["start_us"]),
        "visit_end_date": _days(vis["end"]), "visit_end_datetime": _stamp(vis["end"],
                                                                          vis["end_us"]),
        "visit_type_concept_id": V.EHR, "visit_source_concept_id": 0})

    def common(prefix: str, table: str, ev: Events) -> dict[str, object]:
        v = ev.visit
        return {f"{table}_id": new_ids(table, v.size), "person_id": person[v],
                f"{prefix}_concept_id": ev.concept, "visit_occurrence_id": vid[v],
                f"{prefix}_source_concept_id": 0}

    def start(prefix: str, ev: Events, date: str, stamp: str) -> dict[str, object]:
        v = ev.visit
        return {date: _days(vis["date"][v]),
                stamp: _micros(vis["date"][v] * 86_400_000_000 + vis["start_us"][v]),
                f"{prefix}_type_concept_id": V.EHR}

    ev = block.events["condition"]
    end = np.minimum(vis["date"][ev.visit] + ev.value.astype(np.int64), vis["p_end"][ev.visit])
    out["condition_occurrence"] = _table("condition_occurrence", ev.visit.size, {
        **common("condition", "condition_occurrence", ev),
        **start("condition", ev, "condition_start_date", "condition_start_datetime"),
        "condition_end_date": _days(end), "condition_end_datetime": _stamp(end),
        "condition_status_concept_id": 0})

    ev = block.events["drug"]
    supply, quantity = _drug_supply(ev.concept)
    end = np.minimum(vis["date"][ev.visit] + supply - 1, vis["p_end"][ev.visit])
    out["drug_exposure"] = _table("drug_exposure", ev.visit.size, {
        **common("drug", "drug_exposure", ev),
        **start("drug", ev, "drug_exposure_start_date", "drug_exposure_start_datetime"),
        "drug_exposure_end_date": _days(end), "drug_exposure_end_datetime": _stamp(end),
        "refills": 0, "days_supply": supply, "quantity": quantity, "route_concept_id": 0})

    for table, prefix in (("measurement", "measurement"), ("observation", "observation")):
        ev = block.events[table]
        none = np.isnan(ev.value)
        out[table] = _table(table, ev.visit.size, {
            **common(prefix, table, ev),
            **start(prefix, ev, f"{prefix}_date", f"{prefix}_datetime"),
            "value_as_number": pa.array(np.where(none, 0.0, ev.value), mask=none),
            "value_as_concept_id": 0,
            "unit_concept_id": pa.array(ev.unit, pa.int64(), mask=ev.unit == 0),
            "unit_source_value": pa.array(ev.unit_name, pa.string(), mask=ev.unit == 0),
            **({"operator_concept_id": 0} if table == "measurement" else {})})

    ev = block.events["procedure"]
    out["procedure_occurrence"] = _table("procedure_occurrence", ev.visit.size, {
        **common("procedure", "procedure_occurrence", ev),
        **start("procedure", ev, "procedure_date", "procedure_datetime"),
        "modifier_concept_id": 0, "quantity": 1})

    dead = np.flatnonzero(p["dead"])
    out["death"] = _table("death", dead.size, {
        "person_id": pid[dead], "death_date": _days(p["death"][dead]),
        "death_datetime": _stamp(p["death"][dead]), "death_type_concept_id": V.EHR,
        "cause_concept_id": 0, "cause_source_concept_id": 0})
    return {name: out[name] for name in TABLES}


def _drug_supply(concept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Days supply and quantity per drug row: the pool code's, or the demo's table."""
    voc = warehouse_vocabulary()
    pool = voc.pools["drug"].concept
    order = np.argsort(pool)
    pos = np.minimum(np.searchsorted(pool[order], concept), pool.size - 1)
    supply = voc.days_supply[order][pos].astype(np.int64)
    quantity = voc.quantity[order][pos].astype(np.float64)
    for code, days in V.DAYS_SUPPLY.items():
        hit = concept == code
        supply[hit], quantity[hit] = days, V.QUANTITY[code]
    return supply, quantity
