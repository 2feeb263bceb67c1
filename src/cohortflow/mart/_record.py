"""The de-identification record of a mart (``deid_report.json``): what was done, table by
table, how each HIPAA Safe Harbor identifier is handled, and the k-anonymity reached.

Every count in it is suppressed at the study's ``min_cell_count``
(:func:`cohortflow.privacy.suppress_value`); so is the suppressed share when the count
behind it is small (the share times the persons would give the count back: it becomes an
upper bound, ``"<1.1%"``), and so is the k reached, the size of the smallest class left
(at least k by construction; ``None`` when every person was suppressed).  A cohort of
fewer than k persons has no record: the export refuses it.
"""

from __future__ import annotations

from typing import Any

from cohortflow.mart import _kanon
from cohortflow.privacy import small, suppress_value
from cohortflow.study import Study
from cohortflow.study._mart import MART_TABLES

FORMAT = "cohortflow-deid-report/1"


def year_detail(anonymised: _kanon.Anonymised, top_code_age: int, quasi: bool) -> str:
    """How year_of_birth was derived, in words."""
    steps = ["the year of the shifted birth date"]
    if quasi:
        steps.append("k-anonymity: " + _kanon.describe(
            "year_of_birth", anonymised.levels["year_of_birth"]))
        if anonymised.suppressed_year is not None:
            steps.append(f"suppressed persons get {anonymised.suppressed_year} (the first "
                         "year of the cohort's earliest 20-year band)")
    steps.append(f"raised where needed so that nobody is older than {top_code_age + 1} at "
                 "their last shifted date")
    return "; ".join(steps)


def _share(suppressed: int, persons: int, min_cell_count: int) -> float | str:
    """The suppressed share (0-1), or, when the count is small, an upper bound as a
    percentage (the page shows a string as given).

    >>> _share(0, 100, 11), _share(20, 1000, 11), _share(3, 1000, 11), _share(3, 30, 11)
    (0.0, 0.02, '<1.1%', '<37%')
    """
    if persons == 0:
        return 0.0
    if small(suppressed, min_cell_count):
        return f"<{100 * min_cell_count / persons:.2g}%"
    return round(suppressed / persons, 4)


def _suppression_words(anonymised: _kanon.Anonymised, persons: int, k: int) -> str:
    """What suppression does, and what the record cannot show and why: a small number of
    suppressed persons (shown as ``<k``, its share as a bound), or nobody left unsuppressed
    (no k reached)."""
    words = ("quasi-identifiers of persons left in a class under k set to one value each "
             "(concepts 0, zip3 \"000\", state and month null, year of birth the first year "
             "of the cohort's earliest 20-year band); no person is dropped")
    if small(anonymised.suppressed, k):
        words += (f". Their number is under {k}, so it is shown as <{k} and their share as "
                  f"an upper bound ({k} / {persons} persons): the exact share would give the "
                  "number back")
    if anonymised.k_reached is None and persons:
        words += (". Every person was suppressed: even the most general level left no class "
                  "of at least k, so no k is reached (shown as —)")
    return words


def _k_reached(reached: int | None, min_cell_count: int) -> int | str | None:
    """The smallest class left, a class size: suppressed like a count when under k (it is
    not, by construction: persons in classes under k are suppressed), ``None`` when every
    person was suppressed.

    >>> _k_reached(14, 11), _k_reached(None, 11), _k_reached(4, 11)
    (14, None, '<11')
    """
    return None if reached is None else suppress_value(reached, min_cell_count)


