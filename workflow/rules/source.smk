omop = LazyModule("cohortflow.omop")
synth = LazyModule("cohortflow.synth")


rule synth:
    output:
        directory(LAYOUT.omop),
    params:
        digest=STUDY.synth_digest(),
    log:
        LAYOUT.log("synth"),
    benchmark:
        LAYOUT.benchmark("synth")
    run:
        with DISCLOSURE.step_log(log[0]):
            synth.synthesize(STUDY, output[0])


# OMOP sources are ingested; a MEDS source (source.meds) is checked against the MEDS schema
# and copied into the event store, re-sharded, so later rules read one layout (see
# cohortflow.meds).
rule ingest:
    input:
        get_omop_source,
    output:
        directory(LAYOUT.store),
    params:
        digest=STUDY.ingest_digest(),
    resources:
        # One pass over the whole source: twice the default memory, and more on a retry.
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
    log:
        LAYOUT.log("ingest"),
    benchmark:
        LAYOUT.benchmark("ingest")
    run:
        with DISCLOSURE.step_log(log[0]):
            omop.ingest_study(STUDY, input[0] if input else None, output[0])
