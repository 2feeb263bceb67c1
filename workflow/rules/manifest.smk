from cohortflow import manifest, runner


rule manifest:
    input:
        store=LAYOUT.store,
        attrition=every_analysis(LAYOUT.attrition),
        features=[LAYOUT.features(t) for t in STUDY.targets()],
        metrics=every_analysis(LAYOUT.model_metrics),
        predictions=every_analysis(LAYOUT.model_predictions),
        leaderboard=every_analysis(LAYOUT.leaderboard),
        report=LAYOUT.report,
        export=every_analysis(LAYOUT.export_predictions),
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
                           [LAYOUT.store, LAYOUT.root / "cohorts", LAYOUT.root / "features",
                            LAYOUT.root / "analyses", LAYOUT.sweep, LAYOUT.report,
                            LAYOUT.export],
                           input.benchmarks)
