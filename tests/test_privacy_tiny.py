"""A whole study whose target cohort is about 30 persons (a test split of 8, a handful of
outcomes): every shared output still passes the small-count scan of
:mod:`tests.test_privacy_study`, and the report says what it does not show and why (the
test metrics, the ROC curves, the calibration plot, small Table 1 cells and means, the
outcome counts) instead of showing it.  So does the de-identification report of the
cohort's data mart (``cohortflow export-mart``); a cohort of fewer than k persons has no
mart at all."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cohortflow import events, manifest, models, report, synth
from cohortflow.disclosure import Disclosure, audit
from cohortflow.errors import CohortflowError
from cohortflow.layout import Layout
from cohortflow.mart import export_mart
from cohortflow.study import load_study
from tests.conftest import write_study
from tests.test_privacy_study import K, _move_person_ids, scan, shared_files
from tests.test_report import BEST, _metrics, _predictions
from tests.test_report import _page as page_of

PERSONS = 100  # seed 3: 38 first asthma codes, 30 with a year of prior observation
KEY = "tiny-mart-key"


@pytest.mark.parametrize("positives, negatives", [(2, 6), (3, 7)])
def test_a_tiny_test_split_shows_no_metric_curve_or_calibration(
        tmp_path: Path, positives: int, negatives: int) -> None:
    gate = Disclosure(Layout.of(tmp_path, "small"), K)
    predictions = _predictions(positives, negatives)
    page, figures = page_of(predictions, gate)
    words = " ".join(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page).split())
    above_features = words.split("<h2>Top features</h2>")[0]
    assert "Metric (test split)" not in words and "<td class=n>0.500</td>" not in above_features
    assert f"Not shown: the test split has fewer than {K} persons" in words
    assert "not shown here (—)" in words
    assert f"Calibration not drawn: the test split has fewer than {K} persons" in words
    # the calibration plot is its legend note alone: no point, only the diagonal
    plot = report.sweep_plots(report.SweepResults(
        report.Tensor(np.ones((predictions.height, 1)), ["C"], ["365d"], ["count"]),
        predictions["label"].to_numpy(), pl.DataFrame(),
        {BEST: (_metrics(predictions), predictions)}, {}), gate)["calibration"]
    assert [(c.name, c.x) for c in plot.curves] == [
        (f"{BEST}: not drawn (fewer than {K} persons with or without the outcome)", ())]
    assert figures["calibration"] == report.to_png(plot)
    # with a large enough split everything is shown again
    shown, _ = page_of(_predictions(30, 50), gate)
    assert "Metric (test split)" in shown and "not drawn" not in shown.lower()


def _withheld(board: pl.DataFrame) -> list[str]:
    """The rows of a shared leaderboard whose test metrics do not follow its
    :data:`models.WITHHELD` column: every one shown and no reason, or every one null and
    a reason; empty when all follow it."""
    test = [f"test_{c}" for c in models.TEST_COLUMNS]
    return [row["config_id"] for row in board.iter_rows(named=True)
            if {row[c] is None for c in test} != {row[models.WITHHELD] is not None}]


@pytest.mark.parametrize("positives, negatives, shown", [(2, 6, False), (4, 36, False),
                                                         (30, 50, True)])
def test_the_shared_leaderboard_holds_no_test_metric_of_a_tiny_split(
        tmp_path: Path, positives: int, negatives: int, shown: bool) -> None:
    study = load_study(write_study(tmp_path / "s.yaml", name="s"))
    lay = Layout.of(tmp_path / "results", "s")
    gate = Disclosure(lay, K)
    predictions = _predictions(positives, negatives)
    metrics = [_metrics(predictions, config_id=c, auroc=a) | {"cv": cv}
               for c, a, cv in (("a", 0.9, {"auroc": 0.6, "auprc": 0.3, "brier": 0.2}),
                                ("b", 0.6, {"auroc": 0.8, "auprc": 0.2, "brier": 0.3}))]
    files = []
    for m in metrics:
        events.write_json(m, lay.config_file(m["config_id"], "metrics"))
        events.write_parquet(predictions.to_arrow(), lay.config_file(m["config_id"],
                                                                      "predictions"))
        files.append((lay.config_file(m["config_id"], "metrics"),
                      lay.config_file(m["config_id"], "predictions")))
    analysis = metrics[0]["analysis"]
    models.select_models(study, gate, [f for f, _ in files], [p for _, p in files],
                         lay.leaderboard(analysis), lay.model_metrics(analysis),
                         lay.model_predictions(analysis))
    board = pl.read_parquet(lay.leaderboard(analysis))
    assert _withheld(board) == [] and audit(lay) == []
    reasons = {None} if shown else {
        f"test split: fewer than {K} persons with or without the outcome"}
    assert set(board[models.WITHHELD]) == reasons
    # the choice is by CV alone, the same as without the gate; the chosen model's own
    # metrics (inside the compute) keep every test metric
    assert board.filter("best")["config_id"].to_list() == ["b"]
    assert board.select("config_id", "best", "rank", "cv_auroc").equals(
        models.leaderboard(metrics, "auroc").select("config_id", "best", "rank", "cv_auroc"))
    assert json.loads(lay.model_metrics(analysis).read_text())["test"]["auroc"] == 0.6
    # the manifest's record of the chosen model follows the same rule
    chosen = json.loads(lay.model_metrics(analysis).read_text())
    assert manifest.shared_test(chosen, gate) == (
        chosen["test"] if shown else {models.WITHHELD: board[models.WITHHELD][0]})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The demo study on 100 persons with ten-digit ids and one model, by `cohortflow run`."""
    root = tmp_path_factory.mktemp("tiny")
    cdm = root / "cdm"
    synth.generate(PERSONS, seed=3, out=cdm, progress=False)
    _move_person_ids(cdm)
    study = write_study(root / "tiny.yaml", name="tiny", shards=2,
                        source={"omop": {"path": str(cdm)}},
                        model={"family": "logistic_l2", "C": 1.0})
    done = subprocess.run([sys.executable, "-m", "cohortflow", "run", str(study)],
                          cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return root, root / "results" / "tiny", done.stdout + done.stderr


def _analysis(root: Path) -> str:
    [analysis] = load_study(root / "tiny.yaml").analysis_list()
    return analysis.id


def _page(results: Path) -> str:
    """The report's text, one space between words, its images left out."""
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", (results / "report.html")
                  .read_text())
    return " ".join(page.split())


