"""The planted rare disease (``rare_disease_per_million``): a local condition concept given
to about N per million persons, once, with a risk that depends on sex and age, so that a
matched case-control design has something to match on.

Who can get it: a person of the target cohort of ``seeds/studies/rare_disease.yaml``, that
is whose first visit with at least :data:`PRIOR_OBS_DAYS` days of prior observation (in the
observation period holding it) is not the last day of that period; that visit is the index.
The disease is then recorded once, on a uniform day in ``[index + 1, end of that period]``,
as a ``condition_occurrence`` row without a visit.  So every planted case lies in that
cohort's time at risk (from day 1 to the end of observation).

Risk: ``p = min(1, N / 1e6 * w / MEAN_WEIGHT[preset])`` with ``w`` = 3 for a boy times 3
for a child under :data:`YOUNG_YEARS` at the index (:data:`RISK_FACTORS`).
``MEAN_WEIGHT`` is the mean of ``w`` over all persons (0 for those who cannot get it),
measured on the generator's population, so the expected count is about N per million
persons; ``oracle.json`` holds the exact expectation (the sum of ``p``) and the count.

Randomness: two uniforms per person from ``default_rng([seed, TAG, block])`` per block of
:data:`BLOCK_PERSONS` person ids, never the generator's own streams, so the draws depend on
the seed and the person id only (not on ``chunk_persons``) and no other row changes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cohortflow.synth import vocab as V  # noqa: N812
from cohortflow.synth._plant_rows import (
    DAY_US,
    days,
    insert_rows,
    ints,
    new_ids,
    sort_key,
)
from cohortflow.synth._tables import table_of

RARE_DISEASE, RARE_GROUPER = 2_000_000_020, 2_000_000_021
TAG = 0x4A4E  # keeps the rare-disease streams apart from every other
BLOCK_PERSONS = 1000
PRIOR_OBS_DAYS = 365
YOUNG_YEARS = 6
RISK_FACTORS = {"male": 3.0, f"age_under_{YOUNG_YEARS}_years_at_index": 3.0}
# Mean over persons of (can get it) x w, measured on 500,000 demo and 50,000 warehouse
# persons (seed 0; standard errors 0.2% and 0.4%), so the expected count per million
# persons is N to within about 1%.
MEAN_WEIGHT = {"demo": 3.190, "warehouse": 3.270}
CONCEPTS = (
    (RARE_DISEASE, "Rare disease (planted)", "Condition", V.LOCAL, "Clinical Finding", "S",
     "CFS-C0020"),
    (RARE_GROUPER, "Rare disorders (local grouper)", "Condition", V.LOCAL, "Clinical Finding",
     "C", "CFS-C0021"),
)
ANCESTORS = ((RARE_DISEASE, RARE_DISEASE, 0, 0), (RARE_GROUPER, RARE_DISEASE, 1, 1),
             (RARE_GROUPER, RARE_GROUPER, 0, 0))
_GROUPS = ("girls", "boys")


def draws(seed: int, person_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two uniforms of each person (the case draw, the day draw): a function of
    ``(seed, person_id)`` only.

    >>> a = draws(3, np.arange(1, 2501))
    >>> b = draws(3, np.arange(1001, 1501))
    >>> bool((a[0][1000:1500] == b[0]).all() and (a[1][1000:1500] == b[1]).all())
    True
    """
    slot = np.asarray(person_id, np.int64) - 1
    block = slot // BLOCK_PERSONS
    u = np.empty((2, slot.size))
    for b in np.unique(block):
        here = block == b
        u[:, here] = np.random.default_rng([seed, TAG, int(b)]).random(
            (2, BLOCK_PERSONS))[:, slot[here] % BLOCK_PERSONS]
    return u[0], u[1]


