"""The report's page and figures on small hand-built inputs: one ROC implementation draws
the page's curve and figures/<analysis>/roc.png, a small group hides it in both, the page is
written through the disclosure gate, and a study of many analyses opens on a targets ×
outcomes grid whose cells link to their sections, outcome counts suppressed."""

from __future__ import annotations

import base64
import html
import json
import re
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
import xarray as xr
import zarr

from cohortflow import events, models, report
from cohortflow.disclosure import Disclosure, audit
from cohortflow.errors import CohortflowError
from cohortflow.features import open_features
from cohortflow.layout import Layout
from cohortflow.study import Analysis, Study

MIN = 11
BEST = "logistic (abc)"
ONE = Analysis("cohort__a__tar", "cohort", "a", "tar", "a")


def _study(min_cell_count: int = MIN) -> Study:
    return Study.model_validate({
        "name": "small", "source": {"synth": {"persons": 100}},
        "min_cell_count": min_cell_count,
        "concept_sets": {"a": {"include": [{"concept_id": 1}]}},
        "cohort": {"entry": {"concept_set": "a"}, "outcome": {"concept_set": "a"}},
    })


def _predictions(positives: int, negatives: int, seed: int = 3) -> pl.DataFrame:
    """Test-split predictions of ``positives`` persons with the outcome and ``negatives``
    without (and a training split that must not count)."""
    rng = np.random.default_rng(seed)
    label = [1] * positives + [0] * negatives
    return pl.DataFrame({
        "subject_id": np.arange(len(label) + 40, dtype=np.int64),
        "label": label + [1, 0] * 20,
        "prediction": np.concatenate([rng.random(len(label)) * 0.5 + 0.3 * np.array(label),
                                      rng.random(40)]),
        "split": ["test"] * len(label) + ["train"] * 40,
    })


def _metrics(predictions: pl.DataFrame, config_id: str = "abc", family: str = "logistic",
             analysis: Analysis = ONE, auroc: float = 0.5) -> dict[str, Any]:
    test = predictions.filter(pl.col("split") == "test")
    label, prediction = test["label"].to_numpy(), test["prediction"].to_numpy()
    return {"config_id": config_id, "analysis": analysis.id, "outcome": analysis.outcome,
            "cohort": analysis.target, "time_at_risk": analysis.time_at_risk,
            "feature_set": "all", "family": family, "model": family,
            "hyperparameters": {"C": 1.0}, "replicate": 0, "seed": 1, "n_features": 2,
            "n_train": 40, "n_test": len(test),
            "outcome_rate_test": float(label.mean()) if len(label) else 0.0,
            "cv": {"auroc": 0.7, "auprc": 0.3, "brier": 0.2, "folds": 3},
            "test": {**dict.fromkeys(models.TEST_COLUMNS, 0.5), "auroc": auroc,
                     "auroc_ci_low": auroc - 0.1, "auroc_ci_high": auroc + 0.1},
            "calibration": {"test": models.calibration_bins(label, prediction)},
            "importance": [{"feature": "CONDITION//1 365d count", "importance": 0.5}]}


def _page(predictions: pl.DataFrame, gate: Disclosure) -> tuple[str, dict[str, bytes]]:
    """The page of a one-model sweep whose chosen model is its only configuration."""
    metrics = _metrics(predictions)
    n = predictions.height
    sweep = report.SweepResults(
        report.Tensor(np.ones((n, 1)), ["CONDITION//1"], ["365d"], ["count"]),
        predictions["label"].to_numpy(), models.leaderboard([metrics], "auroc"),
        {BEST: (metrics, predictions)}, {"CONDITION//1": "Asthma"})
    results = report.AnalysisResults(ONE, [{"step": "entry", "subjects": n}], metrics,
                                     predictions, sweep)
    section, figures = report.analysis_html(results, gate, "auroc")
    return report.render(_study(), gate, [section]), figures


