from cohortflow import quality


# The ingest's data-quality warnings as they may leave the compute (counts suppressed), for
# the report: a change in them reruns the report.
rule data_quality:
    input:
        store=STORE,
    output:
        RESULTS / "data_quality.json",
    params:
        digest=STUDY.display_digest(),
    log:
        RESULTS / "logs" / "data_quality.log",
    run:
        with steps.logging_to(log[0]):
            quality.share(input.store, output[0], STUDY.min_cell_count)


rule report:
    input:
        attrition=COHORT / "attrition.json",
        metrics=RESULTS / "model" / "metrics.json",
        predictions=RESULTS / "model" / "predictions.parquet",
        oracle=get_oracle,
        store=STORE,
        quality=RESULTS / "data_quality.json",
        cohort=expand(COHORT / "shards" / "{shard}.parquet", shard=SHARDS),
        features=FEATURES_DIR,
        leaderboard=SWEEP / "leaderboard.parquet",
        sweep_metrics=get_sweep_files("metrics.json"),
        sweep_predictions=get_sweep_files("predictions.parquet"),
    output:
        page=report(RESULTS / "report.html", caption="../report/study.rst", category="Study"),
        roc=report(RESULTS / "figures" / "roc.png", caption="../report/roc.rst",
                   category="Best models"),
        calibration=report(RESULTS / "figures" / "calibration.png",
                           caption="../report/calibration.rst", category="Best models"),
    params:
        digest=STUDY.report_digest(),
    log:
        RESULTS / "logs" / "report.log",
    benchmark:
        BENCHMARKS / "report.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.write_report(STUDY, input.attrition, input.metrics, input.predictions,
                               output.page, oracle_dirs=input.oracle, quality=input.quality,
                               sweep={"features": FEATURES, "store": input.store,
                                      "cohort": COHORT, "leaderboard": input.leaderboard,
                                      "sweep_dir": SWEEP, "roc": output.roc,
                                      "calibration": output.calibration})


# What leaves the compute besides the report: pseudonymous predictions, suppressed attrition.
# The pseudonym key comes from $COHORTFLOW_PSEUDONYM_KEY in the job's environment, never
# from a param (params are stored in .snakemake/metadata).
rule export:
    input:
        attrition=COHORT / "attrition.json",
        predictions=RESULTS / "model" / "predictions.parquet",
    output:
        predictions=RESULTS / "export" / "predictions.parquet",
        attrition=RESULTS / "export" / "attrition.json",
    params:
        digest=STUDY.display_digest(),
    log:
        RESULTS / "logs" / "export.log",
    benchmark:
        BENCHMARKS / "export.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.export_shared(STUDY, input.attrition, input.predictions,
                                Path(output.predictions).parent)