def targets(tables: dict[str, pa.Table]) -> dict[str, np.ndarray]:
    """Each person of a chunk who can get the disease: ``person_id``, ``index`` (day), the
    ``end`` of the index's observation period, ``male`` and ``young``."""
    person = tables["person"]
    pid = ints(person, "person_id")
    male = ints(person, "gender_concept_id") == V.MALE
    birth = days(person, "birth_datetime")
    per = tables["observation_period"]
    pp, ps, pe = (ints(per, "person_id"), days(per, "observation_period_start_date"),
                  days(per, "observation_period_end_date"))
    order = np.argsort(sort_key(pp, ps), kind="stable")
    pp, ps, pe = pp[order], ps[order], pe[order]
    vis = tables["visit_occurrence"]
    vp, vd = ints(vis, "person_id"), days(vis, "visit_start_date")
    at = np.searchsorted(sort_key(pp, ps), sort_key(vp, vd), side="right") - 1
    found = at >= 0
    at = np.maximum(at, 0)
    found &= (pp[at] == vp) & (vd <= pe[at])
    ok = found & (vd - ps[at] >= PRIOR_OBS_DAYS)
    vp, vd, vend = vp[ok], vd[ok], pe[at[ok]]
    first = np.lexsort((vd, vp))
    vp, vd, vend = vp[first], vd[first], vend[first]
    head = np.r_[True, vp[1:] != vp[:-1]] if vp.size else np.zeros(0, bool)
    vp, vd, vend = vp[head], vd[head], vend[head]
    keep = vend > vd
    vp, vd, vend = vp[keep], vd[keep], vend[keep]
    slot = np.searchsorted(pid, vp)
    return {"person_id": vp, "index": vd, "end": vend, "male": male[slot],
            "young": (vd - birth[slot]) / 365.25 < YOUNG_YEARS}


class RarePlant:
    """Plants the rare disease chunk by chunk and keeps the counts for ``oracle.json``."""

    def __init__(self, seed: int, per_million: float, preset: str) -> None:
        self.seed, self.per_million, self.preset = seed, float(per_million), preset
        self.expected = 0.0
        self.eligible = np.zeros((2, 2), np.int64)  # [male, young]
        self.cases = np.zeros((2, 2), np.int64)

    def chunk(self, tables: dict[str, pa.Table], ids: dict[str, int]) -> dict[str, pa.Table]:
        """The chunk's tables with its cases' condition rows inserted."""
        t = targets(tables)
        weight = np.ones(t["index"].size)
        for factor, flag in zip(RISK_FACTORS.values(), (t["male"], t["young"]), strict=True):
            weight *= np.where(flag, factor, 1.0)
        p = np.minimum(1.0, self.per_million / 1e6 * weight / MEAN_WEIGHT[self.preset])
        u_case, u_day = draws(self.seed, t["person_id"])
        case = u_case < p
        self.expected += float(p.sum())
        np.add.at(self.eligible, (t["male"].astype(int), t["young"].astype(int)), 1)
        np.add.at(self.cases, (t["male"][case].astype(int), t["young"][case].astype(int)), 1)
        who, index, end = t["person_id"][case], t["index"][case], t["end"][case]
        day = index + 1 + (u_day[case] * (end - index)).astype(np.int64)
        cond = tables["condition_occurrence"]
        rows = table_of(cond.schema, who.size, {
            "condition_occurrence_id": new_ids(ids, "condition_occurrence", who.size),
            "person_id": who, "condition_concept_id": RARE_DISEASE,
            "condition_start_date": pa.array(day.astype("datetime64[D]"), pa.date32()),
            "condition_start_datetime": pa.array((day * DAY_US).astype("datetime64[us]"),
                                                 pa.timestamp("us")),
            "condition_type_concept_id": V.EHR, "condition_status_concept_id": 0,
            "condition_source_concept_id": 0})
        key = sort_key(ints(cond, "person_id"), days(cond, "condition_start_date"))
        return {**tables, "condition_occurrence": insert_rows(cond, key, rows,
                                                              sort_key(who, day))}

    def oracle(self, persons: int) -> dict[str, object]:
        """What was planted, for ``oracle.json``."""
        groups = {f"{sex}_{age}": {"eligible": int(self.eligible[m, y]),
                                   "cases": int(self.cases[m, y])}
                  for m, sex in enumerate(_GROUPS)
                  for y, age in ((1, f"under_{YOUNG_YEARS}"), (0, f"{YOUNG_YEARS}_plus"))}
        return {
            "description": (
                "One condition_occurrence of 2000000020 'Rare disease (planted)' (a descendant "
                "of 2000000021 'Rare disorders') for about rare_disease_per_million persons "
                "per million.  Only persons whose first visit with at least 365 days of prior "
                "observation in its period (the index) is not that period's last day can get "
                "it; the day is uniform in [index+1, end of that period] and the row has no "
                "visit.  Risk = min(1, per_million/1e6 * w / mean_weight), w = the product "
                "of the risk factors that apply."),
            "concept_id": RARE_DISEASE, "ancestor_concept_id": RARE_GROUPER,
            "per_million": self.per_million, "persons": persons,
            "risk_factors": dict(RISK_FACTORS), "mean_weight": MEAN_WEIGHT[self.preset],
            "expected_cases": round(self.expected, 3),
            "planted_cases": int(self.cases.sum()),
            "eligible_persons": int(self.eligible.sum()),
            "by_group": groups,
        }