def safe_harbor(study: Study, has_location: bool) -> list[dict[str, str]]:
    """The 18 identifiers of 45 CFR §164.514(b)(2)(i), in order, each with its handling."""
    policy = study.mart
    kept = ", ".join(policy.keep_columns)
    free_text = ("free-text and *_source_value columns are dropped"
                 + (f" (kept by policy: {kept}; the data steward checked they hold none)"
                    if kept else ""))
    shift = policy.date_shift_days
    birth = "year" if policy.birth == "year" else "year and shifted month"
    zip_handling = (
        "location.zip cut to its first three digits (000 for the 17 restricted three-digit "
        "areas of 20,000 people or fewer); state kept; address, city, county, latitude and "
        "longitude dropped; one location row per (zip3, state)" if has_location else
        "the source has no location table: no geography below the state is exported")
    return [
        {"identifier": "Names", "handling": "not held in the exported tables; " + free_text},
        {"identifier": "Geographic subdivisions smaller than a state", "handling":
         zip_handling},
        {"identifier": "All elements of dates (except year) directly related to an individual,"
                       " and all ages over 89", "handling":
         f"every date and time of a person shifted by one keyed, reproducible offset in "
         f"[-{shift}, -1] or [1, {shift}] days (intervals kept); births keep the {birth} only; "
         f"ages over {policy.top_code_age} top-coded. This is a shifted-dates mart: shifted "
         "dates keep a month and day, which Safe Harbor strictly does not allow (it allows "
         "years only); its release rests on the shift and the k-anonymity, an expert "
         "determination, not on Safe Harbor alone"},
        {"identifier": "Telephone numbers", "handling": "not held in the exported tables; "
         + free_text},
        {"identifier": "Fax numbers", "handling": "not held in the exported tables; "
         + free_text},
        {"identifier": "Email addresses", "handling": "not held in the exported tables; "
         + free_text},
        {"identifier": "Social security numbers", "handling": "not held in the exported "
         "tables; " + free_text},
        {"identifier": "Medical record numbers", "handling": "person_source_value dropped "
         "(never kept); person_id replaced by a keyed 63-bit pseudonym"},
        {"identifier": "Health plan beneficiary numbers", "handling": "payer tables are not "
         "exported; " + free_text},
        {"identifier": "Account numbers", "handling": "not held in the exported tables; "
         + free_text},
        {"identifier": "Certificate/license numbers", "handling": "provider ids nulled (the "
         "provider table is not exported); " + free_text},
        {"identifier": "Vehicle identifiers and serial numbers, including license plate "
                       "numbers", "handling": "not held in the exported tables; " + free_text},
        {"identifier": "Device identifiers and serial numbers", "handling": "device_exposure "
         "is not exported; lot_number and other free text dropped"},
        {"identifier": "Web Universal Resource Locators (URLs)", "handling": "not held in the "
         "exported tables; " + free_text},
        {"identifier": "Internet Protocol (IP) address numbers", "handling": "not held in the "
         "exported tables; " + free_text},
        {"identifier": "Biometric identifiers, including finger and voice prints",
         "handling": "not held in OMOP CDM tables; notes and images are not exported"},
        {"identifier": "Full face photographic images and any comparable images",
         "handling": "not held in OMOP CDM tables; notes and images are not exported"},
        {"identifier": "Any other unique identifying number, characteristic, or code",
         "handling": "person ids pseudonymised (keyed HMAC); every other row id renumbered "
         "1..n and foreign keys remapped; ids of tables not exported (provider, care site, "
         "visit detail) nulled; k-anonymity over "
         f"{', '.join(policy.quasi_identifiers) or 'no quasi-identifiers'} with k = "
         f"{study.min_cell_count}"},
    ]


def build(study: Study, cohort: str, anonymised: _kanon.Anonymised, rows: dict[str, int],
          actions: list[dict[str, str]], written: list[str], *, has_location: bool
          ) -> dict[str, Any]:
    """The record, in the shape the report renders (see ``cohortflow.mart._report``)."""
    policy = study.mart
    k = study.min_cell_count
    persons = anonymised.frame.height
    order = {t: i for i, t in enumerate(MART_TABLES)}
    transformations = sorted(actions, key=lambda a: order.get(a["table"], len(order)))
    return {
        "format": FORMAT,
        "study": study.name,
        "cohort": cohort,
        "min_cell_count": k,
        "k": k,
        "k_reached": _k_reached(anonymised.k_reached, k),
        "persons": suppress_value(persons, k),
        "quasi_identifiers": list(policy.quasi_identifiers),
        "generalisation": [
            {"column": q, "level": anonymised.levels[q],
             "description": _kanon.describe(q, anonymised.levels[q])}
            for q in policy.quasi_identifiers],
        "suppression": {
            "persons": suppress_value(anonymised.suppressed, k),
            "share": _share(anonymised.suppressed, persons, k),
            "within_limit": anonymised.within_limit,
            "max_share": policy.max_suppression,
            "description": _suppression_words(anonymised, persons, k)},
        "date_shift": {
            "min_days": -policy.date_shift_days, "max_days": policy.date_shift_days,
            "description": "one keyed offset per person (HMAC-SHA256 of the id under the "
                           "pseudonym secret, in its own message domain), never 0, applied "
                           "to every date and time of the person: intervals between a "
                           "person's events are kept, calendar dates are not"},
        "transformations": transformations,
        "safe_harbor": safe_harbor(study, has_location),
        "tables": [{"table": t, "rows": suppress_value(rows[t], k)} for t in written],
        "policy": policy.model_dump(mode="json"),
    }
