"""The study file: typed model, clear errors through the CLI, generated JSON Schema."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cohortflow.errors import StudySpecError
from cohortflow.study import Analysis, Cohort, Criterion, json_schema, load_study, parse_study
from tests.conftest import REPO, write_study


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cohortflow", *args], capture_output=True,
                          text=True, check=False)


def test_demo_study_is_the_embedded_default() -> None:
    study = load_study()
    assert study == load_study(REPO / "seeds" / "studies" / "demo.yaml")
    assert study.name == "demo" and study.source.synth is not None


def test_misspelled_key_and_wrong_type_get_one_clear_message(tmp_path: Path) -> None:
    bad = write_study(tmp_path / "bad.yaml", shards="four")
    bad.write_text(bad.read_text().replace("min_cell_count:", "min_cel_count:"))
    result = cli("validate", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert str(bad) in message and "2 problem(s)" in message
    assert "min_cel_count: unknown key; did you mean 'min_cell_count'?" in message
    assert "shards: Input should be a valid integer" in message
    assert "(got 'four'); fix: e.g. shards: 4" in message


def test_valid_study_passes_validate() -> None:
    result = cli("validate", str(REPO / "seeds" / "studies" / "demo.yaml"))
    assert result.returncode == 0, result.stderr
    assert "valid study 'demo'" in result.stderr


def test_run_refuses_a_bad_study_before_snakemake_starts(tmp_path: Path) -> None:
    bad = write_study(tmp_path / "bad.yaml", cohort__entry__concept_set="asthmaa")
    result = cli("run", str(bad), "--results", str(tmp_path / "results"))
    assert result.returncode == 2
    assert "cohort.entry.concept_set: unknown concept set 'asthmaa'" in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("raw_change", "expected"), [
    ({"source": {}}, "give exactly one of 'synth', 'omop' or 'meds'"),
    ({"min_cell_count": 0}, "min_cell_count: Input should be greater than or equal to 1"),
    ({"cohort": {"entry": {"concept_set": "asthma"}, "outcome": {
        "concept_set": "asthma", "time_at_risk": {"start_days": 10, "end_days": 1}}}},
     "end_days (1) is before start_days (10)"),
    ({"concept_sets": {"asthma": {"include": []}}}, "include: List should have at least 1"),
])
def test_invalid_values_name_the_field(raw_change: dict, expected: str) -> None:
    raw = json.loads(json.dumps(load_study().model_dump(mode="json", by_alias=True)))
    raw.update(raw_change)
    with pytest.raises(StudySpecError) as info:
        parse_study(raw, origin="s.yaml")
    assert expected in str(info.value)


def test_missing_study_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StudySpecError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")


def test_committed_json_schema_is_generated_from_the_model() -> None:
    committed = json.loads((REPO / "workflow" / "schemas" / "study.schema.json").read_text())
    assert committed == json_schema(), "run `make schema` to regenerate it"


# -- the many-analysis form: cohorts, outcomes, times_at_risk, analyses ------------------------

MANY: dict[str, Any] = {
    "name": "many",
    "source": {"synth": {"persons": 100}},
    "concept_sets": {
        "asthma": {"include": [{"concept_id": 317009}]},
        "copd": {"include": [{"concept_id": 255573}]},
        "exacerbation": {"include": [{"concept_id": 2000000003}]},
        "er": {"domain": "VISIT", "include": [{"concept_id": 9203, "descendants": False}]},
    },
    "cohorts": {
        "asthma": {"entry": {"concept_set": "asthma", "first_only": True},
                   "prior_observation_days": 365},
        "copd": {"entry": {"concept_set": "copd"}},
        "er_visit": {"entry": {"concept_set": "er", "first_only": False},
                     "exit": {"strategy": "date_offset", "date_field": "end"}},
    },
    "outcomes": {"exacerbation": {"concept_set": "exacerbation"},
                 "er": {"cohort": "er_visit"}},
    "times_at_risk": {"1y": {"start_days": 1, "end_days": 365},
                      "30d": {"start_days": 1, "end_days": 30,
                              "exclude_prior_outcome": True, "min_days_at_risk": 7}},
    "analyses": [
        {"targets": ["asthma", "copd"], "outcomes": ["exacerbation", "er"],
         "time_at_risk": "1y"},
        {"target": "asthma", "outcome": "er", "times_at_risk": ["30d", "1y"]},  # 1y twice
    ],
}


def many(**changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`MANY` with dotted-key changes (``cohorts__copd__entry``);
    a value of ``None`` deletes the key."""
    raw = copy.deepcopy(MANY)
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return raw


