export = LazyModule("cohortflow.export")
quality = LazyModule("cohortflow.quality")


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


study_report = LazyModule("cohortflow.report")  # not `report`: Snakemake's report() flag


def every_analysis(path_of):
    """One path per analysis, ``path_of(analysis id)``."""
    return [path_of(a) for a in ANALYSES]


# One page for the whole study: the overview grid of targets x outcomes, then one section
# per analysis.
rule report:
    input:
        attrition=every_analysis(LAYOUT.attrition),
        labels=every_analysis(LAYOUT.labels),
        matched=[LAYOUT.matched(a) for a in MATCHED] + [LAYOUT.matching(a) for a in MATCHED],
        metrics=every_analysis(LAYOUT.model_metrics),
        predictions=every_analysis(LAYOUT.model_predictions),
        leaderboard=every_analysis(LAYOUT.leaderboard),
        features=[LAYOUT.features(t) for t in STUDY.targets()],
        sweep_metrics=[LAYOUT.config_file(c, "metrics") for c in CONFIGS],
        sweep_predictions=[LAYOUT.config_file(c, "predictions") for c in CONFIGS],
        oracle=get_oracle,
        store=LAYOUT.store,
        quality=LAYOUT.data_quality,
    output:
        page=report(LAYOUT.report, caption="../report/study.rst", category="Study"),
        roc=every_analysis(lambda a: report(LAYOUT.figure(a, "roc"), caption="../report/roc.rst",
                                            category="Best models", subcategory=a)),
        calibration=every_analysis(lambda a: report(
            LAYOUT.figure(a, "calibration"), caption="../report/calibration.rst",
            category="Best models", subcategory=a)),
    params:
        digest=STUDY.report_digest(),
    # Processes that draw the figures: one per 40 analyses, at most 8 (starting one costs
    # seconds of imports, drawing an analysis's figures about 0.3 s), so a small study
    # draws in the step's own process.  Snakemake lowers it to the cores it has (laptop:
    # the machine's, SLURM: the profile's `cores`).
    threads: max(1, min(8, len(ANALYSES) // ANALYSES_PER_DRAWER))
    log:
        LAYOUT.log("report"),
    benchmark:
        LAYOUT.benchmark("report")
    run:
        with DISCLOSURE.step_log(log[0]):
            study_report.write(STUDY, DISCLOSURE, CONFIGS, oracle_dirs=input.oracle,
                               quality=input.quality, workers=threads)


# What leaves the compute besides the report: pseudonymous predictions, suppressed attrition,
# per analysis.  The pseudonym key comes from $COHORTFLOW_PSEUDONYM_KEY in the job's
# environment, never from a param (params are stored in .snakemake/metadata).
rule export:
    input:
        attrition=LAYOUT.attrition("{analysis}"),
        predictions=LAYOUT.model_predictions("{analysis}"),
    output:
        predictions=LAYOUT.export_predictions("{analysis}"),
        attrition=LAYOUT.export_attrition("{analysis}"),
    params:
        digest=STUDY.display_digest(),
    # With model (model.smk): one submission per batch of analyses on SLURM, unless the
    # study is small enough to run it on the submit host (a local rule is never grouped).
    group:
        None if TAIL_ON_SUBMIT_HOST else "analysis"
    log:
        LAYOUT.log("export/{analysis}"),
    benchmark:
        LAYOUT.benchmark("export/{analysis}")
    run:
        with DISCLOSURE.step_log(log[0]):
            export.write(DISCLOSURE, input.attrition, input.predictions, output.predictions,
                         output.attrition)
