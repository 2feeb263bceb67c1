"""The leaderboard's choice and the report's Table 1 on tiny hand-built data."""

from __future__ import annotations

import numpy as np
import polars as pl

from cohortflow import models, report
from cohortflow.disclosure import Disclosure
from cohortflow.layout import Layout


def metrics(cid: str, outcome: str, cv: dict[str, float], test_auroc: float) -> dict:
    return {"config_id": cid, "outcome": outcome, "cohort": "cohort", "feature_set": "all",
            "family": "logistic", "model": f"m{cid}", "hyperparameters": {"C": 1.0},
            "replicate": 0, "seed": 1, "n_features": 3, "cv": cv,
            "test": {k: (test_auroc if k == "auroc" else 0.1) for k in models.TEST_COLUMNS}}


def test_best_per_outcome_is_chosen_by_cv_never_by_test() -> None:
    rows = [metrics("a", "o1", {"auroc": 0.70, "auprc": 0.3, "brier": 0.20}, 0.95),
            metrics("b", "o1", {"auroc": 0.72, "auprc": 0.2, "brier": 0.21}, 0.60),
            metrics("c", "o2", {"auroc": 0.65, "auprc": 0.4, "brier": 0.19}, 0.70),
            metrics("d", "o2", {"auroc": 0.65, "auprc": 0.1, "brier": 0.25}, 0.80)]
    board = models.leaderboard(rows, "auroc")
    assert board.filter("best").select("outcome", "config_id").rows() == [("o1", "b"),
                                                                          ("o2", "c")]
    assert board.select("config_id", "rank").rows() == [("b", 1), ("a", 2), ("c", 1),
                                                        ("d", 2)]
    # A lower Brier score is better.
    by_brier = models.leaderboard(rows, "brier").filter("best")["config_id"].to_list()
    assert by_brier == ["a", "c"]


def test_table_one_counts_means_and_top_codes_by_hand() -> None:
    # Columns: age, female, code 1 (365d count), code 2 (365d count), code 1 (30d count).
    x = np.array([[4.0, 1, 2, 0, 1], [6.0, 0, 0, 1, 0], [8.0, 1, 1, 0, 0],
                  [10.0, 1, 0, 0, 0], [12.0, 0, 3, 1, 0]])
    label = np.array([1, 1, 0, 0, 0])
    table = report.table_one(
        x, ["MEDS_BIRTH", "GENDER//8532", "CONDITION//1", "CONDITION//2", "CONDITION//1"],
        ["all", "all", "365d", "365d", "30d"], ["age_years", "present", "count", "count",
                                                 "count"],
        label, {"GENDER//8532": "FEMALE", "CONDITION//1": "Asthma"}, top=2)
    rows = {r["characteristic"]: r for r in table.iter_rows(named=True)}
    assert rows["Persons"]["target"] == 5 and rows["Persons"]["with_outcome"] == 2
    age = rows["Age at index, years"]
    assert (age["target"], age["with_outcome"], age["without_outcome"]) == (8.0, 5.0, 10.0)
    assert age["target_sd"] == np.std([4, 6, 8, 10, 12], ddof=1)
    assert (rows["Gender: FEMALE"]["with_outcome"], rows["Gender: FEMALE"]["without_outcome"]
            ) == (1, 2)
    # The 365d window is the longest: code 1 in 3 persons, code 2 in 2; 30d is left out.
    assert [r["characteristic"] for r in table.iter_rows(named=True)][-2:] == [
        "Asthma (CONDITION//1), 365d", "CONDITION//2 (CONDITION//2), 365d"]
    assert (rows["Asthma (CONDITION//1), 365d"]["with_outcome"],
            rows["Asthma (CONDITION//1), 365d"]["without_outcome"]) == (1, 2)


