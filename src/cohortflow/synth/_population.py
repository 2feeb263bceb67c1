"""The simulated population of one chunk: persons, observation periods, visits, the
clinical events at each visit, measurement values, and the planted outcome.

Every draw comes from the chunk's generator in a fixed order, so a chunk depends only on
``(seed, chunk index)``.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pyarrow as pa

from cohortflow.synth import vocab as V  # noqa: N812
from cohortflow.synth._planted import (
    ASTHMA_ENTRY,
    LOOKBACK_DAYS,
    plant_outcome,
)
from cohortflow.synth._tables import omop_tables

FIRST_DAY = int(np.datetime64("2005-01-01", "D").astype(np.int64))
LAST_DAY = int(np.datetime64("2024-12-31", "D").astype(np.int64))
AGE_LIMIT_DAYS = 18 * 365  # < 18th birthday whatever the leap years


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


def visits(rng: np.random.Generator, obs: dict[str, np.ndarray], rate: np.ndarray, n: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Visit days: a Poisson number in each observation period at the person's ``rate``
    per year, on uniform days of the period, sorted per person.  Returns each visit's
    period, day and person, and the visits per person."""
    p_start, p_len = obs["p_start"], obs["p_end"] - obs["p_start"] + 1
    per_period = rng.poisson(rate[obs["p_person"]] * p_len / 365.25)
    vperiod = np.repeat(np.arange(p_start.size), per_period)
    key = np.sort((vperiod << 12) | (rng.random(vperiod.size) * p_len[vperiod]).astype(np.int64))
    vperiod = key >> 12
    vdate = p_start[vperiod] + (key & 4095)
    vperson = obs["p_person"][vperiod]
    return vperiod, vdate, vperson, np.bincount(vperson, minlength=n)


def simulate_chunk(rng: np.random.Generator, first_id: int, n: int, ids: dict[str, int],
                   keep: dict[str, np.ndarray] | None = None
                   ) -> tuple[dict[str, pa.Table], np.ndarray, np.ndarray]:
    """Generate persons ``first_id .. first_id+n-1``; returns tables and eligible (risk, label).

    ``ids`` holds the last row id used per table and is advanced in place.  ``keep``, when
    given, receives the planted outcome's per-person arrays (for the planted drift).
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
    vperiod, vdate, vperson, nv = visits(rng, obs, 3.0 * frailty, n)
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
        return cast(np.ndarray,
                    (vdate[visits] >= index[p] - LOOKBACK_DAYS) & (vdate[visits] <= index[p]))

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
    onset_period = np.r_[vperiod, 0][onset_v]  # -1 (no asthma): a dummy
    risk, exac_day, recorded, eligible = plant_outcome(rng, features, asthma, index,
                                                       onset_period, p_start, p_end)
    if keep is not None:
        keep.update(person_id=first_id + np.arange(n), risk=risk, exac_day=exac_day,
                    recorded=recorded, eligible=eligible, asthma=asthma, index=index,
                    p_end=p_end[onset_period])

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
    tables = omop_tables(rng, first_id, n, ids, obs, male, race, hispanic, visit,
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
