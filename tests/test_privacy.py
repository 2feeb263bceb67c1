"""Small-cell suppression (with complementary suppression) and keyed pseudonyms."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cohortflow import events, export, privacy, report
from cohortflow.disclosure import Disclosure, audit
from cohortflow.errors import CohortflowError
from cohortflow.layout import Layout
from cohortflow.study import Analysis, RiskWindow, Study

K = 11


@pytest.mark.parametrize("counts", [
    [500, 498, 300, 295, 3],
    [1000, 995, 990, 985, 600, 12, 11, 0],
    [40, 35, 34, 20, 20, 9],
    [11, 10, 0],
])
def test_attrition_never_reveals_a_small_count_by_subtraction(counts: list[int]) -> None:
    shown = privacy.suppress_steps(counts, K)
    for count, text in zip(counts, shown, strict=True):
        assert text in (str(count), f"<{K}", privacy.COMPLEMENTARY)
        if 0 < count < K:
            assert text == f"<{K}"
    # no two shown counts differ by a small positive number (subtraction learns nothing)
    visible = [int(s) for s in shown if s.isdigit()]
    assert all(not 0 < a - b < K for a, b in itertools.combinations(visible, 2))
    assert len(visible) >= 2


def test_attrition_hides_only_what_it_must() -> None:
    assert privacy.suppress_steps([900, 800, 700], K) == ["900", "800", "700"]
    assert privacy.suppress_steps([900, 895, 880], K) == ["900", "*", "880"]


def test_categories_hide_a_second_cell_when_one_small_cell_could_be_recovered() -> None:
    shown = privacy.suppress_categories({"F": 120, "M": 95, "unknown": 4}, K)
    assert shown == {"F": "120", "M": "*", "unknown": "<11"}
    assert privacy.suppress_categories({"F": 120, "M": 4}, K, total_shown=False) == {
        "F": "120", "M": "<11"}


def test_pseudonyms_are_keyed_stable_and_hide_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [1, 2, 3, 12345]
    monkeypatch.setenv(privacy.PSEUDONYM_KEY_ENV, "first-secret")
    first = privacy.pseudonyms(ids)
    assert first == privacy.pseudonyms(ids)
    assert len(set(first)) == 4 and all(re.fullmatch(r"[0-9a-f]{16}", p) for p in first)
    assert not any(str(i) in p for i, p in zip(ids, first, strict=True) if i > 100)
    monkeypatch.setenv(privacy.PSEUDONYM_KEY_ENV, "second-secret")
    assert set(privacy.pseudonyms(ids)).isdisjoint(first)
    monkeypatch.delenv(privacy.PSEUDONYM_KEY_ENV)
    with pytest.raises(CohortflowError, match=r"fix: export COHORTFLOW_PSEUDONYM_KEY"):
        privacy.pseudonyms(ids)


def _study() -> Study:
    return Study.model_validate({
        "name": "small", "source": {"synth": {"persons": 100}}, "min_cell_count": K,
        "concept_sets": {"a": {"include": [{"concept_id": 1}]}},
        "cohort": {"entry": {"concept_set": "a"}, "outcome": {"concept_set": "a"}},
    })


def test_report_shows_no_count_below_the_threshold() -> None:
    attrition = [{"step": "entry", "subjects": 260, "rows": 300},
                 {"step": "prior observation", "subjects": 255, "rows": 255},
                 {"step": "age", "subjects": 200, "rows": 200},
                 {"step": "not dead", "subjects": 7, "rows": 7}]
    rng = np.random.default_rng(0)
    predictions = pl.DataFrame({
        "label": [0, 1] * 100 + [0, 1, 0, 0, 0],
        "prediction": rng.random(205),
        "split": ["train"] * 200 + ["test"] * 5,
    })
    metrics = {"model": "logistic", "C": 1.0, "n_train": 200, "n_test": 5, "n_features": 40,
               "test": {"auroc": 0.5, "auprc": 0.2, "brier": 0.25}}
    gate = Disclosure(Layout.of("results", "small"), K)
    page = report.render(_study(), gate, [report.model_html(gate, attrition, metrics,
                                                            predictions)])
    cells = re.findall(r"<td class=n>([^<]*)</td>", page)
    assert cells[:4] == ["260", "*", "200", "&lt;11"]
    assert "trained on * persons, tested on &lt;11 held-out persons" in " ".join(page.split())
    text = re.sub(r"data:image/png;base64,[^\"]+", "", page)
    text = re.sub(r"digest [0-9a-f]+", "", text)
    for number in re.findall(r"(?<![\w.#-])\d+(?![\w.])", text):
        assert int(number) == 0 or int(number) >= K, number


@pytest.mark.parametrize("seed", range(20))
def test_pooled_calibration_bins_never_hold_a_small_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 400))
    prediction = rng.random(n) ** 3
    label = (rng.random(n) < prediction).astype(int)
    order = np.argsort(prediction)
    bins = np.array_split(label[order], 10)
    groups = privacy.pool_bins([int(b.sum()) for b in bins], [len(b) for b in bins], K)
    assert sorted(i for g in groups for i in g) == list(range(10))  # each bin once, in order
    assert all(g == list(range(g[0], g[-1] + 1)) for g in groups)  # adjacent bins only
    if len(groups) > 1:
        for group in groups:
            positives = sum(int(bins[i].sum()) for i in group)
            negatives = sum(len(bins[i]) for i in group) - positives
            assert not privacy.small(positives, K) and not privacy.small(negatives, K)


def test_roc_curve_is_drawn_only_over_enough_persons_of_each_class() -> None:
    assert privacy.curve_shown([1] * K + [0] * K, K)
    assert not privacy.curve_shown([1] * (K - 1) + [0] * 100, K)
    assert not privacy.curve_shown([1] * 100 + [0] * (K - 1), K)


def test_the_overview_shows_no_outcome_count_below_the_threshold() -> None:
    gate = Disclosure(Layout.of("results", "small"), K)
    metrics = {"test": {"auroc": 0.71, "auroc_ci_low": 0.65, "auroc_ci_high": 0.77},
               "n_test": 200, "outcome_rate_test": 0.2}
    cells = [report.Cell.of(Analysis(f"t{i}__o__1y", f"t{i}", "o", "1y", "o"), metrics,
                            np.array([1] * outcomes + [0] * (total - outcomes)))
             for i, (outcomes, total) in enumerate([(3, 400), (395, 400), (12, 14), (40, 400)])]
    page = report.overview_html(cells, {"1y": RiskWindow(start_days=30, end_days=365)}, gate)
    rates = re.findall(r"<span class=rate>([^<]*)</span>", page)
    assert rates == ["&lt;11 / 400", "* / 400", "* / 14", "40 / 400 (10.0%)"]
    text = re.sub(r"\d+\.\d+", "", page)  # AUROCs, CIs and rates
    for number in re.findall(r"(?<![\w.#-])\d+(?![\w.])", text):
        assert int(number) == 0 or int(number) >= K, number


def test_the_export_of_one_analysis_is_pseudonymous_suppressed_and_gated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(privacy.PSEUDONYM_KEY_ENV, "a-secret")
    gate = Disclosure(Layout.of(tmp_path, "small"), K)
    analysis = "t__o__1y"
    lay = gate.layout
    events.write_json([{"step": "entry", "subjects": 300, "rows": 320},
                       {"step": "prior outcome", "subjects": 295, "rows": 300},
                       {"step": "labels", "subjects": 200, "rows": 210}], lay.attrition(analysis))
    ids = [9001, 9001, 17, 400]  # a person with two episodes
    events.write_parquet(pl.DataFrame({
        "subject_id": ids, "index_time": [None] * 4, "label": [1, 0, 0, 1],
        "split": ["test", "test", "train", "train"], "fold": [-1, -1, 0, 1],
        "cv_prediction": [None, None, 0.2, 0.3], "prediction": [0.9, 0.1, 0.2, 0.3]},
        schema_overrides={"index_time": pl.Datetime("us")}).to_arrow(),
        lay.model_predictions(analysis))
    export.write(gate, lay.attrition(analysis), lay.model_predictions(analysis),
                 lay.export_predictions(analysis), lay.export_attrition(analysis))
    out = pl.read_parquet(lay.export_predictions(analysis))
    assert out.columns == ["person", "split", "label", "prediction"]
    assert out["person"].to_list() == sorted(privacy.pseudonyms(ids, key="a-secret"))
    assert json.loads(lay.export_attrition(analysis).read_text()) == [
        {"step": "entry", "persons": 300}, {"step": "prior outcome", "persons": "*"},
        {"step": "labels", "persons": 200}]
    assert audit(lay) == []
    with pytest.raises(CohortflowError, match="not a shared output"):
        export.write(gate, lay.attrition(analysis), lay.model_predictions(analysis),
                     lay.analysis(analysis) / "predictions.parquet",
                     lay.export_attrition(analysis))
