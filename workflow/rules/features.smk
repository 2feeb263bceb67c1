features = LazyModule("cohortflow.features")


# One tensor per target cohort, read by every outcome and time at risk of that target.
rule features:
    input:
        unpack(get_genomic_tables),
        store=LAYOUT.store,
        cohort=lambda wildcards: cohort_tables(wildcards.target),
    output:
        directory(LAYOUT.features("{target}")),
    params:
        digest=lambda wildcards: STUDY.features_digest(wildcards.target),
    threads: 2
    log:
        LAYOUT.log("features/{target}"),
    benchmark:
        LAYOUT.benchmark("features/{target}")
    run:
        with DISCLOSURE.step_log(log[0]):
            features.build_tensor(STUDY, wildcards.target, input.store,
                                  LAYOUT.cohort(wildcards.target),
                                  LAYOUT.tensor(wildcards.target),
                                  scratch=LAYOUT.scratch(wildcards.target), workers=threads,
                                  dask_config=get_dask_config(resources),
                                  genomics=genomic_tables(input))
