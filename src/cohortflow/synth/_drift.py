"""Planted drift (``drift:``): changes after a given date, so drift detection has a known
truth.  Demo preset only.  Each part is optional and is a transformation of the rows the
generator wrote, drawn from its own stream ``default_rng([seed, TAG, part, chunk])``:

- ``code_frequency`` (concept_id and its descendants, factor): each event of the code on or
  after the date is kept ``floor(f)`` times plus once more with probability ``f - floor(f)``
  (copies are the same event again, with fresh ids), so its rate per person-year becomes
  ``f`` times what it was;
- ``assay_replacement`` (old, new): every measurement of ``old`` on or after the date is
  recorded as ``new`` instead (a concept added to the vocabulary, next to ``old``);
- ``outcome_rate_factor`` (f): children of the planted cohort whose index date is on or after
  the date have their exacerbation risk ``r`` raised (or lowered) to ``min(1, f * r)``: a
  recorded exacerbation is dropped with probability ``1 - f`` (f < 1), or one is added, at the
  day the generator drew, with probability ``(min(1, f r) - r) / (1 - r)`` (f > 1).

The measured effect of every part goes to ``oracle.json`` under ``drift``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortflow.errors import CohortflowError
from cohortflow.synth import vocab as V  # noqa: N812
from cohortflow.synth._plant_rows import (
    DAY_US,
    days,
    insert_rows,
    ints,
    new_ids,
    repeat_rows,
    sort_key,
)
from cohortflow.synth._planted import OUTCOME_DAYS
from cohortflow.synth._tables import table_of

TAG = 0xD21F  # keeps the drift streams apart from every other
_PART = {"code_frequency": 1, "assay_replacement": 2, "outcome_rate_factor": 3}
_DOMAIN_TABLE = {  # concept domain -> (table, concept column, date column)
    "Condition": ("condition_occurrence", "condition_concept_id", "condition_start_date"),
    "Drug": ("drug_exposure", "drug_concept_id", "drug_exposure_start_date"),
    "Procedure": ("procedure_occurrence", "procedure_concept_id", "procedure_date"),
    "Measurement": ("measurement", "measurement_concept_id", "measurement_date"),
}
_FIX = ("fix: e.g. drift: {after: 2021-01-01, code_frequency: {concept_id: 1177480, "
        "factor: 2.0}}")


@dataclass(frozen=True)
class Drift:
    """What changes after ``after`` (see the module docs); ``None`` parts are off."""

    after: dt.date
    code_frequency: tuple[int, float] | None = None
    assay_replacement: tuple[int, int] | None = None
    outcome_rate_factor: float | None = None

    @classmethod
    def of(cls, value: Drift | Mapping[str, Any] | None) -> Drift | None:
        """A :class:`Drift` from itself or a mapping as in a study's ``source.synth.drift``.

        >>> Drift.of({"after": "2021-01-01", "outcome_rate_factor": 1.5}).after
        datetime.date(2021, 1, 1)
        """
        if value is None or isinstance(value, Drift):
            return value
        unknown = sorted(set(value) - {"after", *_PART})
        if unknown:
            raise CohortflowError(f"drift: unknown key(s) {', '.join(map(str, unknown))}; "
                                  f"known: after, {', '.join(_PART)}; {_FIX}")
        try:
            after = value["after"]
            after = after if isinstance(after, dt.date) else dt.date.fromisoformat(str(after))
            freq, assay = value.get("code_frequency"), value.get("assay_replacement")
            factor = value.get("outcome_rate_factor")
            drift = cls(
                after=after,
                code_frequency=None if freq is None else (int(freq["concept_id"]),
                                                          float(freq["factor"])),
                assay_replacement=None if assay is None else (int(assay["old"]),
                                                              int(assay["new"])),
                outcome_rate_factor=None if factor is None else float(factor))
        except (KeyError, TypeError, ValueError) as exc:
            raise CohortflowError(f"drift: {exc!r} is not a drift setting; {_FIX}") from None
        if (drift.code_frequency is None and drift.assay_replacement is None
                and drift.outcome_rate_factor is None):
            raise CohortflowError("drift: no part given (code_frequency, assay_replacement, "
                                  f"outcome_rate_factor); {_FIX}")
        if drift.code_frequency is not None and not drift.code_frequency[1] >= 0:
            raise CohortflowError("drift.code_frequency.factor must be >= 0; fix: factor: 2.0")
        if drift.outcome_rate_factor is not None and not drift.outcome_rate_factor > 0:
            raise CohortflowError("drift.outcome_rate_factor must be > 0; "
                                  "fix: outcome_rate_factor: 1.5")
        return drift

    def settings(self) -> dict[str, object]:
        """The parts that are on, as plain data (for ``synth.json`` and ``oracle.json``)."""
        out: dict[str, object] = {"after": self.after.isoformat()}
        if self.code_frequency is not None:
            out["code_frequency"] = {"concept_id": self.code_frequency[0],
                                     "factor": self.code_frequency[1]}
        if self.assay_replacement is not None:
            out["assay_replacement"] = {"old": self.assay_replacement[0],
                                        "new": self.assay_replacement[1]}
        if self.outcome_rate_factor is not None:
            out["outcome_rate_factor"] = self.outcome_rate_factor
        return out


def _rate(events: int, days_observed: int) -> float | None:
    return None if days_observed == 0 else round(events / (days_observed / 365.25) * 1000, 4)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or a == 0 else round(b / a, 4)


class DriftPlant:
    """Plants a :class:`Drift` chunk by chunk and measures it for ``oracle.json``."""

    def __init__(self, seed: int, drift: Drift, concept: pa.Table, ancestor: pa.Table) -> None:
        self.seed, self.drift = seed, drift
        self.after = int(np.datetime64(drift.after, "D").astype(np.int64))
        ids = ints(concept, "concept_id")
        domain = dict(zip(ids.tolist(), concept.column("domain_id").to_pylist(), strict=True))
        self.n = dict.fromkeys(("py_before", "py_after", "code_before", "code_after",
                                "code_after_as_written", "assay_old_before",
                                "assay_recoded", "assay_old_after", "cohort_before",
                                "cohort_after", "outcomes_before", "outcomes_after",
                                "outcomes_after_as_written", "full_before", "full_after",
                                "full_outcomes_before", "full_outcomes_after"), 0)
        self.codes = np.zeros(0, np.int64)
        self.code_table = ("", "", "")
        if drift.code_frequency is not None:
            cid = drift.code_frequency[0]
            if cid not in domain:
                raise CohortflowError(f"drift.code_frequency.concept_id {cid} is not in the "
                                      "synthetic vocabulary; fix: concept_id: 1177480")
            anc = ints(ancestor, "ancestor_concept_id")
            self.codes = np.unique(np.r_[cid, ints(ancestor, "descendant_concept_id")[
                anc == cid]])
            kinds = {str(domain.get(int(c))) for c in self.codes} & set(_DOMAIN_TABLE)
            if len(kinds) != 1:
                raise CohortflowError(
                    f"drift.code_frequency.concept_id {cid}: its codes are in no event table "
                    "(or in several); fix: a condition, drug, procedure or measurement code")
            self.code_table = _DOMAIN_TABLE[kinds.pop()]
        if drift.assay_replacement is not None:
            old, new = drift.assay_replacement
            if domain.get(old) != "Measurement":
                raise CohortflowError(f"drift.assay_replacement.old {old} is not a measurement "
                                      "concept of the synthetic vocabulary; fix: old: "
                                      f"{V.EOSINOPHILS}")
            if new in domain:
                raise CohortflowError(f"drift.assay_replacement.new {new} is already a concept; "
                                      "fix: a new local id, e.g. new: 2000000202")

    # ---- vocabulary ------------------------------------------------------------------------

    def concepts(self, concept: pa.Table) -> list[tuple[int, str, str, str, str, str | None,
                                                         str]]:
        """The new assay's concept row (none without an assay replacement)."""
        if self.drift.assay_replacement is None:
            return []
        old, new = self.drift.assay_replacement
        row = concept.filter(pc.equal(concept.column("concept_id"), old)).to_pylist()[0]
        return [(new, f"{row['concept_name']} (new assay)", row["domain_id"], V.LOCAL,
                 row["concept_class_id"], row["standard_concept"], f"CFS-M{new % 100000:05d}")]

    def ancestors(self, ancestor: pa.Table) -> list[tuple[int, int, int, int]]:
        """The new assay sits where the old one does: its ancestors, levels and self row."""
        if self.drift.assay_replacement is None:
            return []
        old, new = self.drift.assay_replacement
        up = ancestor.filter(pc.equal(ancestor.column("descendant_concept_id"), old))
        rows = [(new if r["ancestor_concept_id"] == old else r["ancestor_concept_id"], new,
                 r["min_levels_of_separation"], r["max_levels_of_separation"])
                for r in up.to_pylist()]
        return rows or [(new, new, 0, 0)]

    # ---- one chunk -------------------------------------------------------------------------

    def _rng(self, part: str, ci: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, TAG, _PART[part], ci])

    def chunk(self, ci: int, tables: dict[str, pa.Table], ids: dict[str, int],
              keep: dict[str, np.ndarray] | None, risk: np.ndarray, label: np.ndarray
              ) -> tuple[dict[str, pa.Table], np.ndarray, np.ndarray]:
        """The chunk's tables, eligible risks and labels after the drift."""
        per = tables["observation_period"]
        ps = days(per, "observation_period_start_date")
        pe = days(per, "observation_period_end_date") + 1
        self.n["py_before"] += int(np.clip(np.minimum(pe, self.after) - ps, 0, None).sum())
        self.n["py_after"] += int(np.clip(pe - np.maximum(ps, self.after), 0, None).sum())
        tables = dict(tables)
        if self.drift.code_frequency is not None:
            self._code_frequency(ci, tables, ids)
        if self.drift.assay_replacement is not None:
            self._assay(tables)
        if self.drift.outcome_rate_factor is not None:
            assert keep is not None, "the outcome drift needs the planted outcome's arrays"
            risk, label = self._outcome(ci, tables, ids, keep)
        return tables, risk, label

    def _code_frequency(self, ci: int, tables: dict[str, pa.Table], ids: dict[str, int]
                        ) -> None:
        assert self.drift.code_frequency is not None
        factor = self.drift.code_frequency[1]
        name, concept, date = self.code_table
        t = tables[name]
        hit = np.isin(ints(t, concept), self.codes)
        late = days(t, date) >= self.after
        sel = hit & late
        whole = np.floor(factor)
        extra = self._rng("code_frequency", ci).random(int(sel.sum())) < factor - whole
        counts = np.ones(t.num_rows, np.int64)
        counts[sel] = int(whole) + extra
        tables[name] = repeat_rows(t, counts, ids, name)
        self.n["code_before"] += int((hit & ~late).sum())
        self.n["code_after_as_written"] += int(sel.sum())
        self.n["code_after"] += int(counts[sel].sum())

    def _assay(self, tables: dict[str, pa.Table]) -> None:
        assert self.drift.assay_replacement is not None
        old, new = self.drift.assay_replacement
        t = tables["measurement"]
        c = ints(t, "measurement_concept_id")
        late = days(t, "measurement_date") >= self.after
        recode = (c == old) & late
        c[recode] = new
        col = t.schema.get_field_index("measurement_concept_id")
        tables["measurement"] = t.set_column(col, "measurement_concept_id",
                                             pa.array(c, pa.int64()))
        self.n["assay_old_before"] += int(((c == old) & ~late).sum())
        self.n["assay_recoded"] += int(recode.sum())
        self.n["assay_old_after"] += int(((c == old) & late).sum())

    def _outcome(self, ci: int, tables: dict[str, pa.Table], ids: dict[str, int],
                 keep: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        f = self.drift.outcome_rate_factor
        assert f is not None
        risk, recorded, asthma = keep["risk"], keep["recorded"], keep["asthma"]
        index, exac_day, p_end = keep["index"], keep["exac_day"], keep["p_end"]
        eligible, pid = keep["eligible"], keep["person_id"]
        n = risk.size
        rng = self._rng("outcome_rate_factor", ci)
        u, minute = rng.random(n), rng.integers(8 * 60, 20 * 60, n)
        stay, spell = rng.integers(15, 180, n), rng.integers(0, 15, n)
        late = asthma & (index >= self.after)
        seen = late & (exac_day <= p_end)
        new_risk = np.where(late, np.minimum(1.0, f * risk), risk)
        if f >= 1:
            q = np.where(risk < 1, (new_risk - risk) / np.maximum(1 - risk, 1e-12), 0.0)
            add, drop = seen & ~recorded & (u < q), np.zeros(n, bool)
        else:
            add, drop = np.zeros(n, bool), seen & recorded & (u >= f)
        if drop.any():
            cond = tables["condition_occurrence"]
            gone = np.isin(ints(cond, "person_id"), pid[drop]) & (
                ints(cond, "condition_concept_id") == V.EXACERBATION)
            visits = ints(cond, "visit_occurrence_id")[gone]
            for name in ("visit_occurrence", "condition_occurrence", "drug_exposure",
                         "procedure_occurrence"):
                t = tables[name]
                tables[name] = t.filter(pa.array(~np.isin(ints(t, "visit_occurrence_id"),
                                                          visits)))
        if add.any():
            self._add_exacerbations(tables, ids, pid[add], exac_day[add], p_end[add],
                                    minute[add], stay[add], spell[add])
        new_recorded = (recorded & ~drop) | add
        self.n["cohort_before"] += int((eligible & ~late).sum())
        self.n["cohort_after"] += int((eligible & late).sum())
        self.n["outcomes_before"] += int((eligible & ~late & new_recorded).sum())
        self.n["outcomes_after"] += int((eligible & late & new_recorded).sum())
        self.n["outcomes_after_as_written"] += int((eligible & late & recorded).sum())
        full = eligible & (index + OUTCOME_DAYS <= p_end)  # the whole year at risk observed
        self.n["full_before"] += int((full & ~late).sum())
        self.n["full_after"] += int((full & late).sum())
        self.n["full_outcomes_before"] += int((full & ~late & new_recorded).sum())
        self.n["full_outcomes_after"] += int((full & late & new_recorded).sum())
        return new_risk[eligible], new_recorded[eligible]

    @staticmethod
    def _add_exacerbations(tables: dict[str, pa.Table], ids: dict[str, int], who: np.ndarray,
                           day: np.ndarray, p_end: np.ndarray, minute: np.ndarray,
                           stay: np.ndarray, spell: np.ndarray) -> None:
        """An ER visit with the exacerbation code, albuterol and a nebulizer, as the
        generator writes a planted exacerbation."""
        k = who.size
        start = day * DAY_US + minute * 60_000_000

        def date(d: np.ndarray) -> pa.Array:
            return pa.array(d.astype("datetime64[D]"), pa.date32())

        def stamp(us: np.ndarray) -> pa.Array:
            return pa.array(us.astype("datetime64[us]"), pa.timestamp("us"))

        def put(name: str, date_col: str, cols: dict[str, object]) -> None:
            t = tables[name]
            new = table_of(t.schema, k, cols)
            tables[name] = insert_rows(t, sort_key(ints(t, "person_id"), days(t, date_col)),
                                       new, sort_key(who, day))

        vid = new_ids(ids, "visit_occurrence", k)
        put("visit_occurrence", "visit_start_date", {
            "visit_occurrence_id": vid, "person_id": who, "visit_concept_id": V.EMERGENCY,
            "visit_start_date": date(day), "visit_start_datetime": stamp(start),
            "visit_end_date": date(day), "visit_end_datetime": stamp(start + stay * 60_000_000),
            "visit_type_concept_id": V.EHR, "visit_source_concept_id": 0})
        end = np.minimum(day + spell, p_end)
        put("condition_occurrence", "condition_start_date", {
            "condition_occurrence_id": new_ids(ids, "condition_occurrence", k),
            "person_id": who, "condition_concept_id": V.EXACERBATION, "visit_occurrence_id": vid,
            "condition_source_concept_id": 0, "condition_start_date": date(day),
            "condition_start_datetime": stamp(start), "condition_end_date": date(end),
            "condition_end_datetime": stamp(end * DAY_US),
            "condition_type_concept_id": V.EHR, "condition_status_concept_id": 0})
        supply = V.DAYS_SUPPLY[V.ALBUTEROL_MDI]
        end = np.minimum(day + supply - 1, p_end)
        put("drug_exposure", "drug_exposure_start_date", {
            "drug_exposure_id": new_ids(ids, "drug_exposure", k), "person_id": who,
            "drug_concept_id": V.ALBUTEROL_MDI, "visit_occurrence_id": vid,
            "drug_source_concept_id": 0, "drug_exposure_start_date": date(day),
            "drug_exposure_start_datetime": stamp(start), "drug_exposure_end_date": date(end),
            "drug_exposure_end_datetime": stamp(end * DAY_US), "drug_type_concept_id": V.EHR,
            "refills": 0, "days_supply": supply,
            "quantity": V.QUANTITY[V.ALBUTEROL_MDI], "route_concept_id": 0})
        put("procedure_occurrence", "procedure_date", {
            "procedure_occurrence_id": new_ids(ids, "procedure_occurrence", k),
            "person_id": who, "procedure_concept_id": V.NEBULIZER, "visit_occurrence_id": vid,
            "procedure_source_concept_id": 0, "procedure_date": date(day),
            "procedure_datetime": stamp(start), "procedure_type_concept_id": V.EHR,
            "modifier_concept_id": 0, "quantity": 1})

    # ---- oracle.json -----------------------------------------------------------------------

    def oracle(self) -> dict[str, object]:
        """The drift's settings and its effect measured on the written tables."""
        n = self.n
        out: dict[str, object] = {"settings": self.drift.settings(),
                                  "person_years_before": round(n["py_before"] / 365.25, 2),
                                  "person_years_after": round(n["py_after"] / 365.25, 2)}
        if self.drift.code_frequency is not None:
            before = _rate(n["code_before"], n["py_before"])
            after = _rate(n["code_after"], n["py_after"])
            written = _rate(n["code_after_as_written"], n["py_after"])
            out["code_frequency"] = {
                "concept_ids": [int(c) for c in self.codes], "table": self.code_table[0],
                "events_before": n["code_before"], "events_after": n["code_after"],
                "per_1000_person_years_before": before, "per_1000_person_years_after": after,
                "ratio": _ratio(before, after),
                "ratio_without_drift": _ratio(before, written)}
        if self.drift.assay_replacement is not None:
            late = n["assay_recoded"] + n["assay_old_after"]
            out["assay_replacement"] = {
                "old_before": n["assay_old_before"], "recoded_after": n["assay_recoded"],
                "old_after": n["assay_old_after"],
                "share_recoded": None if late == 0 else round(n["assay_recoded"] / late, 4)}
        if self.drift.outcome_rate_factor is not None:
            def rate(k: str, m: str) -> float | None:
                return None if n[m] == 0 else round(n[k] / n[m], 4)
            before = rate("outcomes_before", "cohort_before")
            after = rate("outcomes_after", "cohort_after")
            written = rate("outcomes_after_as_written", "cohort_after")
            full_before = rate("full_outcomes_before", "full_before")
            full_after = rate("full_outcomes_after", "full_after")
            out["outcome_rate"] = {
                "cohort": "the planted study's eligible children, by index date (before or "
                          "on/after the date); full_year_*: those observed the whole year "
                          "at risk (the others' rate is cut by the end of observation)",
                "eligible_before": n["cohort_before"], "eligible_after": n["cohort_after"],
                "outcomes_before": n["outcomes_before"], "outcomes_after": n["outcomes_after"],
                "rate_before": before, "rate_after": after, "ratio": _ratio(before, after),
                "ratio_without_drift": _ratio(before, written),
                "rate_after_without_drift": written,
                "full_year_eligible_before": n["full_before"],
                "full_year_eligible_after": n["full_after"],
                "full_year_rate_before": full_before, "full_year_rate_after": full_after,
                "full_year_ratio": _ratio(full_before, full_after)}
        return out