def test_table_one_suppresses_small_counts_and_their_complement() -> None:
    table = pl.DataFrame({
        "characteristic": ["Persons", "Age at index, years", "Rare code", "Common code"],
        "kind": ["count", "mean", "count", "count"],
        "target": [500.0, 9.0, 40.0, 300.0], "with_outcome": [100.0, 8.0, 5.0, 60.0],
        "without_outcome": [400.0, 9.3, 35.0, 240.0], "target_sd": [None, 3.0, None, None],
        "with_outcome_sd": [None, 2.5, None, None],
        "without_outcome_sd": [None, 3.1, None, None]})
    page = report.table_one_html(table, Disclosure(Layout.of("results", "s"), 11))
    cells = [row.split("<td class=n>")[1:] for row in page.split("<tr>")[2:]]
    values = [[c.split("</td>")[0] for c in row] for row in cells]
    assert values[0] == ["500", "100", "400"]
    assert values[1] == ["9.0 (3.0)", "8.0 (2.5)", "9.3 (3.1)"]
    # 5 is small, and 35 = 40 - 5 would give it away: both hidden, the total shown.
    assert values[2] == ["40 (8.0%)", "&lt;11", "*"]
    assert values[3] == ["300 (60.0%)", "60 (60.0%)", "240 (60.0%)"]


def _table_one_cells(page: str) -> dict[str, list[str]]:
    """Table 1's HTML as characteristic -> its target, with and without outcome cells."""
    rows = [row.split("</tr>")[0] for row in page.split("<tr>")[2:]]
    return {row.split("<td>")[1].split("</td>")[0]:
            [c.split("</td>")[0] for c in row.split("<td class=n>")[1:]] for row in rows}


def test_table_one_counts_persons_and_episodes_apart() -> None:
    # Person 1 holds two episodes, one with the outcome and one without; person 2 two
    # episodes with it; persons 3 and 4 one each, without.
    labels = pl.DataFrame({"subject_id": [1, 1, 2, 2, 3, 4], "row": [0, 1, 2, 3, 4, 5],
                           "label": [True, False, True, True, False, False]})
    x = np.array([[1.0], [0.0], [1.0], [1.0], [0.0], [1.0]])  # CONDITION//1 in 4 episodes
    table = report.table_one(x, ["CONDITION//1"], ["365d"], ["count"],
                             labels["label"].to_numpy(), {"CONDITION//1": "Asthma"},
                             subject=labels["subject_id"].to_numpy())
    rows = {r["characteristic"]: (r["target"], r["with_outcome"], r["without_outcome"])
            for r in table.iter_rows(named=True)}
    assert rows["Persons"] == (4, 2, 3)  # person 1 in both columns, once in the target's
    assert rows["Episodes"] == (6, 3, 3)
    assert rows["Persons in both columns"] == (1, 1, 1)
    assert rows["Asthma (CONDITION//1), 365d"] == (4, 3, 1)  # episodes
    # Nothing small at a threshold of 1: percentages of the characteristics are of episodes.
    cells = _table_one_cells(report.table_one_html(table, Disclosure(Layout.of("r", "s"), 1)))
    assert cells["Persons"] == ["4", "2", "3"] and cells["Episodes"] == ["6", "3", "3"]
    assert cells["Persons in both columns"] == ["1 (25.0%)", "1 (50.0%)", "1 (33.3%)"]
    assert cells["Asthma (CONDITION//1), 365d"] == ["4 (66.7%)", "3 (100.0%)", "1 (33.3%)"]
    # At 2 the one person in both columns is small, and 2 + 3 - 4 would give it: the
    # persons with and without the outcome are hidden too; 1 episode hides its complement,
    # and no percentage is of a hidden count.
    cells = _table_one_cells(report.table_one_html(table, Disclosure(Layout.of("r", "s"), 2)))
    assert cells["Persons"] == ["4", "*", "*"]
    assert cells["Persons in both columns"] == ["&lt;2"] * 3
    assert cells["Episodes"] == ["6", "3", "3"]
    assert cells["Asthma (CONDITION//1), 365d"] == ["4 (66.7%)", "*", "&lt;2"]
    assert all(int(c.split(" ")[0]) >= 2 for row in cells.values() for c in row
               if c[0].isdigit())


def test_table_one_of_one_episode_per_person_has_no_episode_rows() -> None:
    table = report.table_one(np.zeros((3, 1)), ["CONDITION//1"], ["365d"], ["count"],
                             np.array([1, 0, 0]), {}, subject=np.array([5, 6, 7]))
    assert table["characteristic"].to_list()[0] == "Persons"
    assert "Episodes" not in table["characteristic"] and table["target"][0] == 3
