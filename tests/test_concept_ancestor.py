"""Descendants are exactly the ``concept_ancestor`` closure, on the whole Eunomia vocabulary.

For every standard concept of Eunomia with a descendant in any clinical table, in the
domain of that table, the persons of a one-concept cohort (the cohort engine's entry step
over the ingested store) equal a DuckDB query over ``concept_ancestor`` and the table.
Eunomia links clinical drugs to their ingredient only at level 2, so a walk of direct
parent links misses them (acetaminophen, 1125315, finds no ``drug_exposure`` at all).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from cohortflow import cohorts, events, omop
from cohortflow.cohorts import CohortPlan
from cohortflow.study import ConceptSet
from tests.test_eunomia import EUNOMIA, study

TABLES = {  # event-store domain -> (clinical table, concept column)
    "CONDITION": ("condition_occurrence", "condition_concept_id"),
    "DRUG": ("drug_exposure", "drug_concept_id"),
    "DRUG_ERA": ("drug_era", "drug_concept_id"),
    "PROCEDURE": ("procedure_occurrence", "procedure_concept_id"),
    "MEASUREMENT": ("measurement", "measurement_concept_id"),
    "OBSERVATION": ("observation", "observation_concept_id"),
    "VISIT": ("visit_occurrence", "visit_concept_id"),
}
ACETAMINOPHEN = 1125315
ALZHEIMERS = 378419


def reference_persons() -> pl.DataFrame:
    """``domain, concept_id, person_id``: every standard concept with a descendant (itself
    included, per concept_ancestor's own level-0 rows) recorded in a clinical table, and
    each person with such a record."""
    parts = " UNION ALL ".join(
        f"""SELECT DISTINCT '{domain}' AS domain, a.ancestor_concept_id AS concept_id,
                   x.person_id AS person_id
            FROM {table} x
            JOIN concept_ancestor a ON a.descendant_concept_id = x.{column}
            JOIN concept c ON c.concept_id = a.ancestor_concept_id
                          AND c.standard_concept = 'S'
            JOIN person p ON p.person_id = x.person_id"""
        for domain, (table, column) in TABLES.items())
    with duckdb.connect(str(EUNOMIA), read_only=True) as con:
        frame = con.sql(parts).pl()
    return frame.select(pl.col("domain"), pl.col("concept_id").cast(pl.Int64),
                        pl.col("person_id").cast(pl.Int64)).sort(pl.all())


@pytest.fixture(scope="module")
def store(eunomia_store: Path) -> Path:
    """Eunomia ingested (the session's one copy)."""
    return eunomia_store


@pytest.fixture(scope="module")
def every_event(store: Path) -> pl.LazyFrame:
    """The whole store in memory (Eunomia is small), as the engine's event frame."""
    return pl.concat([events.scan_shard(store, s) for s in events.list_shards(store)]
                     ).collect().lazy()


def one_concept_plan(codes: pl.DataFrame, domain: str, concept_id: int) -> CohortPlan:
    """A cohort entered by every occurrence of one concept and its descendants."""
    cohort = study("eunomia_gi_bleed").cohort
    concept_set = ConceptSet(include=[{"concept_id": concept_id}], domain=domain)
    return CohortPlan(cohort, {"gi_bleed": concept_set}, codes)


def entry_persons(plan: CohortPlan, ev: pl.LazyFrame) -> list[int]:
    name, entry = cohorts.make_episodes(plan)(ev)[0]
    assert name.startswith("Entry event")
    return sorted(entry.select("subject_id").unique().collect()["subject_id"].to_list())


@pytest.mark.slow  # every standard concept of Eunomia: about 300 cohorts
def test_every_standard_concept_finds_its_concept_ancestor_persons(
        store: Path, every_event: pl.LazyFrame) -> None:
    expected = reference_persons()
    concepts = expected.select("domain", "concept_id").unique().sort(pl.all())
    # the whole vocabulary of every clinical table, not a hand-picked few
    per_domain = dict(concepts.group_by("domain").len().sort("domain").iter_rows())
    assert set(per_domain) == set(TABLES)
    assert per_domain["DRUG"] > 150 and per_domain["CONDITION"] > 50
    assert {("DRUG", ACETAMINOPHEN), ("CONDITION", ALZHEIMERS)} <= set(concepts.rows())

    codes = events.read_codes(store)
    resolved = []
    for domain, concept_id in concepts.iter_rows():
        plan = one_concept_plan(codes, domain, concept_id)
        plan.check()  # the entry concept set must occur in the store
        resolved += [(domain, concept_id, code) for code in plan.codes_of("gi_bleed")]
    found = (pl.DataFrame(resolved, schema=["domain", "concept_id", "code"], orient="row")
             .join(every_event.filter(pl.col("time").is_not_null())
                   .select("code", pl.col("subject_id").alias("person_id")).unique().collect(),
                   on="code")
             .join(expected.select("person_id").unique(), on="person_id")  # persons only
             .select("domain", "concept_id", "person_id").unique().sort(pl.all()))
    wrong = (found.join(expected, on=found.columns, how="anti").vstack(
        expected.join(found, on=found.columns, how="anti"))
        .select("domain", "concept_id").unique().sort(pl.all()))
    assert wrong.rows() == [], f"{wrong.height} of {concepts.height} concepts differ"
    assert found.height == expected.height > 100_000


@pytest.mark.parametrize(("domain", "concept_id"), [
    ("DRUG", ACETAMINOPHEN), ("DRUG_ERA", ACETAMINOPHEN), ("CONDITION", ALZHEIMERS),
    ("CONDITION", 192671), ("DRUG", 1118084), ("MEASUREMENT", 4052083),
    ("PROCEDURE", 4238715), ("OBSERVATION", 4306014),
])
def test_one_concept_cohort_through_the_engine(
        store: Path, every_event: pl.LazyFrame, domain: str, concept_id: int) -> None:
    expected = reference_persons().filter(pl.col("domain") == domain,
                                          pl.col("concept_id") == concept_id)
    plan = one_concept_plan(events.read_codes(store), domain, concept_id)
    plan.check()
    assert entry_persons(plan, every_event) == expected["person_id"].to_list()
    assert expected.height > 0


def test_concept_used_in_two_domains_is_described_in_each(store: Path) -> None:
    codes = events.read_codes(store)
    rows = {row["code"]: row for row in codes.filter(pl.col("code").is_in(
        [f"DRUG//{ACETAMINOPHEN}", f"DRUG_ERA//{ACETAMINOPHEN}"])).iter_rows(named=True)}
    assert sorted(rows) == [f"DRUG//{ACETAMINOPHEN}", f"DRUG_ERA//{ACETAMINOPHEN}"]
    for code, row in rows.items():
        domain = code.split("//")[0]
        assert row["description"] == "Acetaminophen"
        assert row["ancestor_codes"], code  # ATC classes above the ingredient
        assert all(a.startswith(f"{domain}//") for a in row["ancestor_codes"])
        assert all(p.startswith(f"{domain}//") for p in row["parent_codes"])


def test_parent_links_are_the_nearest_ancestors(store: Path) -> None:
    """parent_codes are ancestors; where no level-1 row exists (Eunomia's clinical drugs
    below their ingredient) they are the nearest ancestors, not nothing."""
    codes = events.read_codes(store)
    assert codes.filter(pl.col("parent_codes").list.set_difference(
        events.ANCESTOR_CODES).list.len() > 0).height == 0
    clinical = codes.filter(pl.col("code").str.starts_with("DRUG//"),
                            pl.col(events.ANCESTOR_CODES).list.contains(
                                f"DRUG//{ACETAMINOPHEN}"))
    assert clinical.height >= 6
    with duckdb.connect(str(EUNOMIA), read_only=True) as con:
        direct = con.execute("SELECT count(*) FROM concept_ancestor WHERE ancestor_concept_id"
                             " = ? AND min_levels_of_separation = 1", [ACETAMINOPHEN]).fetchone()
    assert direct == (0,)  # no level-1 row: the old parent walk found none of them
    single = clinical.filter(pl.col("description").str.contains("/").not_())
    assert single.height > 0
    assert all(f"DRUG//{ACETAMINOPHEN}" in parents for parents in single["parent_codes"])


def test_parents_keep_the_closure_where_a_level_is_skipped() -> None:
    """On a closed hierarchy, walking parent_codes reaches exactly the ancestors: a direct
    parent is kept, a skipped level gives the nearest ancestor, a shortcut adds nothing."""
    # 3 < 2 < 1 (direct), 4 < 3 only at level 2 (the level between is missing), 5 < 2
    # directly and also via 3 (a shortcut).
    up = pl.DataFrame(
        [(2, 1, 1), (3, 1, 2), (3, 2, 1), (4, 3, 2), (4, 2, 3), (4, 1, 4), (5, 2, 1), (5, 3, 1),
         (5, 1, 2)],
        schema={"concept_id": pl.Int64, "ancestor": pl.Int64, "levels": pl.Int64},
        orient="row").with_columns(domain=pl.lit("C"))
    parents = omop.parent_links(up)
    assert parents.select("concept_id", "ancestor").rows() == [
        (2, 1), (3, 2), (4, 3), (5, 2), (5, 3)]
    as_codes = {f"C//{c}": [f"C//{a}" for a in g["ancestor"]]
                for (c,), g in up.sort("ancestor").group_by("concept_id")}
    parent_codes = {f"C//{c}": [f"C//{a}" for a in g["ancestor"]]
                    for (c,), g in parents.group_by("concept_id")}
    names = [f"C//{i}" for i in range(1, 6)]
    codes = pl.DataFrame({"code": names,
                          "parent_codes": [parent_codes.get(n, []) for n in names],
                          events.ANCESTOR_CODES: [as_codes.get(n, []) for n in names]})
    for root in names:
        assert (events.descendants(codes.drop(events.ANCESTOR_CODES), [root])
                == events.descendants(codes, [root])), root
    assert events.descendants(codes, ["C//3"]) == {"C//3", "C//4", "C//5"}