def refused(raw: dict[str, Any]) -> str:
    """The one message a bad study gets, on one line."""
    with pytest.raises(StudySpecError) as info:
        parse_study(raw, origin="many.yaml")
    return " ".join(str(info.value).split())


def test_a_study_of_many_analyses_crosses_each_grid_once_in_spec_order() -> None:
    study = parse_study(MANY)
    assert study.analysis_list() == [
        Analysis("asthma__exacerbation__1y", "asthma", "exacerbation", "1y", "exacerbation"),
        Analysis("asthma__er__1y", "asthma", "er", "1y", "er_visit"),
        Analysis("copd__exacerbation__1y", "copd", "exacerbation", "1y", "exacerbation"),
        Analysis("copd__er__1y", "copd", "er", "1y", "er_visit"),
        Analysis("asthma__er__30d", "asthma", "er", "30d", "er_visit"),
    ]  # asthma__er__1y, in both grids, once, where it came first
    assert study.analysis("copd__er__1y").outcome_cohort == "er_visit"
    assert study.targets() == ["asthma", "copd"]
    assert study.cohorts_used() == ["asthma", "copd", "er_visit", "exacerbation"]
    windows = study.risk_windows()
    assert (windows["30d"].end_days, windows["30d"].exclude_prior_outcome,
            windows["30d"].min_days_at_risk, windows["1y"].exclude_prior_outcome) == (
        30, True, 7, False)
    with pytest.raises(StudySpecError, match="unknown analysis 'asthma__er__2y'; this study "
                                             "has: asthma__exacerbation__1y, asthma__er__1y"):
        study.analysis("asthma__er__2y")


def test_the_library_holds_every_cohort_and_a_cohort_of_events_per_concept_set_outcome(
        ) -> None:
    study = parse_study(MANY)
    library = study.library()
    assert list(library) == ["asthma", "copd", "er_visit", "exacerbation"]
    assert library["asthma"] == study.cohorts["asthma"]
    assert library["exacerbation"] == Cohort.of_events(
        Criterion(concept_set="exacerbation"))
    events = library["exacerbation"]  # every event, observed or not, its day the outcome's
    assert (events.entry.first_only, events.require_observation,
            events.prior_observation_days) == (False, False, 0)
    # a cohort outcome is the library's cohort itself, not another copy of it
    assert study.outcome_cohort("er") == "er_visit" and "er" not in library
    assert study.outcome_specs()["er"].cohort == "er_visit"


def test_an_outcome_is_a_concept_set_with_its_event_filters() -> None:
    study = parse_study(many(outcomes__exacerbation={
        "concept_set": "exacerbation", "first_occurrence": True}))
    [criterion] = study.library()["exacerbation"].entry.criteria
    assert criterion == Criterion(concept_set="exacerbation", first_occurrence=True)
    message = refused(many(outcomes__er={"cohort": "er_visit", "first_occurrence": True}))
    assert ("outcomes.er: Value error, a cohort outcome takes no value, units or "
            "first_occurrence; fix: put them in the cohort's entry") in message
    message = refused(many(outcomes__er={"cohort": "er_visit", "concept_set": "er"}))
    assert "outcomes.er: Value error, give concept_set or cohort, not both" in message


def test_a_study_round_trips_through_its_dump() -> None:
    """A dumped study holds both forms' keys, empty ones included; it reads back the same."""
    for study in (parse_study(MANY), load_study()):
        raw = json.loads(json.dumps(study.model_dump(mode="json", by_alias=True)))
        assert parse_study(raw).model_dump() == study.model_dump()


@pytest.mark.parametrize(("where", "name"), [("cohorts", "a__b"), ("outcomes", "x__y"),
                                             ("times_at_risk", "_1y")])
def test_a_name_that_would_split_an_analysis_id_is_refused(where: str, name: str) -> None:
    raw = many()
    raw[where][name] = next(iter(raw[where].values()))
    message = refused(raw)
    fixed = {"a__b": "a_b", "x__y": "x_y", "_1y": "1y"}[name]
    assert (f"{where}.{name}: '{name}' is not a name: letters, digits, '-' and single '_' "
            f"between them ('__' joins the parts of an analysis id); fix: e.g. '{fixed}'"
            ) in message


def test_cohort_and_the_library_together_are_one_clear_error() -> None:
    raw = many(cohort={"entry": {"concept_set": "asthma"},
                       "outcome": {"concept_set": "exacerbation"}})
    message = refused(raw)
    assert message == (
        "many.yaml: 1 problem(s) in the study file: - <root>: give cohort (one analysis) or "
        "cohorts, outcomes, times_at_risk, analyses (a cohort library), not both; fix: move "
        "the cohort under cohorts: and its outcome under outcomes:")


