manifest = LazyModule("cohortflow.manifest")
runner = LazyModule("cohortflow.runner")

# Each checksummed on its own, so `cohortflow verify` names the cohort, tensor or analysis
# that differs: the store, the genotype tables, every cohort, every target's tensor, every analysis's folder
# (labels, attrition, chosen model, leaderboard), the sweep, the report and its figures, the
# export.
def genomic_outputs():
    """The genotype tables the study reads (person-level, the same bytes on every profile):
    the phenotypes for pgx criteria or genomic features, the dosages, and the linkage they
    come through.  Not the converted store, whose bio2zarr metadata names paths."""
    tables = set(get_genomic_tables(None).values())
    if any(LIBRARY[c].pgx_criteria() for c in STUDY.cohorts_used()):
        tables.add(LAYOUT.phenotypes)
    return sorted(tables | ({LAYOUT.linkage} if tables else set()))


MANIFEST_OUTPUTS = (
    [LAYOUT.store]
    + genomic_outputs()
    + [LAYOUT.cohort(c) for c in STUDY.cohorts_used()]
    + [LAYOUT.tensor(t) for t in STUDY.targets()]
    + [LAYOUT.analysis(a) for a in ANALYSES]
    + [LAYOUT.sweep, LAYOUT.report, LAYOUT.root / "figures", LAYOUT.export]
)


rule manifest:
    input:
        store=LAYOUT.store,
        cohorts=[LAYOUT.cohort_attrition(c) for c in STUDY.cohorts_used()],
        attrition=every_analysis(LAYOUT.attrition),
        features=[LAYOUT.features(t) for t in STUDY.targets()],
        metrics=every_analysis(LAYOUT.model_metrics),
        predictions=every_analysis(LAYOUT.model_predictions),
        leaderboard=every_analysis(LAYOUT.leaderboard),
        report=LAYOUT.report,
        export=every_analysis(LAYOUT.export_predictions)
        + every_analysis(LAYOUT.export_attrition),
        benchmarks=get_benchmarks,
    output:
        LAYOUT.manifest,
    log:
        LAYOUT.log("manifest"),
    benchmark:
        LAYOUT.benchmark("manifest")
    run:
        with DISCLOSURE.step_log(log[0]):
            manifest.write(STUDY, DISCLOSURE, STUDY_FILE, PROFILE, runner.workflow_root(),
                           MANIFEST_OUTPUTS, input.benchmarks)
