"""k-anonymity over a mart's quasi-identifiers: global recoding, then suppression.

Each quasi-identifier has a short hierarchy of generalisations (year of birth: the year,
then 5-, 10- and 20-year bands stored as the band's first year; a concept: itself, then 0;
a ZIP3: itself, then ``000``).  Every combination of levels (a small lattice) is tried; the
one chosen loses the least information (the sum over quasi-identifiers of level / highest
level) among those that leave at most ``max_suppression`` of the persons in classes smaller
than k; ties go to fewer suppressed persons, then to the lower levels in the order the
quasi-identifiers are listed.  The persons still in small classes are then suppressed:
their quasi-identifiers are all set to one value each (:data:`SUPPRESSED`), so they form
one class, and nobody is dropped.  A suppressed person's year of birth is the first year
of the cohort's earliest 20-year band, so it is never after the real one (no event of the
person comes before the birth the mart shows).

Years of birth of persons top-coded for age arrive as :data:`TOP_CODED`: they are one
category ("older than the top-coding age") that no band splits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from cohortflow.mart._geo import SUPPRESSED_ZIP3

TOP_CODED = -1
"""Year of birth of a person older than the top-coding age at their last date: one category."""


@dataclass(frozen=True)
class Level:
    """One generalisation of a quasi-identifier."""

    description: str
    recode: Callable[[pl.Expr], pl.Expr]


def _exact(column: pl.Expr) -> pl.Expr:
    return column


def _band(width: int) -> Callable[[pl.Expr], pl.Expr]:
    def recode(column: pl.Expr) -> pl.Expr:
        return pl.when(column == TOP_CODED).then(column).otherwise((column // width) * width)
    return recode


def _constant(value: object) -> Callable[[pl.Expr], pl.Expr]:
    def recode(column: pl.Expr) -> pl.Expr:
        return pl.lit(value)
    return recode


_CONCEPT = (Level("kept", _exact), Level("set to 0 (no matching concept)", _constant(0)))
HIERARCHIES: dict[str, tuple[Level, ...]] = {
    "year_of_birth": (Level("year kept", _exact),
                      Level("5-year bands (first year kept)", _band(5)),
                      Level("10-year bands (first year kept)", _band(10)),
                      Level("20-year bands (first year kept)", _band(20))),
    "gender_concept_id": _CONCEPT,
    "race_concept_id": _CONCEPT,
    "ethnicity_concept_id": _CONCEPT,
    "zip3": (Level("first three digits", _exact),
             Level(f'set to "{SUPPRESSED_ZIP3}"', _constant(SUPPRESSED_ZIP3))),
    "state": (Level("kept", _exact), Level("set to null", _constant(None))),
    "month_of_birth": (Level("kept", _exact), Level("set to null", _constant(None))),
}
"""The generalisations of each quasi-identifier, from none to the most general."""

SUPPRESSED: dict[str, object] = {
    "gender_concept_id": 0, "race_concept_id": 0, "ethnicity_concept_id": 0,
    "zip3": SUPPRESSED_ZIP3, "state": None, "month_of_birth": None}
"""The value a suppressed person's quasi-identifier gets (year of birth: see the module)."""


@dataclass(frozen=True)
class Anonymised:
    """What :func:`k_anonymise` did.

    ``frame`` holds ``person_id``, the quasi-identifiers as released and ``suppressed``;
    ``levels`` the level chosen per quasi-identifier; ``k_reached`` the smallest class
    among persons not suppressed (None when nobody is left); ``within_limit`` whether the
    suppressed share is at most ``max_suppression`` (False only when even the most general
    level leaves more persons in small classes: they are all suppressed anyway)."""

    frame: pl.DataFrame
    levels: dict[str, int]
    suppressed: int
    k_reached: int | None
    within_limit: bool
    suppressed_year: int | None


def _recode(quasi_identifiers: list[str], levels: tuple[int, ...]) -> list[pl.Expr]:
    return [HIERARCHIES[q][level].recode(pl.col(q)).alias(q)
            for q, level in zip(quasi_identifiers, levels, strict=True)]


