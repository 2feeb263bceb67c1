"""The planted CYP2C19 x escitalopram interaction is recovered by the seed pgx study: the
model with genotype features beats the clinical one on the held-out persons (paired DeLong
difference of test AUROCs, its 95% interval above 0), and the CYP2C19 poor-metaboliser
cohort's adverse-reaction rate has a 95% Wilson interval that holds the planted rate.

The seed study plants a graded effect (``effect: graded``: poor 0.30, intermediate 0.12,
normal 0.05, rapid 0.03, ultrarapid 0.02, recorded in ``oracle.json``); the run here is the
seed study at :data:`PERSONS` persons in 2 shards.  The recovered-interaction table is
printed (``pytest -s``) and written beside the run as ``recovery.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from cohortflow import export, models, privacy, synth
from cohortflow.cohorts._engine import GENOTYPED_STEP
from cohortflow.disclosure import Disclosure
from cohortflow.errors import CohortflowError, StudySpecError
from cohortflow.layout import Layout
from cohortflow.study import load_study, parse_study
from cohortflow.synth._genotypes import GRADED_RATES, POOR, GenotypePlant, Genotypes
from tests.helpers import REPO, run_study
from tests.test_privacy_study import IMAGES, IN_CELL, IN_TEXT, scan, shared_files

PGX_STUDY = REPO / "seeds" / "studies" / "pgx.yaml"
PERSONS = 8000
"""The smallest run measured to recover the interaction with a margin: at 8,000 persons
(1,194 held-out starters, 84 outcomes) the DeLong difference was 0.102 [0.039, 0.165]; at
5,000 (741, 50) 0.091 [0.008, 0.174], too close to 0 to rely on."""
ALL = "escitalopram_starters__adverse_reaction__90d"
POOR_ANALYSIS = "cyp2c19_poor__adverse_reaction__90d"


def wilson(events: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``events / n`` (95% by default).

    >>> [round(x, 4) for x in wilson(3, 10)]
    [0.1078, 0.6032]
    """
    p = events / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_the_graded_plant_is_off_by_default_and_its_rates_follow_cpic_order() -> None:
    assert Genotypes().effect == "poor_only"
    off = Genotypes().rates()
    assert {off[POOR]} == {0.30} and set(off.values()) == {0.30, 0.05}
    rates = Genotypes(effect="graded").rates()
    assert rates == GRADED_RATES
    order = ["Ultrarapid Metabolizer", "Rapid Metabolizer", "Normal Metabolizer",
             "Intermediate Metabolizer", POOR]
    assert [rates[p] for p in order] == sorted(rates[p] for p in order)
    assert len({rates[p] for p in order}) == len(order)


def test_the_graded_plant_is_deterministic_and_leaves_the_default_draws_alone() -> None:
    """Same seed, same allele-pair rates; the default effect draws exactly as before it
    existed (0.30 for poor metabolisers, 0.05 otherwise)."""
    ids = np.arange(1, 5001, dtype=np.int64)
    one, two = (GenotypePlant(3, Genotypes(effect="graded")) for _ in range(2))
    a, b = one._pairs(ids)
    assert np.array_equal(one.rate[a, b], two.rate[a, b])
    default = GenotypePlant(3, Genotypes())
    pm = default.poor_metabolizer(ids)
    assert np.array_equal(default.rate[a, b], np.where(pm, 0.30, 0.05))
    assert 0 < pm.sum() < ids.size


def test_the_graded_plant_is_recorded_in_the_oracle_with_its_rates(tmp_path: Path) -> None:
    """The oracle holds the exact rates and, per true phenotype, the exposed persons and
    their events, which add up to the poor-metaboliser split recorded before; a bad effect
    is refused by name."""
    synth.generate(1500, 4, tmp_path / "cdm", progress=False,
                   genotypes={"share": 0.5, "background_variants": 5, "effect": "graded"})
    oracle = json.loads((tmp_path / "cdm" / "oracle.json").read_text())["genotypes"]
    assert oracle["effect"] == "graded" and oracle["rates_by_phenotype"] == GRADED_RATES
    by = oracle["exposed_by_phenotype"]
    truth = oracle["exposed_by_true_phenotype"]
    for kind in ("exposed", "events"):
        assert by[POOR][kind] == truth["poor_metabolizer"][kind]
        assert sum(g[kind] for p, g in by.items() if p != POOR) == truth["other"][kind]
    assert by["Normal Metabolizer"]["exposed"] > 0
    with pytest.raises(CohortflowError, match=r"genotypes.effect must be one of.*graded"):
        synth.generate(10, 1, tmp_path / "bad", progress=False, genotypes={"effect": "strong"})
    with pytest.raises(StudySpecError, match="effect"):
        raw = yaml.safe_load(PGX_STUDY.read_text())
        raw["source"]["synth"]["genotypes"]["effect"] = "strong"
        parse_study(raw, origin="pgx.yaml")


