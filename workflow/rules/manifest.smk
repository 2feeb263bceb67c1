from cohortflow import manifest, runner


rule manifest:
    input:
        store=LAYOUT.store,
        cohort=LAYOUT.attrition,
        features=LAYOUT.features,
        metrics=LAYOUT.model_metrics,
        predictions=LAYOUT.model_predictions,
        leaderboard=LAYOUT.leaderboard,
        report=LAYOUT.report,
        export=LAYOUT.export_predictions,
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
                           [LAYOUT.store, LAYOUT.cohort, LAYOUT.tensor, LAYOUT.model_metrics,
                            LAYOUT.model_predictions, LAYOUT.sweep, LAYOUT.report,
                            LAYOUT.export],
                           input.benchmarks)
