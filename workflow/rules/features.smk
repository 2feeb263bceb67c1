rule features:
    input:
        store=STORE,
        cohort=expand(COHORT / "shards" / "{shard}.parquet", shard=SHARDS),
    output:
        directory(FEATURES_DIR),
    params:
        digest=STUDY.features_digest(),
    threads: 2
    log:
        RESULTS / "logs" / "features.log",
    benchmark:
        BENCHMARKS / "features.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.build_features(STUDY, input.store, COHORT, FEATURES, workers=threads,
                                 dask_config=get_dask_config(resources))
