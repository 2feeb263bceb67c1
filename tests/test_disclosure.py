"""The disclosure gate: the one writer of a study's shared outputs, and the audit that names
a shared file written (or changed) any other way."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
import pytest

from cohortflow import manifest
from cohortflow.disclosure import LEDGER, Disclosure, audit, is_shared
from cohortflow.errors import CohortflowError
from cohortflow.layout import SHARED, Layout

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
    gate.write_bytes(lay.figure("roc"), b"\x89PNG")
    gate.write_json(lay.export_attrition, [{"step": "a", "persons": 120}])
    gate.write_parquet(lay.export_predictions, pl.DataFrame({"person": ["ab"]}))
    gate.write_parquet(lay.leaderboard, pl.DataFrame({"auroc": [0.7]}).to_arrow())
    with gate.open_log(lay.snakemake_log) as sink:
        sink.write("Finished job 0.\n")
    with gate.step_log(lay.log("sweep/0123456789ab")):
        logging.getLogger("cohortflow.test").info("trained")
    lay.benchmark("ingest").parent.mkdir(parents=True)
    lay.benchmark("ingest").write_text(BENCHMARK)  # Snakemake writes these
    # a person-level file beside them is not the gate's business
    lay.cohort_table("0").parent.mkdir(parents=True)
    lay.cohort_table("0").write_bytes(b"person-level")
    assert "trained" in lay.log("sweep/0123456789ab").read_text()
    assert json.loads(lay.export_attrition.read_text()) == [{"step": "a", "persons": 120}]
    assert sorted(p.relative_to(lay.root / LEDGER).as_posix()
                  for p in (lay.root / LEDGER).rglob("*.json")) == sorted([
        "report.html.json", "figures/roc.png.json", "export/attrition.json.json",
        "export/predictions.parquet.json", "sweep/leaderboard.parquet.json",
        "logs/snakemake.log.json", "logs/sweep/0123456789ab.log.json"])
    assert audit(lay) == []


def test_a_shared_file_written_or_changed_around_the_gate_fails_the_audit(
        gate: Disclosure) -> None:
    lay = gate.layout
    gate.write_json(lay.data_quality, {"warnings": []})
    gate.write_text(lay.report, "<p>250 persons</p>")
    lay.report.write_text("<p>3 persons</p>")  # changed after the gate wrote it
    lay.export.mkdir(parents=True)
    lay.export_predictions.write_bytes(b"PAR1")  # never went through the gate
    lay.benchmark("sweep/x").parent.mkdir(parents=True)
    lay.benchmark("sweep/x").write_text(BENCHMARK.replace("cpu_time", "subject_id"))
    assert audit(lay) == [
        f"{lay.benchmark('sweep/x')}: columns ['subject_id'] are not Snakemake's timing "
        "columns",
        f"{lay.export_predictions}: a shared file not written through the disclosure gate",
        f"{lay.report}: changed after the disclosure gate wrote it",
    ]


def test_the_gate_writes_shared_paths_only(gate: Disclosure, tmp_path: Path) -> None:
    lay = gate.layout
    for path in (lay.cohort_table("0"), lay.model_predictions, lay.tensor / "x",
                 tmp_path / "elsewhere.json", lay.benchmark("ingest"),
                 lay.config_file("0123456789ab", "metrics")):
        with pytest.raises(CohortflowError, match="not a shared output"):
            gate.write_json(path, {})
        assert not path.exists()
    assert not (lay.root / LEDGER).exists()


def test_the_layouts_shared_paths_are_what_the_gate_accepts() -> None:
    lay = Layout.of("results", "s")
    shared = [lay.report, lay.data_quality, lay.figure("calibration"), lay.export_predictions,
              lay.export_attrition, lay.leaderboard, lay.manifest, lay.snakemake_log,
              lay.log("cohort_0"), lay.benchmark("features")]
    person_level = [lay.store / "data" / "0.parquet", lay.cohort_table("1"), lay.attrition,
                    lay.tensor / "zarr.json", lay.config_file("c", "predictions"),
                    lay.model_metrics, lay.omop / "person.parquet", lay.scratch / "x"]
    assert [is_shared(p.relative_to(lay.root).as_posix()) for p in shared] == [True] * 10
    assert [is_shared(p.relative_to(lay.root).as_posix()) for p in person_level] == [False] * 8
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
