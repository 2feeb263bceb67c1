"""The disclosure gate: the one writer of a study's shared outputs, and the audit that names
a shared file written (or changed) any other way."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import polars as pl
import pytest

from cohortflow import manifest
from cohortflow.disclosure import LEDGER, Disclosure, audit, is_shared
from cohortflow.errors import CohortflowError
from cohortflow.layout import SHARED, Layout
from cohortflow.study import Study
from tests.helpers import verify_with_rerun, write_study

A = "asthma__exacerbation__1y"
"""An analysis id: its shared files live in its own folders."""
BENCHMARK = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n" \
            "1.5\t0:00:01\t80.1\t900.2\t70.0\t71.3\t0.0\t0.1\t50.0\t0.7\n"


@pytest.fixture
def gate(tmp_path: Path) -> Disclosure:
    return Disclosure(Layout.of(tmp_path / "results", "tiny"), min_cell_count=11)


def test_counts_are_suppressed_at_the_studys_threshold(gate: Disclosure) -> None:
    assert (gate.count(3), gate.count(0), gate.count(11)) == ("<11", "0", "11")
    assert gate.value(4) == "<11" and gate.value(40) == 40
    assert gate.steps([500, 495, 300]) == ["500", "*", "300"]
    assert gate.categories({"F": 100, "M": 90, "unknown": 2}) == {
        "F": "100", "M": "*", "unknown": "<11"}
    assert gate.counts({"t": {"rows": 3, "sha256": "x"}}, frozenset({"rows"})) == {
        "t": {"rows": "<11", "sha256": "x"}}
    assert not gate.curve_shown([1] * 5 + [0] * 50)
    assert gate.pool_bins([2, 30], [40, 60]) == [[0, 1]]


def test_everything_the_gate_writes_passes_the_audit(gate: Disclosure) -> None:
    lay = gate.layout
    gate.write_text(lay.report, "<html></html>")
    gate.write_bytes(lay.figure(A, "roc"), b"\x89PNG")
    gate.write_json(lay.export_attrition(A), [{"step": "a", "persons": 120}])
    gate.write_parquet(lay.export_predictions(A), pl.DataFrame({"person": ["ab"]}))
    gate.write_parquet(lay.leaderboard(A), pl.DataFrame({"auroc": [0.7]}).to_arrow())
    with gate.open_log(lay.snakemake_log) as sink:
        sink.write("Finished job 0.\n")
    with gate.step_log(lay.log("sweep/0123456789ab")):
        logging.getLogger("cohortflow.test").info("trained")
    lay.benchmark("ingest").parent.mkdir(parents=True)
    lay.benchmark("ingest").write_text(BENCHMARK)  # Snakemake writes these
    # a person-level file beside them is not the gate's business
    for person_level in (lay.cohort_table("asthma", "0"), lay.labels(A)):
        person_level.parent.mkdir(parents=True, exist_ok=True)
        person_level.write_bytes(b"person-level")
    assert "trained" in lay.log("sweep/0123456789ab").read_text()
    assert json.loads(lay.export_attrition(A).read_text()) == [{"step": "a", "persons": 120}]
    assert sorted(p.relative_to(lay.root / LEDGER).as_posix()
                  for p in (lay.root / LEDGER).rglob("*.json")) == sorted([
        "report.html.json", f"figures/{A}/roc.png.json", f"export/{A}/attrition.json.json",
        f"export/{A}/predictions.parquet.json", f"analyses/{A}/leaderboard.parquet.json",
        "logs/snakemake.log.json", "logs/sweep/0123456789ab.log.json"])
    assert audit(lay) == []


def test_a_shared_file_written_or_changed_around_the_gate_fails_the_audit(
        gate: Disclosure) -> None:
    lay = gate.layout
    gate.write_json(lay.data_quality, {"warnings": []})
    gate.write_text(lay.report, "<p>250 persons</p>")
    lay.report.write_text("<p>3 persons</p>")  # changed after the gate wrote it
    lay.export_predictions(A).parent.mkdir(parents=True)
    lay.export_predictions(A).write_bytes(b"PAR1")  # never went through the gate
    lay.benchmark("sweep/x").parent.mkdir(parents=True)
    lay.benchmark("sweep/x").write_text(BENCHMARK.replace("cpu_time", "subject_id"))
    assert audit(lay) == [
        f"{lay.benchmark('sweep/x')}: columns ['subject_id'] are not Snakemake's timing "
        "columns",
        f"{lay.export_predictions(A)}: a shared file not written through the disclosure "
        "gate",
        f"{lay.report}: changed after the disclosure gate wrote it",
    ]


def test_the_gate_writes_shared_paths_only(gate: Disclosure, tmp_path: Path) -> None:
    lay = gate.layout
    for path in (lay.cohort_table("asthma", "0"), lay.model_predictions(A),
                 lay.tensor("asthma") / "x", lay.labels(A), lay.attrition(A),
                 lay.cohort_attrition("asthma"), tmp_path / "elsewhere.json",
                 lay.benchmark("ingest"), lay.config_file("0123456789ab", "metrics"),
                 lay.analysis(A) / "leaderboard.json", lay.root / "figures" / "roc.svg"):
        with pytest.raises(CohortflowError, match="not a shared output"):
            gate.write_json(path, {})
        assert not path.exists()
    assert not (lay.root / LEDGER).exists()


def test_the_layouts_shared_paths_are_what_the_gate_accepts() -> None:
    lay = Layout.of("results", "s")
    shared = [lay.report, lay.data_quality, lay.figure(A, "calibration"),
              lay.export_predictions(A), lay.export_attrition(A), lay.leaderboard(A),
              lay.manifest, lay.snakemake_log, lay.log("cohort_shard/asthma/0"),
              lay.benchmark("features/asthma")]
    person_level = [lay.store / "data" / "0.parquet", lay.cohort_table("asthma", "1"),
                    lay.cohort_attrition("asthma"), lay.attrition(A), lay.labels(A),
                    lay.tensor("asthma") / "zarr.json", lay.config_file("c", "predictions"),
                    lay.model_metrics(A), lay.model_predictions(A), lay.omop / "person.parquet",
                    lay.scratch("asthma") / "x"]
    assert [is_shared(p.relative_to(lay.root).as_posix()) for p in shared] == [True] * 10
    assert [is_shared(p.relative_to(lay.root).as_posix()) for p in person_level] == [False] * 11
    assert len(SHARED) == 8


def test_the_manifest_suppresses_the_source_row_counts_itself(gate: Disclosure,
                                                              tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text("name: tiny\n")
    record = manifest.build(
        disclosure=gate, study_path=study, study_digest="d", seeds={"study": 1},
        profile="laptop", workflow_root=Path(__file__).resolve().parents[1],
        results=tmp_path, outputs=[], source={"kind": "synth"},
        inputs={"death": {"rows": 3, "sha256": "ab"}, "person": {"rows": 600}}, metrics={},
        benchmarks=[], snakemake_logs=[])
    assert record["inputs"] == {"death": {"rows": "<11", "sha256": "ab"},
                                "person": {"rows": 600}}


def test_the_manifest_lists_every_analysis_and_names_each_step_by_its_path(
        gate: Disclosure, tmp_path: Path) -> None:
    spec = Study.model_validate({
        "name": "tiny", "source": {"synth": {"persons": 100}},
        "concept_sets": {c: {"include": [{"concept_id": i}]}
                         for i, c in enumerate(("asthma", "copd", "exacerbation"), 1)},
        "cohorts": {"asthma": {"entry": {"concept_set": "asthma"}},
                    "copd": {"entry": {"concept_set": "copd"}}},
        "outcomes": {"exacerbation": {"concept_set": "exacerbation"}},
        "times_at_risk": {"1y": {"start_days": 1, "end_days": 365}},
        "analyses": [{"targets": ["copd", "asthma"], "outcome": "exacerbation",
                      "time_at_risk": "1y"}]})
    lay = gate.layout
    # one timing per analysis: the same file name under model/ and export/
    benchmarks = [lay.benchmark(f"{step}/{a.id}") for step in ("model", "export")
                  for a in spec.analysis_list()] + [lay.benchmark("cohort_shard/copd/0")]
    for path in benchmarks:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BENCHMARK)
    study = tmp_path / "study.yaml"
    study.write_text("name: tiny\n")
    outputs = [lay.analysis(a.id) for a in spec.analysis_list()]
    for folder in outputs:
        folder.mkdir(parents=True)
        (folder / "attrition.json").write_text(folder.name)
    record = manifest.build(
        disclosure=gate, study_path=study, study_digest="d", seeds={"study": 1},
        profile="laptop", workflow_root=Path(__file__).resolve().parents[1],
        results=lay.root, outputs=outputs, source={"kind": "synth"}, inputs={},
        metrics={a.id: {"auroc": 0.7} for a in spec.analysis_list()}, benchmarks=benchmarks,
        snakemake_logs=[], analyses=manifest.analyses_record(spec))
    assert record["analyses"] == [
        {"id": "copd__exacerbation__1y", "target": "copd", "outcome": "exacerbation",
         "time_at_risk": "1y"},
        {"id": "asthma__exacerbation__1y", "target": "asthma", "outcome": "exacerbation",
         "time_at_risk": "1y"}]
    assert record["cohorts"] == ["asthma", "copd", "exacerbation"]
    assert sorted(record["steps"]) == [
        "cohort_shard/copd/0", "export/asthma__exacerbation__1y",
        "export/copd__exacerbation__1y", "model/asthma__exacerbation__1y",
        "model/copd__exacerbation__1y"]
    assert sorted(record["outputs"]) == ["analyses/asthma__exacerbation__1y",
                                         "analyses/copd__exacerbation__1y"]
    # a rerun whose one analysis differs is named, output by output
    other = {**record, "outputs": {**record["outputs"], "analyses/copd__exacerbation__1y": {
        "sha256": "0", "files": 1}}}
    verdicts = {v.output: v.verdict for v in manifest.compare(record, other)[0]}
    assert verdicts == {"analyses/asthma__exacerbation__1y": "identical",
                        "analyses/copd__exacerbation__1y": "different",
                        "metrics (to 1e-9)": "identical"}


def test_verify_of_many_analyses_lists_the_outputs_that_differ_and_counts_the_rest(
        gate: Disclosure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = write_study(tmp_path / "s.yaml", name="s")
    recorded = manifest.build(
        disclosure=gate, study_path=study, study_digest="d", seeds={"study": 1},
        profile="laptop", workflow_root=Path(__file__).resolve().parents[1],
        results=tmp_path, outputs=[], source={"kind": "synth"}, inputs={},
        metrics={f"t{i}__o__1y": {"auroc": 0.7} for i in range(40)}, benchmarks=[],
        snakemake_logs=[])
    recorded["outputs"] = {f"analyses/t{i}__o__1y": {"sha256": str(i)} for i in range(40)}
    (tmp_path / "manifest.json").write_text(json.dumps(recorded))
    rerun = copy.deepcopy(recorded)
    rerun["outputs"]["analyses/t7__o__1y"] = {"sha256": "changed"}
    done = verify_with_rerun(tmp_path / "manifest.json", rerun, monkeypatch)
    assert done.exit_code == 1, done.output
    lines = " ".join(done.output.split())
    assert "│ analyses/t7__o__1y │ different │" in lines
    assert "│ (40 more outputs) │ identical │" in lines  # 39 analyses and the metrics
    assert "t8__o__1y" not in lines
