"""Every aggregation, window edge case, roll-up, concept set, minimum frequency and the
time-binned tensor, on tiny hand-built frames with values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from cohortflow import cohorts, events, features
from cohortflow.errors import StudySpecError
from cohortflow.study import (
    AGGREGATION_ORDER,
    VALUE_AGGREGATIONS,
    Features,
    SequenceFeatures,
    Study,
    parse_study,
)
from cohortflow.study import FeatureWindow as Window
from tests.helpers import INDEX, cohort, ev

M = "MEASUREMENT//7"


EVENTS = ev(
    (1, "2014-01-09", M, 7.0),          # 366 days before: only in 'all'
    (1, "2014-01-10", M, 1.0),          # 365 days: first day of [-365, -31]
    (1, "2014-12-10", M, 9.0),          # 31 days: last day of [-365, -31], not in 30d
    (1, "2014-12-11", M, 5.0),          # 30 days: first day of 30d
    (1, "2015-01-05 08:00", M, 2.0),
    (1, "2015-01-05 08:00", M, 6.0),    # same timestamp: both count, store order kept
    (1, "2015-01-06", M, None),         # null value: an event, never a value
    (1, "2015-01-10 23:00", M, 4.0),    # index day, after the index hour: included
    (1, "2015-01-11", M, 100.0),        # after the index day: never counted
    (2, "2015-01-01", M, None),         # only a null value in 30d
    (4, "2015-01-01", M, 3.0),
    (4, "2015-01-01", M, 8.0),          # tie at the same timestamp: first 3, last 8
    (1, None, "RACE//8527", None),
    (1, None, "ETHNICITY//38003564", None),
    (1, None, "GENDER//8532", None),
    (1, "2005-01-10", events.BIRTH, None),
)
SPEC = Features(
    windows_days=[30], windows=[Window(start_days=-365, end_days=-31), Window()],
    aggregations=list(AGGREGATION_ORDER), domains=["MEASUREMENT"],
    demographics=["age", "sex", "race", "ethnicity"],
)
NAN = math.nan
# subject:                         1          2     3    4
EXPECTED = {
    ("30d", "count"):           [5,         1,    0,   2],
    ("30d", "present"):         [1,         1,    0,   1],
    ("30d", "days_since_last"): [0,         9,    NAN, 9],
    ("30d", "first"):           [5,         NAN,  NAN, 3],
    ("30d", "last"):            [4,         NAN,  NAN, 8],
    ("30d", "min"):             [2,         NAN,  NAN, 3],
    ("30d", "max"):             [6,         NAN,  NAN, 8],
    ("30d", "mean"):            [17 / 4,    NAN,  NAN, 5.5],
    ("30d", "sum"):             [17,        NAN,  NAN, 11],
    ("-365d..-31d", "count"):   [2,         0,    0,   0],
    ("-365d..-31d", "first"):   [1,         NAN,  NAN, NAN],
    ("-365d..-31d", "last"):    [9,         NAN,  NAN, NAN],
    ("-365d..-31d", "days_since_last"): [31, NAN, NAN, NAN],
    ("all", "count"):           [8,         1,    0,   2],
    ("all", "first"):           [7,         NAN,  NAN, 3],
    ("all", "sum"):             [34,        NAN,  NAN, 11],
    ("all", "mean"):            [34 / 7,    NAN,  NAN, 5.5],
}


@pytest.fixture(scope="module")
def tensor() -> dict[tuple[str, str, str], np.ndarray]:
    index, block = features.shard_block(SPEC, EVENTS, cohort(1, 2, 3, 4))
    return {key: block[:, i] for key, i in index.position().items()}


@pytest.mark.parametrize(("window", "aggregation"), list(EXPECTED))
def test_each_aggregation_and_window_edge(tensor: dict, window: str, aggregation: str) -> None:
    got = tensor[(M, window, aggregation)]
    np.testing.assert_allclose(got, EXPECTED[(window, aggregation)], rtol=1e-6)


def test_demographics_race_ethnicity_sex_and_age(tensor: dict) -> None:
    assert tensor[("RACE//8527", "all", "present")].tolist() == [1, 0, 0, 0]
    assert tensor[("ETHNICITY//38003564", "all", "present")].tolist() == [1, 0, 0, 0]
    assert tensor[("GENDER//8532", "all", "present")].tolist() == [1, 0, 0, 0]
    age = tensor[(events.BIRTH, "all", "age_years")]
    assert age[0] == pytest.approx(10.0, abs=0.01)
    assert np.isnan(age[1:]).all()  # no birth row: missing, not 0


def test_codes_without_values_get_no_value_aggregations() -> None:
    frame = ev((1, "2015-01-01", "CONDITION//1", None))
    index, _ = features.shard_block(Features(windows_days=[30], domains=["CONDITION"],
                                             aggregations=["count", "mean", "sum"],
                                             demographics=[]), frame, cohort(1))
    assert index.aggregation == ("count",)


CODES = pl.DataFrame({"code": ["CONDITION//1", "CONDITION//2", "CONDITION//3"],
                      "parent_codes": [[], ["CONDITION//1"], ["CONDITION//2"]]})
FAMILY = ev((1, "2015-01-01", "CONDITION//3", None), (1, "2015-01-02", "CONDITION//2", None),
            (2, "2015-01-03", "CONDITION//1", None))


def test_rollup_counts_each_event_for_every_ancestor() -> None:
    spec = Features(windows_days=[30], domains=["CONDITION"], aggregations=["count"],
                    rollup="ancestors", demographics=[])
    mapping = features.code_map(spec, CODES, {})
    index, block = features.shard_block(spec, FAMILY, cohort(1, 2), mapping)
    t = {key[0]: block[:, i].tolist() for key, i in index.position().items()}
    assert t == {"CONDITION//1": [2, 1], "CONDITION//2": [2, 0], "CONDITION//3": [1, 0]}


def test_rollup_takes_ancestors_from_the_closure_at_every_level() -> None:
    """A drug coded at the clinical-drug level rolls up to its ingredient two levels up even
    where no parent link joins them (the store's ancestor_codes, from concept_ancestor)."""
    codes = pl.DataFrame({"code": ["DRUG//1", "DRUG//2"], "parent_codes": [[], []],
                          "ancestor_codes": [[], ["DRUG//1"]]})
    spec = Features(windows_days=[30], domains=["DRUG"], aggregations=["count"],
                    rollup="ancestors", demographics=[])
    mapping = features.code_map(spec, codes, {})
    index, block = features.shard_block(spec, ev((1, "2015-01-01", "DRUG//2", None)),
                                        cohort(1), mapping)
    t = {key[0]: block[:, i].tolist() for key, i in index.position().items()}
    assert t == {"DRUG//1": [1], "DRUG//2": [1]}


def test_concept_set_is_one_feature_code() -> None:
    spec = Features(windows_days=[30], domains=[], aggregations=["count", "days_since_last"],
                    concept_sets=["fam"], demographics=[])
    mapping = features.code_map(spec, CODES, {"fam": ["CONDITION//2", "CONDITION//3"]})
    index, block = features.shard_block(spec, FAMILY, cohort(1, 2), mapping)
    assert index.code == ("CONCEPT_SET//fam",) * 2
    assert block[:, 0].tolist() == [2, 0]
    assert block[0, 1] == 8 and np.isnan(block[1, 1])  # last event 2015-01-02: 8 days


def test_minimum_code_frequency_counts_the_train_split_only() -> None:
    frame = ev((1, "2015-01-01", "CONDITION//1", None), (2, "2015-01-01", "CONDITION//2", None),
               (3, "2015-01-01", "CONDITION//2", None))
    spec = Features(windows_days=[30], domains=["CONDITION"], aggregations=["count"],
                    min_code_subjects=1, demographics=[])
    train = pl.LazyFrame({"subject_id": [1]})
    index, block = features.shard_block(spec, frame, cohort(1, 2, 3), train=train)
    assert index.code == ("CONDITION//1",)  # CONDITION//2 is only in held-out subjects
    assert block[:, 0].tolist() == [1, 0, 0]


def test_sequence_last_bin_ends_at_the_index_time_under_before_index_time() -> None:
    frame = ev((1, "2015-01-10 09:00", M, 1.0), (1, "2015-01-10 09:30", M, 3.0),
               (1, "2015-01-10 22:00", M, 5.0), (1, "2015-01-09", M, 7.0))
    got = {}
    for window_end in ("index_day", "before_index_time"):
        spec = Features(windows_days=[1], domains=["MEASUREMENT"], demographics=[],
                        window_end=window_end,
                        sequence=SequenceFeatures(bins=2, bin_days=1,
                                                  aggregations=["count", "sum"]))
        rows = cohort(1).with_row_index("row").with_columns(train=pl.lit(True))
        cells = features.sequence_cells(spec, features.feature_events(spec, None, frame, rows))
        vocabulary = pl.DataFrame({"feature_code": [M], "has_value": [True], "n_train": [1]})
        seq = features.sequence_index(spec, vocabulary)
        got[window_end] = features.dense_sequence(seq, cells.collect(), 1, 2)[0].tolist()
    assert got["index_day"] == [[1, 7], [3, 9]]        # bins: day -1, day 0 (any hour)
    assert got["before_index_time"] == [[1, 7], [1, 1]]  # day 0 before 09:30 only


def test_sequence_bins_end_on_the_index_day() -> None:
    frame = ev((1, "2015-01-10", M, 1.0), (1, "2015-01-01", M, 3.0),  # 0 and 9 days: bin 2
               (1, "2014-12-31", M, 5.0),                              # 10 days: bin 1
               (1, "2014-12-12", M, 7.0),                              # 29 days: bin 0
               (1, "2014-12-11", M, 9.0))                              # 30 days: no bin
    spec = Features(windows_days=[1], domains=["MEASUREMENT"], demographics=[],
                    sequence=SequenceFeatures(bins=3, bin_days=10, aggregations=["count", "mean"]))
    rows = cohort(1).with_row_index("row").with_columns(train=pl.lit(True))
    cells = features.sequence_cells(spec, features.feature_events(spec, None, frame, rows))
    cells = cells.collect()
    vocabulary = pl.DataFrame({"feature_code": [M], "has_value": [True], "n_train": [1]})
    seq = features.sequence_index(spec, vocabulary)
    block = features.dense_sequence(seq, cells, 1, 3)
    assert seq.aggregation == ("count", "mean")
    assert block[0, :, 0].tolist() == [1, 1, 2]
    assert block[0, :, 1].tolist() == [7, 5, 2]


def _study_with_sets(concept_sets: dict, feature_sets: list[str]) -> Study:
    return Study.model_validate({
        "name": "sets", "source": {"synth": {"persons": 10}},
        "concept_sets": concept_sets,
        "cohort": {"entry": {"concept_set": next(iter(concept_sets))},
                   "outcome": {"concept_set": next(iter(concept_sets))}},
        "features": {"windows_days": [30], "domains": [], "aggregations": ["count"],
                     "concept_sets": feature_sets, "demographics": []},
    })


def test_feature_concept_sets_resolve_like_cohorts_literal_codes_and_exclusions() -> None:
    """One resolver: a literal ``code:`` is that code (not ``MEASUREMENT//None``) and
    ``exclude:`` removes concepts (and their descendants), as in cohorts and labels."""
    codes = pl.DataFrame({"code": ["CONDITION//1", "CONDITION//2", "CONDITION//3",
                                   "ICD10CM//K92.2"],
                          "parent_codes": [[], ["CONDITION//1"], ["CONDITION//2"], []]})
    sets = {"bleed": {"domain": "MEASUREMENT", "include": [{"code": "ICD10CM//K92.2"}]},
            "fam": {"include": [{"concept_id": 1}], "exclude": [{"concept_id": 3}]}}
    study = _study_with_sets(sets, ["bleed", "fam"])
    resolved = features.resolve_concept_sets(study, codes)
    for name, concept_set in study.concept_sets.items():
        assert resolved[name] == cohorts.concept_codes(name, concept_set, codes,
                                                       required=False)
    assert resolved == {"bleed": ["ICD10CM//K92.2"], "fam": ["CONDITION//1", "CONDITION//2"]}
    frame = ev((1, "2015-01-01", "CONDITION//3", None), (1, "2015-01-02", "CONDITION//2", None),
               (2, "2015-01-03", "ICD10CM//K92.2", None), (2, "2015-01-04", "ICD10CM//K92.2", None))
    mapping = features.code_map(study.features, codes, resolved)
    index, block = features.shard_block(study.features, frame, cohort(1, 2), mapping)
    t = {key[0]: block[:, i].tolist() for key, i in index.position().items()}
    assert t == {"CONCEPT_SET//bleed": [0, 2], "CONCEPT_SET//fam": [1, 0]}


def test_feature_concept_set_unknown_name_is_refused_when_the_study_loads() -> None:
    with pytest.raises(StudySpecError) as err:
        parse_study({
            "name": "sets", "source": {"synth": {"persons": 10}},
            "concept_sets": {"asthma": {"include": [{"concept_id": 1}]}},
            "cohort": {"entry": {"concept_set": "asthma"}, "outcome": {"concept_set": "asthma"}},
            "features": {"concept_sets": ["asthma", "asthmma", "zzz"]}}, "study.yaml")
    message = str(err.value)
    assert "2 problem(s)" in message
    assert ("features.concept_sets.1: unknown concept set 'asthmma'; did you mean 'asthma'?"
            in message)
    assert "features.concept_sets.2: unknown concept set 'zzz'; defined: asthma; fix:" in message


# ---- window_end and value_count against a direct reference --------------------------------

LATE = ev(
    (1, "2015-01-10 08:00", M, 1.0),    # index day, before the index time: both options
    (1, "2015-01-10 09:30", M, 2.0),    # at the index time: only under index_day
    (1, "2015-01-10 23:00", M, 3.0),    # later on the index day: only under index_day
    (1, "2015-01-10 23:00", M, None),   # later, no value: an event, not a value
    (1, "2015-01-09 23:59", M, None),
    (1, "2014-12-11", M, 5.0),          # 30 days before
    (2, "2015-01-10 10:00", "CONDITION//1", None),  # only event: later on the index day
    (2, "2015-01-10 00:00", M, 8.0),
    (3, "2015-01-11", M, 9.0),          # after the index day: never
    (1, "2005-01-10", events.BIRTH, None),
)


def reference_cells(frame: pl.LazyFrame, subjects: list[int], spec: Features
                    ) -> dict[tuple[int, str, str, str], float]:
    """Every cell by definition, in plain Python over the event rows."""
    rows = frame.collect().filter(pl.col("time").is_not_null()).rows(named=True)
    cells: dict[tuple[int, str, str, str], float] = {}
    for subject in subjects:
        for window in spec.all_windows():
            first_day = -INDEX.date().toordinal() if window.start_days is None else (
                window.start_days)
            hits = [r for r in rows if r["subject_id"] == subject
                    and r["code"].split("//")[0] in spec.domains
                    and first_day <= (r["time"].date() - INDEX.date()).days <= window.end_days
                    and (spec.window_end == "index_day" or r["time"] < INDEX)]
            for code in sorted({r["code"] for r in hits}):
                mine = [r for r in hits if r["code"] == code]
                values = [r["numeric_value"] for r in mine if r["numeric_value"] is not None]
                out = {"count": len(mine), "present": 1, "value_count": len(values),
                       "days_since_last": min((INDEX.date() - r["time"].date()).days
                                              for r in mine)}
                if values:
                    out |= {"first": values[0], "last": values[-1], "min": min(values),
                            "max": max(values), "mean": sum(values) / len(values),
                            "sum": sum(values)}
                for aggregation, value in out.items():
                    cells[(subject, code, window.label, aggregation)] = value
    return cells


@pytest.mark.parametrize("window_end", ["index_day", "before_index_time"])
def test_every_cell_equals_a_direct_computation_under_each_window_end(window_end: str) -> None:
    spec = Features(windows_days=[1, 30], windows=[Window(start_days=-30, end_days=-1)],
                    aggregations=list(AGGREGATION_ORDER), domains=["CONDITION", "MEASUREMENT"],
                    demographics=[], window_end=window_end)
    subjects = [1, 2, 3]
    index, block = features.shard_block(spec, LATE, cohort(*subjects))
    expected = reference_cells(LATE, subjects, spec)
    codes = {code for _, code, _, _ in expected}
    assert set(index.code) == codes
    has_value = {key[1] for key, value in expected.items()
                 if key[3] == "value_count" and value > 0}
    for (code, window, aggregation), col in index.position().items():
        assert aggregation not in VALUE_AGGREGATIONS or code in has_value
        for row, subject in enumerate(subjects):
            fill = 0.0 if aggregation in ("count", "present", "value_count") else math.nan
            want = expected.get((subject, code, window, aggregation), fill)
            np.testing.assert_allclose(block[row, col], want, rtol=1e-6,
                                       err_msg=str((subject, code, window, aggregation)))
    t = {key: block[:, i].tolist() for key, i in index.position().items()}
    later_on_index_day = t[(M, "1d", "count")][0], t[(M, "1d", "value_count")][0]
    if window_end == "index_day":
        assert later_on_index_day == (5, 3)  # 1, 2, 3, the null, and the day before
        assert t[("CONDITION//1", "1d", "count")] == [0, 1, 0]
    else:
        assert later_on_index_day == (2, 1)  # 08:00 and the day before (no value)
        assert "CONDITION//1" not in codes  # seen only after the index time: no feature
    assert t[(M, "-30d..-1d", "count")][0] == 2  # day windows before day 0: the same


def test_value_count_counts_events_with_a_value(tensor: dict) -> None:
    assert tensor[(M, "30d", "value_count")].tolist() == [4, 0, 0, 2]
    assert tensor[(M, "-365d..-31d", "value_count")].tolist() == [2, 0, 0, 0]
    assert tensor[(M, "all", "value_count")].tolist() == [7, 0, 0, 2]


def test_store_records_which_window_end_it_was_built_with() -> None:
    assert set(features.WINDOW_SEMANTICS) == {"index_day", "before_index_time"}
    assert "strictly before index_time" in features.WINDOW_SEMANTICS["before_index_time"]


# ---- any code of the event store can be a feature ------------------------------------------

ANY = ev(
    (1, "2015-01-01", "MEDS_DEATH", None),
    (1, "2014-01-01", events.OBSERVATION_START, None),
    (1, "2015-01-02", "SNOMED/74474003", None),
    (1, "2015-01-03", "LAB//potassium//mmol/L", 4.5),
    (2, "2015-01-04", "ADMISSION", None),
    (2, "2015-01-05", "CONDITION//1", None),
    (2, "2015-01-06", "CONDITIONAL//1", None),
    (2, "2015-01-07", "LAB//potassium_serum", 4.0),
)
EVERY = {"MEDS_DEATH", events.OBSERVATION_START, "SNOMED/74474003", "LAB//potassium//mmol/L",
         "ADMISSION", "CONDITION//1", "CONDITIONAL//1", "LAB//potassium_serum"}


@pytest.mark.parametrize(("domains", "codes", "expected"), [
    (["CONDITION"], [], {"CONDITION//1"}),
    (["MEDS_DEATH", "OBSERVATION_PERIOD", "SNOMED"], [],
     {"MEDS_DEATH", events.OBSERVATION_START, "SNOMED/74474003"}),
    (["LAB//potassium"], ["ADMISSION"], {"LAB//potassium//mmol/L", "ADMISSION"}),
    ([], ["LAB//potassium_serum", "CONDITIONAL//1"], {"LAB//potassium_serum", "CONDITIONAL//1"}),
    (["*"], [], EVERY),
])
def test_any_code_of_the_store_is_selectable(domains: list[str], codes: list[str],
                                            expected: set[str]) -> None:
    spec = Features(windows=[Window()], domains=domains, codes=codes, demographics=[],
                    aggregations=["count", "value_count"])
    index, block = features.shard_block(spec, ANY, cohort(1, 2))
    assert set(index.code) == expected
    t = {key: block[:, i].tolist() for key, i in index.position().items()}
    if "LAB//potassium//mmol/L" in expected:
        assert t[("LAB//potassium//mmol/L", "all", "value_count")] == [1, 0]
    if "MEDS_DEATH" in expected:
        assert t[("MEDS_DEATH", "all", "count")] == [1, 0]


@pytest.mark.parametrize("bad", ["CONDITION//", "", "SNOMED/", " X"])
def test_a_prefix_ending_in_a_separator_names_the_fix(bad: str) -> None:
    with pytest.raises(ValueError, match=r"is not a code prefix.*fix: domains: \[CONDITION"):
        Features(domains=[bad])