@pytest.mark.parametrize(("drop", "missing"), [
    (["cohorts", "outcomes", "times_at_risk", "analyses"],
     "cohorts, outcomes, times_at_risk, analyses"),
    (["times_at_risk"], "times_at_risk"),
    (["analyses", "outcomes"], "outcomes, analyses"),
])
def test_a_study_without_a_cohort_or_part_of_the_library_names_what_is_missing(
        drop: list[str], missing: str) -> None:
    message = refused(many(**dict.fromkeys(drop)))
    assert ("<root>: no cohort: give cohort (one analysis), or all of cohorts, outcomes, "
            f"times_at_risk and analyses (missing: {missing})") in message


def test_a_cohort_of_the_library_has_no_outcome() -> None:
    message = refused(many(cohorts__copd__outcome={"concept_set": "exacerbation"}))
    assert message.endswith(
        "1 problem(s) in the study file: - cohorts.copd.outcome: a cohort of the library has "
        "no outcome; fix: name it under outcomes: and cross it with the cohort in analyses:")


def test_every_unknown_name_is_named_at_its_place_in_one_message() -> None:
    raw = many(cohorts__copd__entry={"concept_set": "cpod"},
               outcomes__er={"cohort": "er_vist"},
               analyses=[{"targets": ["asthma", "copdd"], "outcome": "exacerbatoin",
                          "times_at_risk": ["1y", "1yr"]},
                         {"target": "asthm", "outcomes": ["er", "er_visit"],
                          "time_at_risk": "30days"}])
    message = refused(raw)
    assert message.startswith("many.yaml: 8 problem(s) in the study file:"), message
    for line in [
        "cohorts.copd.entry.concept_set: unknown concept set 'cpod'; did you mean 'copd'? "
        "defined: asthma, copd, er, exacerbation; fix: name one of them, or define it under "
        "concept_sets (got 'cpod')",
        "outcomes.er.cohort: unknown cohort 'er_vist'; did you mean 'er_visit'? defined: "
        "asthma, copd, er_visit; fix: name one of them, or define it under cohorts",
        "analyses.0.targets.1: unknown cohort 'copdd'; did you mean 'copd'?",
        "analyses.0.outcome: unknown outcome 'exacerbatoin'; did you mean 'exacerbation'? "
        "defined: er, exacerbation;",
        "analyses.0.times_at_risk.1: unknown time at risk '1yr'; did you mean '1y'? defined: "
        "1y, 30d; fix: name one of them, or define it under times_at_risk",
        "analyses.1.target: unknown cohort 'asthm'; did you mean 'asthma'?",
        # a cohort named where an outcome belongs: how to make it one
        "analyses.1.outcomes.1: unknown outcome 'er_visit'; 'er_visit' is a cohort: add "
        "er_visit: {cohort: er_visit} under outcomes;",
        "analyses.1.time_at_risk: unknown time at risk '30days'; did you mean '30d'?",
    ]:
        assert line in message, line
    assert "fix: e.g." not in message  # each problem's own fix, no made-up default


def test_an_unknown_concept_set_of_an_outcome_is_named_at_its_place() -> None:
    message = refused(many(outcomes__exacerbation={"concept_set": "exacerbations"}))
    assert ("outcomes.exacerbation.concept_set: unknown concept set 'exacerbations'; did you "
            "mean 'exacerbation'?") in message


def test_an_outcome_named_like_a_cohort_must_be_that_cohort() -> None:
    message = refused(many(outcomes__copd={"concept_set": "copd"}))
    assert ("outcomes.copd: outcome 'copd' has the name of a cohort; fix: rename the "
            "outcome, or make it that cohort (copd: {cohort: copd})") in message
    study = parse_study(many(outcomes__er_visit={"cohort": "er_visit"}))
    assert study.outcome_cohort("er_visit") == "er_visit"


