"""The warehouse preset's population: one block of persons with heavy-tailed utilisation,
Zipf-distributed codes from :mod:`~cohortflow.synth._warehouse_vocab`, and the demo's
planted asthma study on top.

A block of :data:`BLOCK_PERSONS` persons draws from ``default_rng([seed, TAG, block])``, so
the data do not depend on how persons are grouped into output parts: a chunk generates the
blocks it overlaps and keeps its persons (:func:`Block.slice`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from cohortflow.synth import vocab as V  # noqa: N812
from cohortflow.synth._planted import (
    ASTHMA_ENTRY,
    LOOKBACK_DAYS,
    plant_outcome,
)
from cohortflow.synth._population import _measure, _periods, visits
from cohortflow.synth._warehouse_vocab import warehouse_vocabulary

BLOCK_PERSONS = 1000
TAG = 0x5EA1  # keeps warehouse streams apart from the demo's
DOMAINS = ("condition", "drug", "procedure", "measurement", "observation")
# Background events per visit, by visit type (inpatient, emergency, outpatient).
RATES = {"condition": (5.0, 2.0, 1.4), "drug": (12.0, 2.0, 0.9), "procedure": (4.0, 1.5, 0.5),
         "measurement": (30.0, 6.0, 1.2), "observation": (6.0, 1.5, 0.8)}
VISIT_TYPES = np.array([V.INPATIENT, V.EMERGENCY, V.OUTPATIENT])
VISITS_PER_YEAR = 2.2
DEMO_VISITS_PER_YEAR = 3.0  # planted codes keep the demo's rate per year of observation


@dataclass
class Events:
    """Rows of one event table: visit (row of the block's visits), concept, value, unit."""

    visit: np.ndarray
    concept: np.ndarray
    value: np.ndarray  # float64, NaN when none
    unit: np.ndarray  # int64 unit concept id, 0 when none
    unit_name: np.ndarray  # str


@dataclass
class Block:
    """A block's persons, periods, visits (sorted by person and date) and events (sorted by
    visit), plus the planted study's (person, risk, label) of its eligible persons."""

    person: dict[str, np.ndarray]
    period: dict[str, np.ndarray]  # "person", "start", "end"
    visit: dict[str, np.ndarray]  # "person", "date", "type", "start_us", "end", "end_us"
    events: dict[str, Events]
    eligible: np.ndarray  # person rows
    risk: np.ndarray
    label: np.ndarray

    def slice(self, lo: int, hi: int) -> Block:
        """Persons ``lo <= row < hi`` of the block, with rows renumbered from 0."""
        def cut(a: np.ndarray) -> tuple[int, int]:
            return int(np.searchsorted(a, lo)), int(np.searchsorted(a, hi))
        p0, p1 = cut(self.period["person"])
        v0, v1 = cut(self.visit["person"])
        events = {}
        for name, ev in self.events.items():
            e0, e1 = np.searchsorted(ev.visit, v0), np.searchsorted(ev.visit, v1)
            events[name] = Events(**{f.name: getattr(ev, f.name)[e0:e1] for f in fields(ev)})
            events[name].visit = events[name].visit - v0
        keep = (self.eligible >= lo) & (self.eligible < hi)
        period = {k: a[p0:p1] for k, a in self.period.items()}
        visit = {k: a[v0:v1] for k, a in self.visit.items()}
        period["person"] = period["person"] - lo
        visit["person"] = visit["person"] - lo
        return replace(self, person={k: a[lo:hi] for k, a in self.person.items()},
                       period=period, visit=visit, events=events,
                       eligible=self.eligible[keep] - lo, risk=self.risk[keep],
                       label=self.label[keep])


def _background(rng: np.random.Generator, key: str, vidx: np.ndarray, vtype_slot: np.ndarray,
                personal: np.ndarray | None, vperson: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-drawn codes at visits; a share of conditions and drugs repeat a person's own."""
    voc = warehouse_vocabulary()
    visits = np.repeat(vidx, rng.poisson(np.asarray(RATES[key])[vtype_slot]))
    concept = voc.pools[key].draw(rng.random(visits.size))
    if personal is not None:
        own = rng.random(visits.size) < 0.35
        slot = rng.integers(0, personal.shape[1], visits.size)
        concept = np.where(own, personal[vperson[visits], slot], concept)
    return visits, concept


def simulate_block(rng: np.random.Generator, n: int) -> Block:
    """Generate ``n`` persons; every draw comes from ``rng`` in a fixed order."""
    voc = warehouse_vocabulary()
    male = rng.random(n) < 0.51
    race = np.array([V.WHITE, V.BLACK, V.ASIAN, 0])[rng.choice(4, n, p=[0.6, 0.2, 0.1, 0.1])]
    hispanic = rng.random(n) < 0.18
    frailty = rng.lognormal(0.0, 1.0, n)  # heavy right tail of utilisation
    asthma = rng.random(n) < 0.37
    atopic = rng.random(n) < np.where(asthma, 0.55, 0.15)
    eczema = rng.random(n) < np.where(asthma, 0.35, 0.08)
    wheeze = np.where(asthma, rng.gamma(1.0, 0.35, n), 0.02)
    eos_mu = np.exp(rng.normal(np.log(0.22) + 0.5 * atopic, 0.45))
    size_z = rng.normal(0.0, 1.0, n)
    personal = {k: voc.pools[k].draw(rng.random((n, 4))) for k in ("condition", "drug")}
    obs = _periods(rng, n)
    birth, p_start, p_end = obs["birth"], obs["p_start"], obs["p_end"]

    rate = VISITS_PER_YEAR * frailty
    damp = np.minimum(1.0, DEMO_VISITS_PER_YEAR / rate)  # planted codes: per year, not visit
    vperiod, vdate, vperson, nv = visits(rng, obs, rate, n)
    vidx = np.arange(vdate.size)
    p_in = np.minimum(0.03 * frailty, 0.3)[vperson]
    u = rng.random(vdate.size)
    slot = np.where(u < p_in, 0, np.where(u < p_in + 0.1, 1, 2))
    d = damp[vperson]

    asthma &= nv > 0
    onset_v = np.where(asthma, np.cumsum(nv) - nv + (rng.beta(2.0, 2.0, n) * nv).astype(int), -1)
    index = np.where(asthma, np.r_[vdate, 0][onset_v], np.iinfo(np.int64).min // 2)
    at_onset = vidx == onset_v[vperson]
    after = asthma[vperson] & (vidx > onset_v[vperson])

    parts: dict[str, list[tuple[np.ndarray, Any]]] = {k: [] for k in DOMAINS}
    for k in DOMAINS:
        parts[k].append(_background(rng, k, vidx, slot, personal.get(k), vperson))

    def where(p: np.ndarray) -> np.ndarray:
        return vidx[rng.random(vidx.size) < p]

    parts["condition"] += [
        (where(np.where(atopic[vperson], 0.3, 0.02) * d), np.int64(V.ALLERGIC_RHINITIS)),
        (where(np.where(eczema[vperson], 0.25, 0.015) * d), np.int64(V.ATOPIC_DERMATITIS))]
    coded = vidx[at_onset | (after & (rng.random(vidx.size) < 0.4 * d))]
    parts["condition"].append((coded, np.array(ASTHMA_ENTRY)[rng.choice(3, coded.size,
                                                                        p=[0.5, 0.3, 0.2])]))
    sub = where(after * 0.2 * d)
    parts["condition"].append((sub, voc.subtypes[rng.integers(0, voc.subtypes.size, sub.size)]))
    parts["drug"] += [
        (np.repeat(vidx, rng.poisson(wheeze[vperson] * d)), np.int64(V.ALBUTEROL_MDI)),
        (where((at_onset | after) * 0.35 * d), np.int64(V.ICS_MDI))]
    vitals = where(np.full(vidx.size, 0.5))
    ue = rng.random(vidx.size)
    eos = vidx[(ue < 0.03 * d) | (at_onset & (ue < 0.7)) | (asthma[vperson] & (ue < 0.08 * d))]
    parts["measurement"] += [(vitals, np.int64(V.WEIGHT)), (vitals, np.int64(V.HEIGHT)),
                             (where(np.full(vidx.size, 0.5)), np.int64(V.HEART_RATE)),
                             (eos, np.int64(V.EOSINOPHILS))]
    age_days = vdate - birth[vperson]
    parts["procedure"] += [
        (where((at_onset | after) * (age_days >= 5 * 365) * 0.15 * d), np.int64(V.SPIROMETRY)),
        (where(asthma[vperson] * (slot == 1) * 0.6), np.int64(V.NEBULIZER))]
    flat = {k: (np.concatenate([p[0] for p in ps]),
                np.concatenate([np.broadcast_to(p[1], p[0].shape) for p in ps]).astype(np.int64))
            for k, ps in parts.items()}
    mv, mc = flat["measurement"]
    mval = _values(rng, "measurement", mc, _measure(
        rng, mc, age_days[mv] / 365.25, size_z[vperson[mv]], eos_mu[vperson[mv]]))

    # Planted risk, from what was written in [index - 365, index] (as the demo).
    def count(table: str, concept: int, weights: np.ndarray | None = None) -> np.ndarray:
        v, c = flat[table]
        p = vperson[v]
        hit = (c == concept) & (vdate[v] >= index[p] - LOOKBACK_DAYS) & (vdate[v] <= index[p])
        return np.bincount(p[hit], None if weights is None else weights[hit], minlength=n)

    n_eos = count("measurement", V.EOSINOPHILS)
    features = {
        "allergic_rhinitis_any": count("condition", V.ALLERGIC_RHINITIS) > 0,
        "atopic_dermatitis_any": count("condition", V.ATOPIC_DERMATITIS) > 0,
        "albuterol_count": count("drug", V.ALBUTEROL_MDI),
        "male": male,
        "age_years": (np.where(asthma, index, birth) - birth) / 365.25,
        "eosinophils_mean": np.where(n_eos > 0, count("measurement", V.EOSINOPHILS, mval)
                                     / np.maximum(n_eos, 1), 0.0),
    }
    onset_period = np.r_[vperiod, 0][onset_v]
    risk, exac_day, recorded, eligible = plant_outcome(rng, features, asthma, index,
                                                       onset_period, p_start, p_end)

    who = np.flatnonzero(recorded)
    new = np.arange(vdate.size, vdate.size + who.size)
    vperiod, vperson = np.r_[vperiod, onset_period[who]], np.r_[vperson, who]
    vdate, slot = np.r_[vdate, exac_day[who]], np.r_[slot, np.ones(who.size, np.int64)]
    for k, concept in (("condition", V.EXACERBATION), ("drug", V.ALBUTEROL_MDI),
                       ("procedure", V.NEBULIZER)):
        v, c = flat[k]
        flat[k] = np.r_[v, new], np.r_[c, np.full(who.size, concept)]
    oc = flat["observation"][1]
    values = {"measurement": mval,
              "observation": _values(rng, "observation", oc, np.full(oc.size, np.nan))}

    # Visit times, then everything sorted by (person, date) and visits renumbered.
    m = vdate.size
    start_us = rng.integers(8 * 60, 20 * 60, m) * 60_000_000
    inpatient = slot == 0
    vend = np.minimum(vdate + inpatient * rng.integers(1, 6, m), p_end[vperiod])
    end_us = np.where(inpatient & (vend > vdate), rng.integers(10 * 60, 16 * 60, m) * 60_000_000,
                      start_us + rng.integers(15, 180, m) * 60_000_000)
    cond_len = rng.integers(0, 15, flat["condition"][0].size)
    order = np.argsort((vperiod << 12) | (vdate - p_start[vperiod]), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(m)
    events = {}
    for k, (v, c) in flat.items():
        o = np.argsort(rank[v], kind="stable")
        value = values.get(k, np.full(v.size, np.nan))[o]
        unit, name = _units(k, c[o])
        events[k] = Events(rank[v][o], c[o], value, unit, name)
        if k == "condition":
            events[k].value = cond_len[o].astype(np.float64)  # days to the condition's end
    visit = {"person": vperson[order], "date": vdate[order], "type": VISIT_TYPES[slot[order]],
             "start_us": start_us[order], "end": vend[order], "end_us": end_us[order],
             "p_end": p_end[vperiod][order]}
    person = {"male": male, "race": race, "hispanic": hispanic, "birth": birth,
              "dead": obs["dead"], "death": obs["death"]}
    period = {"person": obs["p_person"], "start": p_start, "end": p_end}
    rows = np.flatnonzero(eligible)
    return Block(person, period, visit, events, rows, risk[rows], recorded[rows])


def _pool_slot(key: str, concept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each concept's slot in the domain pool and whether it is a pool code."""
    pool = warehouse_vocabulary().pools[key].concept
    order = np.argsort(pool)
    pos = np.minimum(np.searchsorted(pool[order], concept), pool.size - 1)
    return order[pos], pool[order][pos] == concept


def _values(rng: np.random.Generator, key: str, concept: np.ndarray,
            demo: np.ndarray) -> np.ndarray:
    """Values of generated codes (log-normal per code); ``demo`` where not a pool code."""
    voc = warehouse_vocabulary()
    slot, pooled = _pool_slot(key, concept)
    noise = rng.normal(0.0, 1.0, concept.size)
    drawn = np.exp(voc.log_mu[key][slot] + voc.log_sd[key][slot] * noise)
    return np.round(np.where(pooled, drawn, demo), 2)


def _units(key: str, concept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit concept ids and unit codes of measurement and observation rows."""
    if key not in ("measurement", "observation"):
        return np.zeros(concept.size, np.int64), np.full(concept.size, "")
    voc = warehouse_vocabulary()
    slot, pooled = _pool_slot(key, concept)
    unit = np.where(pooled, voc.unit[key][slot], 0)
    name = np.where(pooled, voc.unit_name[key][slot], "")
    for code, (uid, uname) in V.UNITS.items():
        hit = concept == code
        unit[hit], name[hit] = uid, uname
    return unit.astype(np.int64), name
