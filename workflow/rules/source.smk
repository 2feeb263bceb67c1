rule synth:
    output:
        directory(RESULTS / "omop"),
    params:
        digest=STUDY.synth_digest(),
    log:
        RESULTS / "logs" / "synth.log",
    benchmark:
        BENCHMARKS / "synth.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.synthesize(STUDY, output[0])


# OMOP sources are ingested; a MEDS source (source.meds) is checked against the MEDS schema
# and copied into the event store, re-sharded, so later rules read one layout (see
# cohortflow.meds).
rule ingest:
    input:
        get_omop_source,
    output:
        directory(STORE),
    params:
        digest=STUDY.ingest_digest(),
    resources:
        # One pass over the whole source: twice the default memory, and more on a retry.
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
    log:
        RESULTS / "logs" / "ingest.log",
    benchmark:
        BENCHMARKS / "ingest.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.ingest(STUDY, input[0] if input else None, output[0])
