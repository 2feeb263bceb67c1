rule manifest:
    input:
        store=STORE,
        cohort=COHORT / "attrition.json",
        features=FEATURES_DIR,
        metrics=RESULTS / "model" / "metrics.json",
        predictions=RESULTS / "model" / "predictions.parquet",
        leaderboard=SWEEP / "leaderboard.parquet",
        report=RESULTS / "report.html",
        export=RESULTS / "export" / "predictions.parquet",
        benchmarks=get_benchmarks,
    output:
        RESULTS / "manifest.json",
    log:
        RESULTS / "logs" / "manifest.log",
    benchmark:
        BENCHMARKS / "manifest.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.write_manifest(STUDY, STUDY_FILE, PROFILE, RESULTS, input.store,
                                 [input.store, COHORT, FEATURES, input.metrics,
                                  input.predictions, SWEEP, input.report,
                                  Path(input.export).parent],
                                 input.metrics, input.benchmarks, output[0])
