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

Output depends only on ``(persons, seed)``: chunk ``i`` draws from
``np.random.default_rng([seed, i])`` and every file is written with fixed options.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cohortflow import _synth_vocab as V  # noqa: N812
from cohortflow.errors import CohortflowError

CHUNK_PERSONS = 50_000
GENERATOR_VERSION = 1
FIRST_DAY = int(np.datetime64("2005-01-01", "D").astype(np.int64))
LAST_DAY = int(np.datetime64("2024-12-31", "D").astype(np.int64))
AGE_LIMIT_DAYS = 18 * 365  # < 18th birthday whatever the leap years
LOOKBACK_DAYS, PRIOR_OBS_DAYS, OUTCOME_DAYS = 365, 365, 365
DAY_US = 86_400_000_000

# Planted risk: logit = intercept + sum(coef * feature), features over [index-365, index].
RISK = {
    "intercept": -2.0,
    "allergic_rhinitis_any": 0.9,
    "atopic_dermatitis_any": 0.6,
    "albuterol_count": 0.3,
    "male": 0.4,
    "age_years": -0.08,
    "eosinophils_mean": 1.2,
}
ASTHMA_ENTRY = (V.ASTHMA, V.CHILDHOOD_ASTHMA, V.ALLERGIC_ASTHMA)

SCHEMAS = V.SCHEMAS
TABLES = tuple(SCHEMAS)
_WRITE = {"compression": "zstd", "compression_level": 3, "use_dictionary": True,
          "write_statistics": True, "version": "2.6", "row_group_size": 1 << 20}


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote.  ``oracle_auroc`` is NaN when the cohort has no
    outcomes or no non-outcomes (tiny sizes); ``oracle.json`` then holds null."""

    persons: int
    rows: dict[str, int]
    total_rows: int
    oracle_auroc: float
    n_eligible: int
    n_outcomes: int


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact area under the ROC curve (Mann-Whitney, ties count one half); NaN if undefined.

    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    >>> auroc(np.array([0.5, 0.5]), np.array([0, 1]))
    0.5
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    n1 = int(labels.sum())
    n0 = labels.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], ranked.size]
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


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
    arrays = []
    for field in SCHEMAS[name]:
        value = cols.get(field.name)
        if value is None:
            arrays.append(pa.nulls(n, field.type))
        elif np.isscalar(value):
            arrays.append(pa.repeat(pa.scalar(value, field.type), n))
        else:
            arrays.append(value if isinstance(value, pa.Array) else pa.array(value, field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMAS[name])


def _lookup(keys: tuple[int, ...], values: Mapping[int, float], concepts: np.ndarray,
            dtype: type) -> np.ndarray:
    table: np.ndarray = np.array([values[k] for k in keys], dtype)
    return table[np.searchsorted(np.array(keys), concepts)]


class _Events:
    """Rows of one event table under construction: (visit index, concept) pairs."""

    def __init__(self) -> None:
        self.visit: list[np.ndarray] = []
        self.concept: list[np.ndarray] = []

    def add(self, visits: np.ndarray, concepts: np.ndarray | int) -> None:
        self.visit.append(visits.astype(np.int64))
        self.concept.append(np.broadcast_to(np.asarray(concepts, np.int64), visits.shape))

    def draw(self, rng: np.random.Generator, visits: np.ndarray, rate: float,
             codes: tuple[tuple[int, ...], tuple[float, ...]]) -> None:
        """Add Poisson(rate) rows per visit with concepts drawn from ``codes``."""
        picked = np.repeat(visits, rng.poisson(rate, visits.size))
        self.add(picked, np.asarray(codes[0])[rng.choice(len(codes[0]), picked.size,
                                                         p=codes[1])])

    def done(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.visit), np.concatenate(self.concept)


def _periods(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Birth dates and observation periods; ~8% of persons have two disjoint periods."""
    length = rng.integers(365, 3651, n)
    age0 = rng.integers(0, AGE_LIMIT_DAYS - length)
    start = rng.integers(FIRST_DAY, LAST_DAY - length + 1)
    gap = rng.integers(60, 401, n)
    split = (rng.random(n) < 0.08) & (length >= 3 * 365)
    cut = start + 180 + (rng.random(n) * (length - gap - 360)).astype(np.int64)
    keep = np.stack([np.ones(n, bool), split], 1).ravel()
    p_start = np.stack([start, cut + gap + 1], 1).ravel()[keep]
    p_end = np.stack([np.where(split, cut, start + length), start + length], 1).ravel()[keep]
    p_person = np.repeat(np.arange(n), 1 + split)
    last = np.cumsum(1 + split) - 1
    dead = rng.random(n) < 0.001
    death = p_start[last] + (rng.random(n) * (p_end[last] - p_start[last] + 1)).astype(np.int64)
    p_end[last[dead]] = death[dead]
    return {"birth": start - age0, "p_person": p_person, "p_start": p_start, "p_end": p_end,
            "dead": dead, "death": death}