@pytest.mark.e2e
@pytest.mark.slow
def test_the_cohort_is_tiny_and_no_shared_output_shows_a_small_count(
        tiny_run: tuple[Path, Path, str]) -> None:
    root, results, console = tiny_run
    lay, analysis = Layout(results), _analysis(root)
    attrition = json.loads(lay.attrition(analysis).read_text())
    assert 25 <= attrition[-1]["subjects"] <= 35
    test = pl.read_parquet(lay.model_predictions(analysis)).filter(pl.col("split") == "test")
    assert 0 < test.height < K and 0 < int(test["label"].sum()) < K
    person = pl.read_parquet(root / "cdm" / "person")
    ids = set(person["person_id"].to_list())
    births = {b.strftime("%Y-%m-%d") for b in person["birth_datetime"].drop_nulls()}
    files = shared_files(results)
    assert {".html", ".json", ".log", ".tsv", ".parquet", ".png"} <= {p.suffix for p in files}
    snakemake_logs = sorted((root / ".snakemake" / "log").glob("*.log"))
    console_file = root / "console.txt"
    console_file.write_text(console)
    assert scan([*files, *snakemake_logs, console_file], K, ids, births) == []
    # the scan does read the counts: with a huge threshold these files are flagged
    flagged = {leak.split(": ")[0] for leak in scan(files, 10**9, set(), set())}
    for path in (lay.report, lay.manifest, lay.export_attrition(analysis), lay.log("ingest")):
        assert str(path) in flagged, path
    assert audit(lay) == []
    # the leaderboard's test metrics are over the same tiny test split: withheld, said why
    board = pl.read_parquet(lay.leaderboard(analysis))
    assert _withheld(board) == [] and board[models.WITHHELD].null_count() == 0
    assert all(board[f"test_{c}"].null_count() == board.height for c in models.TEST_COLUMNS)
    # and so is the manifest's record of the chosen model
    assert json.loads(lay.manifest.read_text())["metrics"] == {analysis: {
        models.WITHHELD: f"test split: fewer than {K} persons with or without the outcome"}}


@pytest.mark.e2e
@pytest.mark.slow
def test_the_report_says_what_it_does_not_show_and_why(
        tiny_run: tuple[Path, Path, str]) -> None:
    root, results, _ = tiny_run
    page = _page(results)
    metrics = json.loads(Layout(results).model_metrics(_analysis(root)).read_text())
    above_features = page.split("<h2>Top features</h2>")[0]
    for name in ("auprc", "brier", "scaled_brier", "auroc_ci_low"):
        assert f"{metrics['test'][name]:.3f}" not in above_features, name
    least = f"fewer than {K} persons"
    # the test metrics: not in the model's table, the leaderboard or the overview
    assert "Metric (test split)" not in page
    assert (f"Not shown: the test split has {least} with or without the outcome, and "
            "metrics (AUROC, AUPRC, Brier score) over so few would show how many had the "
            "outcome.") in page
    assert ("Test metrics are never used to choose; not shown here (—): the test split "
            f"has {least} with or without the outcome.") in page
    row = re.search(r"<tr><td>asthma_exacerbation</td><td>1</td>.*?</tr>", page)
    assert row is not None and row.group(0).count("<td class=n>—</td>") == 7, row
    assert f"AUROC not shown: test split under {K} persons with or without the outcome" in page
    # the curves: the chosen model's and the best models' ROC, the calibration plot
    assert 'alt="ROC curve of the test split"' not in page
    assert page.count(f"Not drawn: the test split has {least} with or without the outcome, "
                      "and a curve would show how many.") == 2
    assert (f"Calibration not drawn: the test split has {least} with or without the "
            "outcome, and a point (an observed rate) would show how many.") in page
    # Table 1 and the outcome counts: small counts suppressed, and said so
    assert f"Counts below {K} are shown as &lt;{K}" in page
    assert f"with &lt;{K} outcomes" in page and f"tested on &lt;{K} held-out persons" in page
    table1 = re.search(r"<th>Characteristic</th>.*?</table>", page)
    assert table1 is not None and f"<td class=n>&lt;{K}</td>" in table1.group(0)
    if "<td class=n>—</td>" in table1.group(0):
        assert f"— marks a mean not shown: of {least}, or of none." in page