def _in_small_classes(persons: pl.DataFrame, quasi_identifiers: list[str],
                      levels: tuple[int, ...], k: int) -> int:
    sizes = persons.select(_recode(quasi_identifiers, levels)).group_by(
        quasi_identifiers).len()
    return int(sizes.filter(pl.col("len") < k)["len"].sum())


def _loss(quasi_identifiers: list[str], levels: tuple[int, ...]) -> float:
    return sum(level / (len(HIERARCHIES[q]) - 1)
               for q, level in zip(quasi_identifiers, levels, strict=True))


def k_anonymise(persons: pl.DataFrame, quasi_identifiers: list[str], k: int,
                max_suppression: float, earliest_year: int | None = None) -> Anonymised:
    """Generalise, then suppress, ``persons``' quasi-identifiers (one row per person, with
    ``person_id``) until every class of persons not suppressed has at least ``k``; see the
    module for the choice.  ``earliest_year`` is the earliest real year of birth when some
    are :data:`TOP_CODED` (the suppressed persons' year is never after it).

    >>> persons = pl.DataFrame({"person_id": range(6), "year_of_birth": [2001, 2002, 2003,
    ...                          2011, 2012, 2013], "gender_concept_id": [8507] * 6})
    >>> done = k_anonymise(persons, ["year_of_birth", "gender_concept_id"], 3, 0.0)
    >>> done.levels, done.suppressed, done.k_reached
    ({'year_of_birth': 1, 'gender_concept_id': 0}, 0, 3)
    >>> done.frame["year_of_birth"].to_list()
    [2000, 2000, 2000, 2010, 2010, 2010]
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    heights = [range(len(HIERARCHIES[q])) for q in quasi_identifiers]
    n = persons.height
    allowed = int(max_suppression * n + 1e-9)
    scored = [(_loss(quasi_identifiers, levels), _in_small_classes(
        persons, quasi_identifiers, levels, k), levels)
        for levels in itertools.product(*heights)]
    fitting = [s for s in scored if s[1] <= allowed]
    if fitting:
        _, small, levels = min(fitting)
    else:
        small, _, levels = min((s[1], s[0], s[2]) for s in scored)
    released = persons.with_columns(_recode(quasi_identifiers, levels))
    sizes = pl.len().over(quasi_identifiers) if quasi_identifiers else pl.lit(n)
    released = released.with_columns((sizes < k).alias("suppressed"))
    year = (_suppressed_year(persons, earliest_year) if "year_of_birth" in quasi_identifiers
            else None)
    values = {**SUPPRESSED, "year_of_birth": year}
    released = released.with_columns(
        pl.when(pl.col("suppressed")).then(pl.lit(values[q], persons.schema[q]))
        .otherwise(pl.col(q)).alias(q) for q in quasi_identifiers)
    kept = released.filter(~pl.col("suppressed"))
    k_reached = (int(kept.group_by(quasi_identifiers).len()["len"].min())  # type: ignore[arg-type]
                 if kept.height and quasi_identifiers else (kept.height or None))
    return Anonymised(frame=released, levels=dict(zip(quasi_identifiers, levels, strict=True)),
                      suppressed=small, k_reached=k_reached, within_limit=small <= allowed,
                      suppressed_year=year)


def _suppressed_year(persons: pl.DataFrame, earliest_year: int | None = None) -> int | None:
    """The first year of the cohort's earliest 20-year band of birth years: the years not
    top-coded and ``earliest_year`` (:data:`TOP_CODED` when there is none).

    >>> _suppressed_year(pl.DataFrame({"year_of_birth": [1995, 2012, TOP_CODED]}))
    1980
    >>> _suppressed_year(pl.DataFrame({"year_of_birth": [1995, TOP_CODED]}), 1921)
    1920
    """
    years = [int(y) for y in persons["year_of_birth"].drop_nulls() if y != TOP_CODED]
    if earliest_year is not None:
        years.append(earliest_year)
    if not years:
        return TOP_CODED if persons.height else None
    return min(years) // 20 * 20


def describe(quasi_identifier: str, level: int) -> str:
    """The words for a level of a quasi-identifier's hierarchy.

    >>> describe("year_of_birth", 1)
    '5-year bands (first year kept)'
    """
    return HIERARCHIES[quasi_identifier][level].description