def _chunk(rng: np.random.Generator, first_id: int, n: int, ids: dict[str, int]
           ) -> tuple[dict[str, pa.Table], np.ndarray, np.ndarray]:
    """Generate persons ``first_id .. first_id+n-1``; returns tables and eligible (risk, label).

    ``ids`` holds the last row id used per table and is advanced in place.
    """
    male = rng.random(n) < 0.51
    race = np.array([V.WHITE, V.BLACK, V.ASIAN, 0])[rng.choice(4, n, p=[0.6, 0.2, 0.1, 0.1])]
    hispanic = rng.random(n) < 0.18
    frailty = rng.lognormal(-0.5, 1.0, n)  # mean 1, heavy right tail
    asthma = rng.random(n) < 0.37
    atopic = rng.random(n) < np.where(asthma, 0.55, 0.15)
    eczema = rng.random(n) < np.where(asthma, 0.35, 0.08)
    wheeze = np.where(asthma, rng.gamma(1.0, 0.35, n), 0.02)  # albuterol rate per visit
    eos_mu = np.exp(rng.normal(np.log(0.22) + 0.5 * atopic, 0.45))
    size_z = rng.normal(0.0, 1.0, n)
    obs = _periods(rng, n)
    birth, p_start, p_end = obs["birth"], obs["p_start"], obs["p_end"]

    # Visits: Poisson in each period with a person-level (frailty) rate, sorted per person.
    p_len = p_end - p_start + 1
    per_period = rng.poisson(3.0 * frailty[obs["p_person"]] * p_len / 365.25)
    vperiod = np.repeat(np.arange(p_start.size), per_period)
    key = np.sort((vperiod << 12) | (rng.random(vperiod.size) * p_len[vperiod]).astype(np.int64))
    vperiod = key >> 12
    vdate = p_start[vperiod] + (key & 4095)
    vperson = obs["p_person"][vperiod]
    nv = np.bincount(vperson, minlength=n)
    vidx = np.arange(vdate.size)

    # Asthma onset: one of the person's visits, favouring the middle of their history.
    asthma &= nv > 0
    onset_v = np.where(asthma, np.cumsum(nv) - nv + (rng.beta(2.0, 2.0, n) * nv).astype(int), -1)
    index = np.where(asthma, np.r_[vdate, 0][onset_v], np.iinfo(np.int64).min // 2)
    at_onset = vidx == onset_v[vperson]
    after = asthma[vperson] & (vidx > onset_v[vperson])
    vtype = np.array([V.INPATIENT, V.EMERGENCY, V.OUTPATIENT])[
        np.searchsorted([0.05, 0.15], rng.random(vdate.size), side="right")]

    cond, drug, meas, proc = _Events(), _Events(), _Events(), _Events()
    cond.draw(rng, vidx, 0.9, V.BG_COND)
    cond.add(vidx[rng.random(vidx.size) < np.where(atopic[vperson], 0.3, 0.02)],
             V.ALLERGIC_RHINITIS)
    cond.add(vidx[rng.random(vidx.size) < np.where(eczema[vperson], 0.25, 0.015)],
             V.ATOPIC_DERMATITIS)
    coded = vidx[at_onset | (after & (rng.random(vidx.size) < 0.4))]
    cond.add(coded, np.array(ASTHMA_ENTRY)[rng.choice(3, coded.size, p=[0.5, 0.3, 0.2])])
    drug.draw(rng, vidx, 0.55, V.BG_DRUG)
    drug.add(np.repeat(vidx, rng.poisson(wheeze[vperson])), V.ALBUTEROL_MDI)
    drug.add(vidx[(at_onset | after) & (rng.random(vidx.size) < 0.35)], V.ICS_MDI)
    vitals = vidx[rng.random(vidx.size) < 0.5]
    meas.add(vitals, V.WEIGHT)
    meas.add(vitals, V.HEIGHT)
    meas.add(vidx[rng.random(vidx.size) < 0.5], V.HEART_RATE)
    u = rng.random(vidx.size)
    meas.add(vidx[(u < 0.03) | (at_onset & (u < 0.7)) | (asthma[vperson] & (u < 0.08))],
             V.EOSINOPHILS)
    proc.draw(rng, vidx, 0.2, V.BG_PROC)
    age_days = vdate - birth[vperson]
    proc.add(vidx[(at_onset | after) & (age_days >= 5 * 365) & (rng.random(vidx.size) < 0.15)],
             V.SPIROMETRY)
    proc.add(vidx[asthma[vperson] & (vtype == V.EMERGENCY) & (rng.random(vidx.size) < 0.6)],
             V.NEBULIZER)
    cv, cc = cond.done()
    dv, dc = drug.done()
    mv, mc = meas.done()
    mval = _measure(rng, mc, age_days[mv] / 365.25, size_z[vperson[mv]], eos_mu[vperson[mv]])

    # Planted risk, from what was written in [index - 365, index].
    def in_lookback(visits: np.ndarray) -> np.ndarray:
        p = vperson[visits]
        return (vdate[visits] >= index[p] - LOOKBACK_DAYS) & (vdate[visits] <= index[p])

    def count(visits: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(vperson[visits], weights, minlength=n)

    cw, dw, mw = in_lookback(cv), in_lookback(dv), in_lookback(mv)
    eos = mw & (mc == V.EOSINOPHILS)
    n_eos = count(mv[eos])
    features = {
        "allergic_rhinitis_any": count(cv[cw & (cc == V.ALLERGIC_RHINITIS)]) > 0,
        "atopic_dermatitis_any": count(cv[cw & (cc == V.ATOPIC_DERMATITIS)]) > 0,
        "albuterol_count": count(dv[dw & (dc == V.ALBUTEROL_MDI)]),
        "male": male,
        "age_years": (np.where(asthma, index, birth) - birth) / 365.25,
        "eosinophils_mean": np.where(n_eos > 0, count(mv[eos], mval[eos]) / np.maximum(n_eos, 1),
                                     0.0),
    }
    logit = RISK["intercept"] + sum(RISK[k] * np.asarray(f, float) for k, f in features.items())
    risk = 1.0 / (1.0 + np.exp(-logit))
    event = rng.random(n) < risk
    exac_day = index + rng.integers(1, OUTCOME_DAYS + 1, n)
    onset_period = np.r_[vperiod, 0][onset_v]  # -1 (no asthma): a dummy
    recorded = asthma & event & (exac_day <= p_end[onset_period])
    eligible = asthma & (index - p_start[onset_period] >= PRIOR_OBS_DAYS)

    # The recorded exacerbations: an ER visit with the code, albuterol and a nebulizer.
    who = np.flatnonzero(recorded)
    new = np.arange(vdate.size, vdate.size + who.size)
    vperiod, vperson = np.r_[vperiod, onset_period[who]], np.r_[vperson, who]
    vdate, vtype = np.r_[vdate, exac_day[who]], np.r_[vtype, np.full(who.size, V.EMERGENCY)]
    cv, cc = np.r_[cv, new], np.r_[cc, np.full(who.size, V.EXACERBATION)]
    dv, dc = np.r_[dv, new], np.r_[dc, np.full(who.size, V.ALBUTEROL_MDI)]
    pv, pc = proc.done()
    pv, pc = np.r_[pv, new], np.r_[pc, np.full(who.size, V.NEBULIZER)]

    visit = {"person": vperson, "period": vperiod, "date": vdate, "type": vtype,
             "p_end": p_end[vperiod]}
    tables = _write_tables(rng, first_id, n, ids, obs, male, race, hispanic, visit,
                           (cv, cc), (dv, dc), (mv, mc, mval), (pv, pc))
    return tables, risk[eligible], recorded[eligible]


def _measure(rng: np.random.Generator, concept: np.ndarray, age: np.ndarray,
             size_z: np.ndarray, eos_mu: np.ndarray) -> np.ndarray:
    """Plausible pediatric values: growth curves for weight/height, age-based heart rate."""
    height = np.where(age < 1, 50 + 25 * age, 75 + 6.2 * (age - 1)) * (1 + 0.04 * size_z)
    weight = np.where(age < 1, 3.4 + 6.1 * age, 9.5 + 3.2 * (age - 1)) * (1 + 0.1 * size_z)
    noise = rng.normal(0.0, 1.0, concept.size)
    value = np.select(
        [concept == V.WEIGHT, concept == V.HEIGHT, concept == V.HEART_RATE],
        [np.maximum(weight + 0.3 * noise, 2.0), height + 0.5 * noise,
         np.round(132 - 3.3 * age + 8 * noise)],
        eos_mu * np.exp(0.3 * noise))
    return np.round(value, 2)


def _write_tables(rng: np.random.Generator, first_id: int, n: int, ids: dict[str, int],
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


def planted_study() -> dict[str, object]:
    """The planted demo study, in words and as data (written to ``oracle.json``).

    >>> planted_study()["outcome"]["concept_id"]
    2000000003
    """
    return {
        "description": (
            "Children whose first asthma code (317009 Asthma or a descendant, excluding the "
            "exacerbation code 2000000003, which is only ever planted after index) has at "
            "least 365 days of prior observation in the observation period containing it; "
            "index = that date.  Outcome: condition 2000000003 'Acute exacerbation of asthma' "
            "between index+1 and index+365 days, recorded only while the child is still "
            "observed.  True risk: logistic in features written in [index-365, index] (index "
            "day included): any allergic rhinitis (257007), any atopic dermatitis (133834), "
            "the number of albuterol inhaler exposures (2000000101, a descendant of ingredient "
            "1154343), male sex, age at index in years, and the mean blood eosinophil count "
            "(2000000201, thousand per microliter; 0 when not measured in the lookback)."),
        "cohort": {"entry_concept_ids": list(ASTHMA_ENTRY), "entry_ancestor_concept_id":
                   V.ASTHMA, "entry_excludes": [V.EXACERBATION], "first_only": True,
                   "prior_observation_days": PRIOR_OBS_DAYS},
        "outcome": {"concept_id": V.EXACERBATION, "domain": "CONDITION",
                    "time_at_risk": {"start_days": 1, "end_days": OUTCOME_DAYS}},
        "risk_model": {
            "link": "logit", "lookback_days": LOOKBACK_DAYS, "coefficients": dict(RISK),
            "features": {
                "allergic_rhinitis_any": {"table": "condition_occurrence",
                                          "concept_ids": [V.ALLERGIC_RHINITIS], "agg": "any"},
                "atopic_dermatitis_any": {"table": "condition_occurrence",
                                          "concept_ids": [V.ATOPIC_DERMATITIS], "agg": "any"},
                "albuterol_count": {"table": "drug_exposure", "concept_ids": [V.ALBUTEROL_MDI],
                                    "agg": "count"},
                "male": {"table": "person", "gender_concept_id": V.MALE},
                "age_years": {"table": "person", "agg": "(index - birth) / 365.25"},
                "eosinophils_mean": {"table": "measurement", "concept_ids": [V.EOSINOPHILS],
                                     "agg": "mean value_as_number, 0 if none"},
            }},
    }


def _prepare(out: Path) -> None:
    """Make ``out`` ready: new or empty, or a previous synth output (whose files we remove)."""
    if out.exists() and not out.is_dir():
        raise CohortflowError(f"{out}: exists and is not a directory; fix: choose a new --out")
    marker = out / "synth.json"
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads(marker.read_text()).get("generator") == "cohortflow.synth"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise CohortflowError(
                f"{out}: directory is not empty and is not a previous `cohortflow synth` output "
                "(no synth.json); fix: choose an empty or new --out directory")
        for name in TABLES:  # only the table directories a synth run writes
            table = out / name
            if table.is_symlink() or (table.exists() and not table.is_dir()):
                raise CohortflowError(
                    f"{table}: not a table directory of a `cohortflow synth` output (a link or "
                    "a file), so it is left untouched; fix: move it away or choose a new --out")
            shutil.rmtree(table, ignore_errors=True)
        for name in ("concept.parquet", "concept_ancestor.parquet", "oracle.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(marker, {"generator": "cohortflow.synth", "complete": False})


def _write_parts(out: Path, chunk: int, tables: dict[str, pa.Table]) -> None:
    for name, table in tables.items():
        (out / name).mkdir(exist_ok=True)
        pq.write_table(table, out / name / f"part-{chunk:05d}.parquet", **_WRITE)


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def generate(persons: int, seed: int, out: Path, *, progress: bool = True) -> SynthSummary:
    """Write a synthetic OMOP CDM of ``persons`` children to ``out``; see the module docs.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     s = generate(50, 1, Path(tmp) / "cdm", progress=False)
    >>> s.persons, s.rows["person"], s.total_rows == sum(s.rows.values())
    (50, 50, True)
    """
    if isinstance(persons, bool) or not isinstance(persons, int | np.integer) or persons < 1:
        raise CohortflowError(f"persons must be a positive integer, got {persons!r}; "
                              "fix: --persons 1000")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise CohortflowError(f"seed must be a non-negative integer, got {seed!r}; fix: --seed 7")
    persons, seed = int(persons), int(seed)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    out = Path(out)
    _prepare(out)
    ids = dict.fromkeys(TABLES, 0)
    rows = dict.fromkeys(TABLES, 0)
    risks, labels = [], []
    n_chunks = -(-persons // CHUNK_PERSONS)
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    # One writer thread: chunk i is written (pyarrow releases the GIL) while chunk i+1 is
    # generated, so at most two chunks are in memory.
    with Progress(*columns, disable=not progress) as bar, ThreadPoolExecutor(1) as writer:
        task = bar.add_task(f"synth {persons:,} persons", total=n_chunks)
        pending: Future[None] | None = None
        for ci in range(n_chunks):
            first = ci * CHUNK_PERSONS
            tables, risk, label = _chunk(np.random.default_rng([seed, ci]), first + 1,
                                         min(CHUNK_PERSONS, persons - first), ids)
            for name, table in tables.items():
                rows[name] += table.num_rows
            risks.append(risk)
            labels.append(label)
            if pending is not None:
                pending.result()
                bar.advance(task)
            pending = writer.submit(_write_parts, out, ci, tables)
            del tables
        if pending is not None:
            pending.result()
            bar.advance(task)
    pq.write_table(V.concept_table(), out / "concept.parquet", **_WRITE)
    pq.write_table(V.ancestor_table(), out / "concept_ancestor.parquet", **_WRITE)
    risk, label = np.concatenate(risks), np.concatenate(labels)
    score = auroc(risk, label)
    summary = SynthSummary(persons=persons, rows=rows, total_rows=sum(rows.values()),
                           oracle_auroc=round(score, 6),
                           n_eligible=int(label.size), n_outcomes=int(label.sum()))
    _write_json(out / "oracle.json", {
        "oracle_auroc": None if np.isnan(score) else summary.oracle_auroc,
        "n_eligible": summary.n_eligible, "n_outcomes": summary.n_outcomes,
        "persons": persons, "seed": seed, "generator": "cohortflow.synth",
        "generator_version": GENERATOR_VERSION,
        "planted_study": planted_study()})
    _write_json(out / "synth.json", {
        "generator": "cohortflow.synth", "generator_version": GENERATOR_VERSION,
        "complete": True, "persons": persons, "seed": seed,
        "chunk_persons": CHUNK_PERSONS, "rows": rows, "total_rows": summary.total_rows})
    return summary
