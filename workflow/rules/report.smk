rule report:
    input:
        attrition=COHORT / "attrition.json",
        metrics=RESULTS / "model" / "metrics.json",
        predictions=RESULTS / "model" / "predictions.parquet",
        oracle=get_oracle,
    output:
        report(RESULTS / "report.html", caption="../report/study.rst", category="Study"),
    log:
        RESULTS / "logs" / "report.log",
    benchmark:
        BENCHMARKS / "report.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.write_report(STUDY, input.attrition, input.metrics, input.predictions,
                               output[0], oracle_dirs=input.oracle)
