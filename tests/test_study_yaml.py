"""Reading a study file: duplicate keys, alias bombs, concept-set seeds beside the study."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohortflow.errors import StudySpecError
from cohortflow.study import MAX_YAML_NODES, load_study, read_yaml

STUDY = """name: s
source: {synth: {persons: 100}}
concept_sets:
  asthma: {seed: sets/asthma.csv}
cohort:
  entry: {concept_set: asthma}
  outcome: {concept_set: asthma}
"""


def test_a_key_given_twice_names_the_key_and_both_lines() -> None:
    text = "name: s\nconcept_sets:\n  a: {include: []}\n  b: {include: []}\n  a: {include: []}\n"
    with pytest.raises(StudySpecError, match=r"key 'a' is given twice .*lines 3 and 5"):
        read_yaml(text, "s.yaml")


def test_merge_keys_and_plain_aliases_still_work() -> None:
    text = "base: &b {x: 1, y: 2}\nmore:\n  <<: *b\n  y: 3\nagain: *b\n"
    assert read_yaml(text, "s.yaml") == {"base": {"x": 1, "y": 2}, "more": {"x": 1, "y": 3},
                                          "again": {"x": 1, "y": 2}}


def test_an_alias_bomb_is_refused_before_it_is_expanded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 40)]
    text = "\n".join(lines) + "\nshards: *a39\n"  # 9**40 values once expanded
    assert len(text) < 3_000
    with pytest.raises(StudySpecError, match="expands to more than 100,000 values"):
        read_yaml(text, "s.yaml")


def test_the_limit_is_on_expanded_values_not_on_the_text() -> None:
    fits = "a: &a [" + ", ".join(["x"] * 999) + "]\nb: [" + ", ".join(["*a"] * 98) + "]\n"
    assert len(read_yaml(fits, "s.yaml")["b"]) == 98  # 99,004 values: accepted
    over = fits.replace("b: [" + ", ".join(["*a"] * 98), "b: [" + ", ".join(["*a"] * 101))
    assert MAX_YAML_NODES < 101 * 1000
    with pytest.raises(StudySpecError, match="expands to more than"):
        read_yaml(over, "s.yaml")


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(StudySpecError, match="refers to itself"):
        read_yaml("a: &a [1, *a]\n", "s.yaml")


def test_a_long_bad_value_is_shown_cut_short(tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.replace("{seed: sets/asthma.csv}", "{include: [{concept_id: 1}]}")
                     + "shards: &s [" + ", ".join(["many"] * 5000) + "]\n")
    with pytest.raises(StudySpecError) as refused:
        load_study(study)
    message = str(refused.value)
    assert "shards: Input should be a valid integer" in message
    assert len(message) < 1_000 and "characters)" in message


def test_a_seed_path_is_read_from_the_study_folder_with_a_byte_order_mark(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "asthma.csv").write_bytes(
        "\ufeffconcept_id,concept_name,descendants,exclude\n317009,Asthma,true,false\n"
        "4051466,Childhood asthma,false,true\n".encode())
    (tmp_path / "study.yaml").write_text(STUDY)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the study file, not to the working directory
    concept_set = load_study(tmp_path / "study.yaml").concept_sets["asthma"]
    assert [(r.concept_id, r.descendants) for r in concept_set.include] == [(317009, True)]
    assert [(r.concept_id, r.descendants) for r in concept_set.exclude] == [(4051466, False)]


@pytest.mark.parametrize(("row", "column"), [("x17,Asthma,true", "concept_id"),
                                             ("317009,Asthma,maybe", "descendants"),
                                             (",Asthma,true", "concept_id and code")])
def test_a_bad_seed_row_names_the_file_line_and_column(tmp_path: Path, row: str,
                                                        column: str) -> None:
    (tmp_path / "sets").mkdir()
    seed = tmp_path / "sets" / "asthma.csv"
    seed.write_text(f"concept_id,concept_name,descendants\n317009,Asthma,true\n{row}\n")
    (tmp_path / "study.yaml").write_text(STUDY)
    with pytest.raises(StudySpecError) as refused:
        load_study(tmp_path / "study.yaml")
    message = str(refused.value)
    assert f"{seed}:3: column" in message and column in message and "fix:" in message


def test_a_study_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StudySpecError, match="is a directory; fix: give the path"):
        load_study(tmp_path)


@pytest.mark.parametrize("args", [["validate", "{d}"], ["schema", "--out", "{d}"],
                                  ["import-circe", "{d}"]])
def test_a_directory_where_a_file_belongs_is_one_message(tmp_path: Path,
                                                         args: list[str]) -> None:
    from typer.testing import CliRunner

    from cohortflow.cli import app

    result = CliRunner().invoke(app, [a.format(d=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path}: is a directory; fix: give the path of" in " ".join(
        result.output.split())
    assert list(tmp_path.iterdir()) == []


MANY = """name: many
source: {synth: {persons: 100}}
concept_sets:
  asthma: {seed: sets/asthma.csv}
  er: {domain: VISIT, include: [{concept_id: 9203, descendants: false}]}
cohorts:
  asthma: {entry: {concept_set: asthma, first_only: true}}
  er_visit: {entry: {concept_set: er}}
outcomes:
  er: {cohort: er_visit}
times_at_risk:
  1y: &year {start_days: 1, end_days: 365}
  1y_new: {<<: *year, exclude_prior_outcome: true}
analyses:
  - {target: asthma, outcome: er, times_at_risk: [1y, 1y_new]}
"""


def test_a_study_of_many_analyses_reads_its_seeds_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "asthma.csv").write_text("concept_id,concept_name\n317009,Asthma\n")
    (tmp_path / "study.yaml").write_text(MANY)
    study = load_study(tmp_path / "study.yaml")
    assert [a.id for a in study.analysis_list()] == ["asthma__er__1y", "asthma__er__1y_new"]
    windows = study.risk_windows()
    assert (windows["1y_new"].end_days, windows["1y_new"].exclude_prior_outcome) == (365, True)


def test_a_cohort_given_twice_names_it_and_both_lines(tmp_path: Path) -> None:
    text = MANY.replace("  er_visit: {entry: {concept_set: er}}\n",
                        "  er_visit: {entry: {concept_set: er}}\n  asthma: {entry: {}}\n")
    (tmp_path / "study.yaml").write_text(text)
    with pytest.raises(StudySpecError, match=r"key 'asthma' is given twice .*lines 7 and 9"):
        load_study(tmp_path / "study.yaml")
