from cohortflow import features


rule features:
    input:
        store=LAYOUT.store,
        cohort=expand(LAYOUT.cohort_table("{shard}"), shard=SHARDS),
    output:
        directory(LAYOUT.features),
    params:
        digest=STUDY.features_digest(),
    threads: 2
    log:
        LAYOUT.log("features"),
    benchmark:
        LAYOUT.benchmark("features")
    run:
        with DISCLOSURE.step_log(log[0]):
            features.build_tensor(STUDY, input.store, LAYOUT.cohort, LAYOUT.tensor,
                                  scratch=LAYOUT.scratch, workers=threads,
                                  dask_config=get_dask_config(resources))