def test_the_default_effect_is_left_out_of_the_study_dumps() -> None:
    """Studies written before the graded effect keep their synth keys."""
    raw = yaml.safe_load(PGX_STUDY.read_text())
    assert load_study(PGX_STUDY).source.model_dump(mode="json")["synth"]["genotypes"][
        "effect"] == "graded"
    del raw["source"]["synth"]["genotypes"]["effect"]
    dumped = parse_study(raw).source.model_dump(mode="json")["synth"]["genotypes"]
    assert "effect" not in dumped


@pytest.fixture(scope="module")
def recovery_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed pgx study at :data:`PERSONS` persons in 2 shards."""
    root = tmp_path_factory.mktemp("pgx_recovery")
    raw = yaml.safe_load(PGX_STUDY.read_text())
    raw["source"]["synth"]["persons"] = PERSONS
    raw["shards"] = 2
    study = root / "pgx.yaml"
    study.write_text(yaml.safe_dump(raw, sort_keys=False))
    return run_study(study, root / "run", name="pgx")


def _test_predictions(results: Path, analysis: str) -> dict[str, pl.DataFrame]:
    """Each feature set's held-out predictions of ``analysis`` (one configuration per
    feature set in the seed study), keyed by feature set."""
    lay = Layout(results)
    board = pl.read_parquet(lay.leaderboard(analysis))
    out = {}
    for config, feature_set in board.select("config_id", "feature_set").iter_rows():
        frame = pl.read_parquet(lay.config_file(config, "predictions"))
        out[feature_set] = frame.filter(pl.col("split") == "test").sort(
            "subject_id", "index_time")
    return out


def recovered(results: Path) -> dict[str, Any]:
    """The recovered-interaction table: test AUROCs with 95% intervals, their paired
    difference with its interval and p, and the poor-metaboliser cohort's outcome rate
    against the planted one."""
    lay = Layout(results)
    board = pl.read_parquet(lay.leaderboard(ALL))
    auroc = {row["feature_set"]: [row["test_auroc"], row["test_auroc_ci_low"],
                                  row["test_auroc_ci_high"]]
             for row in board.iter_rows(named=True)}
    test = _test_predictions(results, ALL)
    clinical, genotyped = test["clinical"], test["with_genotypes"]
    assert clinical.select("subject_id", "index_time", "label").equals(
        genotyped.select("subject_id", "index_time", "label"))
    diff, low, high, p = models.delong_difference(
        genotyped["label"].to_numpy(), genotyped["prediction"].to_numpy(),
        clinical["prediction"].to_numpy())
    labels = pl.read_parquet(lay.labels(POOR_ANALYSIS))
    events, n = int(labels["label"].sum()), labels.height
    oracle = json.loads((results / "omop" / "oracle.json").read_text())
    planted = oracle["genotypes"]["rates_by_phenotype"][POOR]
    return {"persons": PERSONS, "test_persons": clinical.height,
            "test_outcomes": int(clinical["label"].sum()),
            "test_auroc": auroc, "difference": [diff, low, high], "p": p,
            "poor_cohort": {"episodes": n, "outcomes": events, "rate": events / n,
                            "wilson_95": list(wilson(events, n)), "planted": planted}}


@pytest.mark.e2e
@pytest.mark.slow
def test_the_planted_interaction_is_recovered(recovery_run: Path) -> None:
    table = recovered(recovery_run)
    text = json.dumps(table, indent=1)
    (recovery_run.parents[2] / "recovery.json").write_text(text + "\n")
    print("\nrecovered interaction:\n" + text)
    clinical, genotyped = table["test_auroc"]["clinical"], table["test_auroc"]["with_genotypes"]
    assert genotyped[0] > clinical[0]
    diff, low, high = table["difference"]
    assert diff == pytest.approx(genotyped[0] - clinical[0], abs=1e-9)
    assert 0 < low < diff < high, table
    cohort = table["poor_cohort"]
    assert cohort["planted"] == GRADED_RATES[POOR]
    low, high = cohort["wilson_95"]
    assert low <= cohort["planted"] <= high, cohort

# ---- privacy of the pgx run ---------------------------------------------------------------

K = 11  # the seed study's min_cell_count
VARIANT = re.compile(r"(?<![A-Za-z0-9])(?:rs\d+\b|chr(?:\d+|X|Y|M):\d+)")
"""An rsID or a chromosome position (``chr10:94781859``, a region's start)."""
SAMPLE = re.compile(r"CFS\d{8}")
"""The synthetic source's sample ids."""
NO_ID = {987_654_321_987}  # the scan's id search needs one; person ids are short numbers


def _texts(files: list[Path]) -> dict[Path, str]:
    """Every file as text (a Parquet file as CSV; images left out)."""
    out = {}
    for path in files:
        if path.suffix == ".parquet":
            out[path] = pl.read_parquet(path).cast(pl.String).write_csv()
        elif path.suffix != ".png":
            out[path] = IMAGES.sub("", path.read_text(errors="replace"))
    return out


def variant_counts(text: str) -> list[str]:
    """Each line or table row that names a variant (rsID or position) beside a count.

    >>> variant_counts("<tr><td>rs4244285</td><td class=n>12 (3.0%)</td></tr>"
    ...                "<tr><td>VARIANT//chr10:94781859:G:A</td><td class=n>0.052</td></tr>")
    ['rs4244285: <td class=n>12 (3.0%)</td>']
    >>> variant_counts("p3 chr20:12641150- 10 records last_pos=50814585")
    ['chr20:12641150: 10 records']
    """
    found = []
    for piece in re.split(r"</tr>|\n", text):
        if (name := VARIANT.search(piece)) is not None:
            found += [f"{name.group(0)}: {m.group(0)}"
                      for pattern in (IN_CELL, IN_TEXT) for m in pattern.finditer(piece)]
    return found


def _shared(results: Path) -> list[Path]:
    """The run's shared outputs and Snakemake's own logs (the working folder's)."""
    return [*shared_files(results),
            *sorted((results.parents[1] / ".snakemake" / "log").glob("*.log"))]


@pytest.mark.e2e
@pytest.mark.slow
def test_no_shared_output_shows_a_sample_id_a_variant_count_or_a_small_count(
        recovery_run: Path) -> None:
    files = _shared(recovery_run)
    kinds = {p.suffix for p in files}
    assert {".html", ".json", ".log", ".parquet"} <= kinds
    assert any("genomics" in p.parts for p in files)  # the genotype steps' logs are scanned
    texts = _texts(files)
    link = pl.read_csv(recovery_run / "omop" / "genotypes" / "linkage.csv")
    samples = set(link["sample_id"].to_list())
    assert len(samples) > 1000
    leaks = [f"{p}: sample id {m.group(0)}" for p, t in texts.items()
             for m in SAMPLE.finditer(t)]
    leaks += [f"{p}: {found}" for p, t in texts.items() for found in variant_counts(t)]
    leaks += scan(files, K, NO_ID, set())
    assert leaks == []
    # the scan finds what it looks for: a genotype step's log before bio2zarr was quietened
    assert variant_counts("INFO bio2zarr.vcf: Finish p22 x.vcf.gz__chr20:12641150- 10 "
                          "records last_pos=50814585")
    # the report does show the genotype features (names and weights), the pgx cohort and
    # its phenotype counts, each suppressed below K
    report = texts[recovery_run / "report.html"]
    assert "VARIANT//chr10:94781859:G:A" in report and "PGX//CYP2C19//poor" in report
    assert "&lt;11" in report


@pytest.mark.e2e
@pytest.mark.slow
def test_the_pgx_attrition_is_suppressed_below_k_and_persons_are_pseudonyms(
        recovery_run: Path, tmp_path: Path) -> None:
    lay = Layout(recovery_run)
    internal = json.loads(lay.attrition(POOR_ANALYSIS).read_text())
    shared = json.loads(lay.export_attrition(POOR_ANALYSIS).read_text())
    assert [s["step"] for s in shared] == [s["step"] for s in internal]
    assert GENOTYPED_STEP in [s["step"] for s in shared]
    for mine, theirs in zip(internal, shared, strict=True):
        if privacy.small(mine["subjects"], K):
            assert not str(theirs["persons"]).isdigit(), theirs
        else:  # shown as is, or hidden by complementary suppression
            assert theirs["persons"] == mine["subjects"] or not str(
                theirs["persons"]).isdigit()
    # the same steps through the gate at a threshold above the phenotype step's count
    poor = internal[-1]["subjects"]
    gate = Disclosure(Layout.of(tmp_path / "results", "pgx"), poor + 1)
    out = Layout.of(tmp_path / "results", "pgx")
    export.write(gate, lay.attrition(POOR_ANALYSIS), lay.model_predictions(POOR_ANALYSIS),
                 out.export_predictions(POOR_ANALYSIS), out.export_attrition(POOR_ANALYSIS))
    strict = json.loads(out.export_attrition(POOR_ANALYSIS).read_text())
    assert strict[-1]["persons"] == f"<{poor + 1}"
    assert strict[2]["persons"] == internal[2]["subjects"]  # the genotyped step: large
    # predictions leave with keyed pseudonyms only: no subject id, no sample id
    for analysis in (ALL, POOR_ANALYSIS):
        ours = pl.read_parquet(lay.model_predictions(analysis))
        theirs = pl.read_parquet(lay.export_predictions(analysis))
        assert theirs.columns == ["person", "split", "label", "prediction"]
        expected = privacy.pseudonyms(ours["subject_id"].to_list(),
                                      key=os.environ[privacy.PSEUDONYM_KEY_ENV])
        assert sorted(theirs["person"].to_list()) == sorted(expected)
        raw = {str(s) for s in ours["subject_id"].to_list()}
        link = pl.read_csv(recovery_run / "omop" / "genotypes" / "linkage.csv")
        assert not (set(theirs["person"].to_list()) & (raw | set(link["sample_id"])))


@pytest.mark.e2e
@pytest.mark.slow
def test_the_manifest_checksums_the_genotype_tables_and_keys_the_genotype_inputs(
        recovery_run: Path) -> None:
    """`cohortflow verify` names a genotype table that differs, and a changed VCF or linkage
    table is a recorded cause: the tables the study read are outputs of the manifest, the
    genotype files and the linkage inputs (by content)."""
    from cohortflow.manifest import tree_digest

    record = json.loads(Layout(recovery_run).manifest.read_text())
    tables = [f"genomics/{t}.parquet" for t in ("linkage", "phenotypes", "variants")]
    assert set(tables) <= set(record["outputs"])
    for table in tables:
        assert record["outputs"][table] == tree_digest(recovery_run / table)
    study = load_study(recovery_run.parents[2] / "pgx.yaml")
    assert record["inputs"]["genomics"] == {"sha256": study.genomics_digest(),
                                            "linkage_sha256": study.linkage_digest()}
    assert not any(key.startswith("genomics/genotypes") for key in record["outputs"])


@pytest.mark.e2e
@pytest.mark.slow
def test_scoring_refuses_a_package_that_needs_genotypes(recovery_run: Path,
                                                        tmp_path: Path) -> None:
    """Scoring reads an extract's events only: a model of genotype features, or a target
    cohort restricted by phenotype, would score every person as one without genotypes, so
    the command refuses the package up front (exit 2, nothing written)."""
    from cohortflow import package, scoring
    from tests.helpers import cohortflow

    for analysis, expected in ((POOR_ANALYSIS, "the target cohort's pharmacogene criteria "
                                "(CYP2C19)"), (ALL, "the feature columns ")):
        out = tmp_path / analysis
        package.write(recovery_run, out, study_path=recovery_run.parents[2] / "pgx.yaml",
                      analysis=analysis)
        defs = scoring.Definitions.of(package.load(out))
        genomic = [c for c in defs.columns.code if c.startswith(("PGX//", "GENOMICS//",
                                                                 "VARIANT//"))]
        if analysis == ALL and not genomic:
            continue  # the chosen configuration is the clinical one: nothing to refuse
        assert any(expected in b for b in defs.beyond_events()), defs.beyond_events()
        done = cohortflow("score", str(out), "--source", str(recovery_run / "events"),
                          "--as-of", "2020-01-01", "--out", "scores", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        message = " ".join(done.stderr.split())
        assert expected in message and "fix: package an analysis whose features" in message
        assert "Traceback" not in done.stderr and not (tmp_path / "scores").exists()