@pytest.mark.e2e
@pytest.mark.slow
def test_the_mart_report_of_the_tiny_cohort_shows_no_small_count(
        tiny_run: tuple[Path, Path, str]) -> None:
    """The target cohort's mart: its record and page pass the scan (persons, suppressed
    persons, table rows and the k reached are counts), and the scan does read them."""
    root = tiny_run[0]
    study = load_study(root / "tiny.yaml")
    [cohort] = study.targets()
    out = root / "mart"
    record = export_mart(study, cohort, out, results=root / "results", key=KEY)
    person = pl.read_parquet(root / "cdm" / "person")
    ids = set(person["person_id"].to_list())
    births = {b.strftime("%Y-%m-%d") for b in person["birth_datetime"].drop_nulls()}
    files = [out / "deid_report.json", out / "deid_report.html", out / "mart.json"]
    assert scan(files, K, ids, births) == []
    mart_persons = pl.read_parquet(out / "person.parquet").height
    assert 25 <= mart_persons <= 35 and record["persons"] == mart_persons
    # the k reached is the smallest class left: a class size, never one under k
    reached = record["k_reached"]
    assert reached is None or (isinstance(reached, int) and reached >= K), reached
    suppressed = record["suppression"]
    assert suppressed["persons"] == 0 or suppressed["persons"] == f"<{K}" or (
        isinstance(suppressed["persons"], int) and suppressed["persons"] >= K)
    if suppressed["persons"] == f"<{K}":  # the share is a bound that gives no count back
        assert suppressed["share"] == f"<{100 * K / mart_persons:.2g}%"
        assert (f"Their number is under {K}, so it is shown as &lt;{K} and their share as "
                f"an upper bound ({K} / {mart_persons} persons)") in _page_of(out)
    page = _page_of(out)
    assert f"Counts below {K} are shown as &lt;{K}" in page
    # with a huge threshold both files are flagged: the scan reads their counts
    flagged = {leak.split(": ")[0] for leak in scan(files[:2], 10**9, set(), set())}
    assert flagged == {str(files[0]), str(files[1])}


def _page_of(folder: Path) -> str:
    return " ".join((folder / "deid_report.html").read_text().split())


def test_a_cohort_under_k_persons_has_no_mart(tmp_path: Path) -> None:
    """Five persons: no grouping of them reaches k = 11, so k-anonymity is impossible; the
    export refuses, says why without the exact count, and leaves nothing behind."""
    cdm = tmp_path / "cdm"
    cdm.mkdir()
    ids = [4_000_000_001 + i for i in range(5)]
    pl.DataFrame({"person_id": ids, "gender_concept_id": [8532] * 5,
                  "year_of_birth": [1990] * 5, "race_concept_id": [8527] * 5,
                  "ethnicity_concept_id": [38003564] * 5}).write_parquet(cdm / "person.parquet")
    study = load_study(write_study(tmp_path / "s.yaml", source={"omop": {"path": "cdm"}},
                                   shards=1))
    table = Layout.of(tmp_path / "results", "demo").cohort_table("cohort", "0")
    table.parent.mkdir(parents=True)
    pl.DataFrame({"subject_id": ids}).write_parquet(table)
    with pytest.raises(CohortflowError) as refused:
        export_mart(study, "cohort", tmp_path / "mart", results=tmp_path / "results", key=KEY)
    message = str(refused.value)
    assert (f"cohort 'cohort' has fewer than {K} persons, so no mart of it can be "
            f"k-anonymous (k = min_cell_count = {K})") in message
    assert "fix:" in message and "5" not in message.replace(str(tmp_path), "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdm", "results", "s.yaml"]


def test_a_mart_where_everyone_is_suppressed_says_so() -> None:
    """Twelve persons born in four 20-year bands: no class reaches k = 11 at any level, so
    all are suppressed; the record shows no k reached, the suppressed number as it is (not
    small), and says why."""
    from cohortflow.mart import _record, k_anonymise

    persons = pl.DataFrame({"person_id": range(12), "year_of_birth": [1930, 1950, 1970,
                            1990] * 3, "gender_concept_id": [8507] * 12})
    done = k_anonymise(persons, ["year_of_birth", "gender_concept_id"], K, 0.05)
    assert done.k_reached is None and done.suppressed == 12 and not done.within_limit
    assert _record._k_reached(done.k_reached, K) is None
    words = _record._suppression_words(done, persons.height, K)
    assert words.endswith("Every person was suppressed: even the most general level left no "
                          "class of at least k, so no k is reached (shown as —)")
    assert f"under {K}" not in words