@pytest.mark.parametrize("path", sorted((REPO / "seeds" / "studies").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_seed_study_validates_and_lists_its_analyses(path: Path) -> None:
    study = load_study(path)
    analyses = study.analysis_list()
    assert analyses and len({a.id for a in analyses}) == len(analyses)
    library = study.library()
    for a in analyses:
        assert a.id == f"{a.target}__{a.outcome}__{a.time_at_risk}"
        assert {a.target, a.outcome_cohort} <= set(library)
        assert a.time_at_risk in study.risk_windows()
    if study.cohort is None:
        return
    # the single form: one analysis of the cohort (outcome label left out) and its outcome
    outcome = study.cohort.outcome
    assert outcome is not None
    name = outcome.concept_set or "death"
    assert analyses == [Analysis(f"cohort__{name}__tar", "cohort", name, "tar", name)]
    assert library == {"cohort": study.cohort.without_outcome(),
                       name: Cohort.of_events(study.outcome_specs()[name].criterion())}
    window = study.risk_windows()["tar"]
    assert (window.start_days, window.end_days, window.exclude_prior_outcome,
            window.min_days_at_risk) == (
        outcome.time_at_risk.start_days, outcome.time_at_risk.end_days,
        outcome.exclude_prior_outcome, outcome.min_days_at_risk)


def test_the_demo_is_one_analysis() -> None:
    assert [a.id for a in load_study().analysis_list()] == [
        "cohort__asthma_exacerbation__tar"]


# -- rerun keys of the pieces: each changes with what its step reads, and nothing else ---------

def digests(raw: dict[str, Any]) -> dict[str, str]:
    """Every piece's rerun key of a study, by piece."""
    study = parse_study(raw)
    keys = {f"cohort:{name}": study.cohort_digest(name) for name in study.library()}
    keys |= {f"labels:{a.id}": study.labels_digest(a.id) for a in study.analysis_list()}
    keys |= {f"features:{t}": study.features_digest(t) for t in study.targets()}
    keys |= {"selection": study.selection_digest(), "display": study.display_digest(),
             "report": study.report_digest()}
    return keys


def changed(edit: dict[str, Any]) -> set[str]:
    """The pieces whose key an edit of :data:`MANY` changes (the report's always does)."""
    before, after = digests(MANY), digests(many(**edit))
    assert before.keys() == after.keys()
    return {piece for piece in before if before[piece] != after[piece]} - {"report"}


def test_every_piece_has_its_own_key() -> None:
    keys = digests(MANY)
    assert len(set(keys.values())) == len(keys)


@pytest.mark.parametrize(("edit", "pieces"), [
    # a cohort's definition: that cohort alone (its tensor and labels read its rows)
    ({"cohorts__asthma__prior_observation_days": 30}, {"cohort:asthma"}),
    ({"cohorts__er_visit__exit": {"strategy": "observation_end"}}, {"cohort:er_visit"}),
    # a concept set: the cohorts that use it
    ({"concept_sets__copd__include": [{"concept_id": 4063381}]}, {"cohort:copd"}),
    ({"concept_sets__er__include": [{"concept_id": 9203}]}, {"cohort:er_visit"}),
    # a concept-set outcome: its cohort of events
    ({"concept_sets__exacerbation__include": [{"concept_id": 2000000004}]},
     {"cohort:exacerbation"}),
    ({"outcomes__exacerbation__first_occurrence": True}, {"cohort:exacerbation"}),
    # a time at risk: the labels of the analyses that use it
    ({"times_at_risk__30d__min_days_at_risk": 3}, {"labels:asthma__er__30d"}),
    ({"times_at_risk__1y__end_days": 730},
     {"labels:asthma__exacerbation__1y", "labels:asthma__er__1y",
      "labels:copd__exacerbation__1y", "labels:copd__er__1y"}),
    # what an outcome is: the labels of its analyses
    ({"outcomes__er": {"cohort": "copd"}},
     {"labels:asthma__er__1y", "labels:copd__er__1y", "labels:asthma__er__30d"}),
    # the features: every tensor
    ({"features": {"windows_days": [30]}}, {"features:asthma", "features:copd"}),
    # the study seed, the model: none of these pieces (the sweep's own keys cover them)
    ({"seed": 7}, set()),
    ({"model": {"family": "logistic_l2", "C": 0.5}}, set()),
    ({"model": {"select_by": "auprc"}}, {"selection"}),
    # the threshold: what suppresses for display alone
    ({"min_cell_count": 5}, {"display"}),
])
def test_an_edit_changes_the_keys_of_the_pieces_that_read_it(edit: dict[str, Any],
                                                              pieces: set[str]) -> None:
    assert changed(edit) == pieces


def test_a_new_analysis_leaves_every_other_key_alone() -> None:
    raw = many(analyses=[*MANY["analyses"], {"target": "copd", "outcome": "er",
                                             "time_at_risk": "30d"}])
    before, after = digests(MANY), digests(raw)
    assert set(after) - set(before) == {"labels:copd__er__30d"}
    assert {k for k in before if before[k] != after[k]} == {"report"}


def test_the_features_key_names_its_target_but_not_the_cohort() -> None:
    study = parse_study(MANY)
    assert study.features_digest("asthma") != study.features_digest("copd")
    # the single form's target is called cohort whatever its definition
    demo = load_study()
    entry = demo.model_copy(update={"cohort": demo.cohort.model_copy(  # type: ignore[union-attr]
        update={"prior_observation_days": 0})})
    assert entry.features_digest("cohort") == demo.features_digest("cohort")
    assert entry.cohort_digest("cohort") != demo.cohort_digest("cohort")


@pytest.mark.parametrize(("doc", "after"), [("docs/analyses.md", ""),
                                            ("README.md", "### Many analyses")])
def test_the_many_analysis_example_of_the_docs_is_a_valid_study(doc: str, after: str) -> None:
    text = (REPO / doc).read_text()
    text = text.split(after, 1)[1] if after else text
    example = yaml.safe_load(text.split("```yaml\n")[1].split("```")[0])
    sets = ["asthma", "otitis_media", "er_visit", "asthma_exacerbation"]
    study = parse_study({"name": "doc", "source": {"synth": {"persons": 100}},
                         "concept_sets": {s: {"include": [{"concept_id": 1}]} for s in sets},
                         **example})
    assert len(study.analysis_list()) == 8
    assert study.analysis_list()[0].id == "asthma__exacerbation__1y"
    assert study.analysis("asthma__er_visit__2y_first").outcome_cohort == "er_visit"


@pytest.mark.parametrize(("concept_set", "fixed"), [("cohort", "cohort_outcome"),
                                                    ("a__b", "a_b"),
                                                    ("Asthma attack", "Asthma_attack")])
def test_a_single_outcome_named_unlike_a_cohort_is_refused(concept_set: str,
                                                           fixed: str) -> None:
    """The single form's outcome is named after its concept set: its cohort's folder and
    the analysis id hold that name, so it must be a name, and not the target's."""
    raw = {"name": "x", "source": {"synth": {"persons": 100}},
           "concept_sets": {"asthma": {"include": [{"concept_id": 317009}]},
                            concept_set: {"include": [{"concept_id": 2000000003}]}},
           "cohort": {"entry": {"concept_set": "asthma"},
                      "outcome": {"concept_set": concept_set}}}
    message = refused(raw)
    assert (f"cohort.outcome.concept_set: the outcome's concept set '{concept_set}' names "
            f"the outcome's cohort and the analysis (cohort__{concept_set}__tar)") in message
    assert f"fix: rename the concept set, e.g. '{fixed}'" in message
    raw["concept_sets"][fixed] = raw["concept_sets"].pop(concept_set)
    raw["cohort"]["outcome"]["concept_set"] = fixed
    assert [a.id for a in parse_study(raw).analysis_list()] == [f"cohort__{fixed}__tar"]


def test_the_sweep_axes_of_the_single_form_are_refused_with_analyses() -> None:
    sweep = {"families": [{"family": "logistic", "C": [1.0]}], "outcomes": ["er"],
             "cohorts": ["asthma"]}
    message = refused(many(model={"sweep": sweep}))
    assert ("model.sweep.outcomes: a study with analyses crosses outcomes under analyses:; "
            "fix: remove model.sweep.outcomes and name them in analyses: (got 'er')") in message
    assert "model.sweep.cohorts: a study with analyses crosses cohorts" in message
    del sweep["outcomes"], sweep["cohorts"]
    assert len(parse_study(many(model={"sweep": sweep})).analysis_list()) == 5


def test_run_refuses_a_study_naming_unknown_analyses_before_snakemake_starts(
        tmp_path: Path) -> None:
    bad = REPO / "tests" / "bad_inputs" / "study_unknown_analysis_names" / "study.yaml"
    result = cli("run", str(bad), "--results", str(tmp_path / "results"))
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert f"{bad}: 4 problem(s) in the study file" in message
    assert "analyses.0.targets.1: unknown cohort 'astma'; did you mean 'asthma'?" in message
    assert "Traceback" not in result.stderr and message.count("error:") == 1
    assert not (tmp_path / "results").exists()


def test_a_piece_no_analysis_names_is_checked_but_not_used() -> None:
    raw = many(cohorts__spare={"entry": {"concept_set": "copd"}},
               outcomes__spare_outcome={"concept_set": "asthma"},
               times_at_risk__5y={"start_days": 1, "end_days": 1825})
    study = parse_study(raw)
    assert {"spare", "spare_outcome"} <= set(study.library())
    assert study.cohorts_used() == parse_study(MANY).cohorts_used()
    assert study.analysis_list() == parse_study(MANY).analysis_list()
    raw["cohorts"]["spare"]["entry"]["concept_set"] = "copd2"
    assert "cohorts.spare.entry.concept_set: unknown concept set 'copd2'" in refused(raw)