def _images(page: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(data) for alt, data in
            re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', page)}


def _drawn(curves: dict[str, pl.DataFrame], gate: Disclosure) -> list[np.ndarray]:
    """The lines a ROC plot draws, the chance diagonal last."""
    fig = report.roc_plot(curves, gate)
    lines = [line.get_xydata() for line in fig.axes[0].lines if len(line.get_xdata())]
    plt.close(fig)
    return lines


def test_the_page_and_roc_png_draw_the_same_curve_with_one_implementation(
        tmp_path: Path) -> None:
    gate = Disclosure(Layout.of(tmp_path, "small"), MIN)
    predictions = _predictions(30, 50)
    page, figures = _page(predictions, gate)
    images = _images(page)
    # both images are the one ROC figure of the same predictions, and so is roc.png
    assert images["ROC curve of the test split"] == report.roc_figure(
        {report.CHOSEN: predictions}, gate)
    assert images["ROC curves of the best models (test split)"] == figures["roc"] == (
        report.roc_figure({BEST: predictions}, gate))
    fpr, tpr = report.roc_points(predictions, gate) or pytest.fail("curve hidden")
    for drawn in (_drawn({report.CHOSEN: predictions}, gate), _drawn({BEST: predictions}, gate)):
        assert len(drawn) == 2  # the curve and chance
        np.testing.assert_array_equal(drawn[0], np.column_stack([fpr, tpr]))
    assert "Not drawn" not in page


@pytest.mark.parametrize("positives, negatives", [(5, 50), (50, 4)])
def test_a_small_group_hides_the_curve_on_the_page_and_in_roc_png(
        tmp_path: Path, positives: int, negatives: int) -> None:
    gate = Disclosure(Layout.of(tmp_path, "small"), MIN)
    predictions = _predictions(positives, negatives)
    page, figures = _page(predictions, gate)
    assert report.roc_points(predictions, gate) is None
    assert "ROC curve of the test split" not in _images(page)
    assert report.NOT_DRAWN.format(min_cell_count=MIN) in page
    assert figures["roc"] == report.roc_figure({BEST: predictions}, gate)
    drawn = _drawn({BEST: predictions}, gate)
    np.testing.assert_array_equal(drawn, [[[0, 0], [1, 1]]])  # chance alone
    # the same curve is drawn once the threshold allows it
    assert report.roc_points(predictions, Disclosure(gate.layout, 4)) is not None


# -- a hand-built results tree: what the cohort, features and model steps leave -------------

GRID: dict[str, Any] = {
    "name": "grid", "source": {"synth": {"persons": 100}}, "min_cell_count": MIN,
    "concept_sets": {"asthma": {"include": [{"concept_id": 1}]},
                     "copd": {"include": [{"concept_id": 2}]},
                     "exacerbation": {"include": [{"concept_id": 3}]},
                     "er": {"include": [{"concept_id": 4}]}},
    "cohorts": {"asthma": {"entry": {"concept_set": "asthma"}},
                "copd": {"entry": {"concept_set": "copd"}}},
    "outcomes": {"exacerbation": {"concept_set": "exacerbation"},
                 "er": {"concept_set": "er"}},
    "times_at_risk": {"1y": {"start_days": 1, "end_days": 365}},
    # asthma × (exacerbation, er), copd × exacerbation: copd × er is no analysis
    "analyses": [{"targets": ["asthma", "copd"], "outcome": "exacerbation",
                  "time_at_risk": "1y"},
                 {"target": "asthma", "outcome": "er", "time_at_risk": "1y"}],
    "model": {"sweep": {"families": [{"family": "logistic", "C": [0.1, 1.0]},
                                     {"family": "random_forest", "n_estimators": [10]}]}},
}
TENSOR_ROWS = {"asthma": 220, "cohort": 300, "copd": 130}
# per analysis: labelled tensor rows (every other one from 10) and their outcomes
OUTCOMES = {"asthma__exacerbation__1y": 30, "copd__exacerbation__1y": 5,
            "asthma__er__1y": 96, "cohort__a__tar": 50}


def _tensor(path: Path, rows: int) -> None:
    """A finished feature store of ``rows`` target episodes: female (rows 0..9 only, which
    no analysis labels) and a 365-day count of CONDITION//1 (every row)."""
    values = np.zeros((rows, 2), np.float32)
    values[:10, 0] = 1
    values[:, 1] = 1
    xr.Dataset({"values": (("subject", "feature"), values)}, coords={
        "subject": ("subject", np.arange(rows)),
        "feature": ("feature", np.array(["GENDER//8532|all|present",
                                         "CONDITION//1|365d|count"], dtype=object)),
        "code": ("feature", np.array(["GENDER//8532", "CONDITION//1"], dtype=object)),
        "window": ("feature", np.array(["all", "365d"], dtype=object)),
        "aggregation": ("feature", np.array(["present", "count"], dtype=object)),
    }).to_zarr(path, mode="w", consolidated=False)
    zarr.open_group(path, mode="r+").attrs["cohortflow_complete"] = True
    with warnings.catch_warnings():  # zarr's own layout of consolidated metadata (v3)
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(path)
    assert open_features(path)["values"].shape == (rows, 2)


def _tree(root: Path, study: Study) -> tuple[Disclosure, dict[str, models.Configuration]]:
    """The results tree the report reads, for every analysis of ``study``: attrition,
    labels, tensors, the sweep's configurations, leaderboard and chosen model."""
    layout = Layout.of(root, study.name)
    configs = models.configurations(study)
    events.write_parquet(pl.DataFrame({
        "code": ["CONDITION//1", "GENDER//8532"], "description": ["Asthma", "FEMALE"],
        "parent_codes": [[], []]}).to_arrow(), events.codes_path(layout.store))
    for target in study.targets():
        _tensor(layout.tensor(target), TENSOR_ROWS[target])
    for number, analysis in enumerate(study.analysis_list()):
        rows = np.arange(10, TENSOR_ROWS[analysis.target], 2)
        label = np.zeros(rows.size, np.int8)
        label[: OUTCOMES[analysis.id]] = 1
        events.write_parquet(pl.DataFrame({
            "subject_id": rows, "index_time": [datetime(2020, 1, 1)] * rows.size,
            "label": label.astype(bool), "row": rows}).to_arrow(), layout.labels(analysis.id))
        events.write_json([{"step": "entry", "subjects": rows.size + 40, "rows": rows.size + 40},
                           {"step": "labels", "subjects": rows.size, "rows": rows.size}],
                          layout.attrition(analysis.id))
        mine = [c for c in configs.values() if c.analysis == analysis.id]
        all_metrics = []
        for k, config in enumerate(mine):
            rng = np.random.default_rng(number * 10 + k)
            predictions = pl.DataFrame({
                "subject_id": rows, "label": label.astype(np.int64),
                "split": np.where(rows % 4 == 0, "test", "train"),
                "prediction": rng.random(rows.size) * 0.5 + 0.4 * label})
            metrics = _metrics(predictions, config.id, config.family, analysis,
                               auroc=0.6 + 0.1 * number + 0.01 * k)
            metrics["cv"]["auroc"] = 0.7 - 0.01 * k
            events.write_parquet(predictions.to_arrow(), layout.config_file(config.id,
                                                                            "predictions"))
            events.write_json(metrics, layout.config_file(config.id, "metrics"))
            all_metrics.append(metrics)
        gate = Disclosure(layout, study.min_cell_count)
        gate.write_parquet(layout.leaderboard(analysis.id),
                           models.leaderboard(all_metrics, study.model.select_by))
        chosen = mine[0].id  # the best CV AUROC
        events.write_json(all_metrics[0], layout.model_metrics(analysis.id))
        events.write_parquet(pl.read_parquet(layout.config_file(chosen, "predictions"))
                             .to_arrow(), layout.model_predictions(analysis.id))
    return Disclosure(layout, study.min_cell_count), configs


def _cells(page: str) -> dict[tuple[str, str], str]:
    """The overview grid's cells by (target, outcome)."""
    table = page.split('<table class=overview>')[1].split("</table>")[0]
    rows = table.split("</tr>")[:-1]
    outcomes = re.findall(r"<th>([^<]*)</th>", rows[0])[1:]
    cells = {}
    for row in rows[1:]:
        target = re.match(r"<tr><th>([^<]*)</th>", row)[1]  # type: ignore[index]
        for outcome, cell in zip(outcomes, re.findall(r"<td class=cell>(.*?)</td>", row),
                                 strict=True):
            cells[(target, outcome)] = cell
    return cells


def test_the_overview_grid_links_each_analysis_and_suppresses_small_outcome_counts(
        tmp_path: Path) -> None:
    study = Study.model_validate(GRID)
    gate, configs = _tree(tmp_path / "results", study)
    report.write(study, gate, configs)
    page = gate.layout.report.read_text()
    cells = _cells(page)
    assert set(cells) == {(t, o) for t in ("asthma", "copd") for o in ("exacerbation", "er")}
    assert cells[("copd", "er")] == "·"  # not an analysis
    for number, analysis in enumerate(study.analysis_list()):
        cell = cells[(analysis.target, analysis.outcome)]
        assert f'href="#analysis-{analysis.id}"' in cell
        auroc = 0.6 + 0.1 * number
        # copd's test split has under 11 persons with the outcome, asthma er's under 11
        # without: the AUROC would give the counts, so the cell says why it is not shown
        if analysis.id == "asthma__exacerbation__1y":
            assert f"<b>{auroc:.3f}</b>" in cell
            assert f"({auroc - 0.1:.3f}–{auroc + 0.1:.3f})" in cell
        else:
            assert f"{auroc:.3f}" not in cell
            assert (f"AUROC not shown: test split under {MIN} persons with or without the "
                    "outcome") in cell
        # the link's target: the analysis's collapsed section, once
        assert page.count(f'id="{report.anchor(analysis.id)}"') == 1
        section = page.split(f'id="{report.anchor(analysis.id)}"')[1].split("</details>")[0]
        assert "<h3>Characteristics (Table 1)</h3>" in section
        # Table 1 reads the labelled tensor rows only: none of them is female
        persons = re.search(r"<tr><td>Persons</td><td class=n>(\d+)</td>", section)
        assert persons and int(persons[1]) == len(range(10, TENSOR_ROWS[analysis.target], 2))
        assert "Gender: FEMALE</td><td class=n>0" in section
        for name in ("roc", "calibration"):
            assert gate.layout.figure(analysis.id, name).read_bytes()[:4] == b"\x89PNG"
    assert page.count("<details>") == 3
    # 30 of 105 asthma episodes; 5 of 60 copd episodes: <11, and no rate that gives it away
    assert "30 / 105 (28.6%)" in html.unescape(cells[("asthma", "exacerbation")])
    copd = html.unescape(cells[("copd", "exacerbation")])
    assert "<11 / 60" in copd and "%" not in copd
    # 96 of 105 with the outcome: the 9 without are small, so the count is hidden too
    assert "* / 105" in html.unescape(cells[("asthma", "er")])
    assert "Time at risk: 1y (days 1 to 365 after index)" in page
    assert audit(gate.layout) == []  # page, figures and leaderboards all through the gate


def test_a_study_of_many_analyses_links_its_figure_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cohortflow.report.INLINE_ANALYSES", 2)
    study = Study.model_validate(GRID)
    gate, configs = _tree(tmp_path / "results", study)
    report.write(study, gate, configs)
    page = gate.layout.report.read_text()
    assert "data:image/png" not in page
    for analysis in study.analysis_list():
        for name in ("roc", "calibration"):
            src = f"figures/{analysis.id}/{name}.png"
            assert f'src="{src}"' in page and (gate.layout.root / src).is_file()


def test_write_puts_the_page_through_the_gate_and_refuses_another_threshold(
        tmp_path: Path) -> None:
    study = _study()
    gate, configs = _tree(tmp_path / "results", study)
    layout = gate.layout
    report.write(study, gate, configs)
    page = layout.report.read_text()
    assert "<h1>Study report: small</h1>" in page
    # a single analysis: its section open, its parts as the page's own headings
    for heading in ("Cohort attrition", "Model", "ROC curve", "Characteristics (Table 1)",
                    "Leaderboard", "Best models: ROC and calibration", "Top features"):
        assert f"<h2>{heading}</h2>" in page
    assert "<details>" not in page and len(_cells(page)) == 1
    assert {"ROC curve of the test split", "ROC curves of the best models (test split)",
            "Calibration plot of the best models (test split)"} <= set(_images(page))
    assert _images(page)["ROC curves of the best models (test split)"] == (
        layout.figure(ONE.id, "roc").read_bytes())
    assert audit(layout) == []  # the page is in the gate's ledger, as written
    with pytest.raises(CohortflowError, match="min_cell_count 5, the study 'small' 11"):
        report.write(study, Disclosure(layout, 5), configs)


def test_a_leaderboard_of_another_sweep_is_refused_naming_the_configuration(
        tmp_path: Path) -> None:
    study = _study()
    gate, configs = _tree(tmp_path / "results", study)
    stale = next(iter(configs))
    with pytest.raises(CohortflowError, match=f"configuration {stale} is not one of"):
        report.write(study, gate, {k: v for k, v in configs.items() if k != stale})
    assert not gate.layout.report.exists()
    json.dumps(GRID)  # the grid study is plain data


def _tree_files(root: Path) -> dict[str, bytes]:
    """The report's files under a study root: the page and every figure."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in [root / "report.html", *sorted((root / "figures").rglob("*.png"))]}


@pytest.mark.parametrize("inline", [True, False])
def test_the_report_is_the_same_bytes_whatever_the_number_of_drawing_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool) -> None:
    if not inline:  # linked figure files, drawn while the sections are written
        monkeypatch.setattr("cohortflow.report.INLINE_ANALYSES", 2)
        monkeypatch.setattr("cohortflow.report._IN_FLIGHT", 1)  # and waited for, in order
    study = Study.model_validate(GRID)
    written = []
    for workers in (1, 3, 1):
        gate, configs = _tree(tmp_path / f"results{len(written)}", study)
        report.write(study, gate, configs, workers=workers)
        written.append(_tree_files(gate.layout.root))
        assert audit(gate.layout) == []
    assert len(written[0]) == 1 + 2 * len(study.analysis_list())
    assert written[0] == written[1] == written[2]
    page = written[0]["report.html"].decode()
    assert ("data:image/png" in page) is inline


def test_a_reused_figure_draws_what_a_new_one_draws_and_stamps_no_date() -> None:
    gate = Disclosure(Layout.of("results", "small"), MIN)
    few, many = _predictions(30, 50), _predictions(40, 80, seed=5)
    plots = [report.roc_spec({BEST: few}, gate),
             report.roc_spec({"a": many, "b": few, "c": _predictions(3, 50)}, gate),
             report.calibration_spec({"a": [{"predicted": 0.5, "observed": 0.9}]}),
             report.calibration_spec({"a": [{"predicted": 0.01, "observed": 0.02}],
                                      "b": [{"predicted": 0.03, "observed": 0.01}]})]
    fresh = [report.png(report.draw(plot)) for plot in plots]
    # each kind's figure is reused: what an earlier plot drew must not show in a later one
    for order in (plots, plots[::-1], plots + plots):
        assert [report.to_png(p) for p in order] == [fresh[plots.index(p)] for p in order]
    for data in fresh:
        assert data[:4] == b"\x89PNG"
        assert b"tIME" not in data and b"Software" not in data and b"Creation" not in data
