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
    run:
        from cohortflow import steps

        oracle = Path(input.oracle[0]) / "oracle.json" if input.oracle else None
        steps.write_report(STUDY, input.attrition, input.metrics, input.predictions,
                           output[0], oracle)
