from cohortflow import export, quality


# The ingest's data-quality warnings as they may leave the compute (counts suppressed), for
# the report: a change in them reruns the report.
rule data_quality:
    input:
        store=STORE,
    output:
        LAYOUT.data_quality,
    params:
        digest=STUDY.display_digest(),
    log:
        LAYOUT.log("data_quality"),
    run:
        with DISCLOSURE.step_log(log[0]):
            quality.share(input.store, output[0], DISCLOSURE)


from cohortflow import report as study_report  # not `report`: Snakemake's report() flag


rule report:
    input:
        attrition=LAYOUT.attrition,
        metrics=LAYOUT.model_metrics,
        predictions=LAYOUT.model_predictions,
        oracle=get_oracle,
        store=LAYOUT.store,
        quality=LAYOUT.data_quality,
        cohort=expand(LAYOUT.cohort_table("{shard}"), shard=SHARDS),
        features=LAYOUT.features,
        leaderboard=LAYOUT.leaderboard,
        sweep_metrics=get_sweep_files("metrics"),
        sweep_predictions=get_sweep_files("predictions"),
    output:
        page=report(LAYOUT.report, caption="../report/study.rst", category="Study"),
        roc=report(LAYOUT.figure("roc"), caption="../report/roc.rst", category="Best models"),
        calibration=report(LAYOUT.figure("calibration"), caption="../report/calibration.rst",
                           category="Best models"),
    params:
        digest=STUDY.report_digest(),
    log:
        LAYOUT.log("report"),
    benchmark:
        LAYOUT.benchmark("report")
    run:
        with DISCLOSURE.step_log(log[0]):
            study_report.write(
                STUDY, DISCLOSURE, input.attrition, input.metrics, input.predictions,
                output.page, oracle_dirs=input.oracle, quality=input.quality,
                sweep=study_report.SweepInputs(features=LAYOUT.tensor, store=input.store,
                                         cohort=LAYOUT.cohort, leaderboard=input.leaderboard,
                                         folder=LAYOUT.sweep, roc=output.roc,
                                         calibration=output.calibration))


# What leaves the compute besides the report: pseudonymous predictions, suppressed attrition.
# The pseudonym key comes from $COHORTFLOW_PSEUDONYM_KEY in the job's environment, never
# from a param (params are stored in .snakemake/metadata).
rule export:
    input:
        attrition=LAYOUT.attrition,
        predictions=LAYOUT.model_predictions,
    output:
        predictions=LAYOUT.export_predictions,
        attrition=LAYOUT.export_attrition,
    params:
        digest=STUDY.display_digest(),
    log:
        LAYOUT.log("export"),
    benchmark:
        LAYOUT.benchmark("export")
    run:
        with DISCLOSURE.step_log(log[0]):
            export.write(DISCLOSURE, input.attrition, input.predictions)
