rule synth:
    output:
        directory(RESULTS / "omop"),
    params:
        digest=STUDY.digest(),
    log:
        RESULTS / "logs" / "synth.log",
    run:
        from cohortflow import steps

        steps.synthesize(STUDY, output[0])


rule ingest:
    input:
        get_omop_source,
    output:
        directory(STORE),
    params:
        digest=STUDY.digest(),
    resources:
        mem_mb=4000,
    log:
        RESULTS / "logs" / "ingest.log",
    run:
        from cohortflow import steps

        steps.ingest(STUDY, input[0], output[0])
