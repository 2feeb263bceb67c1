rule model:
    input:
        store=STORE,
        cohort=expand(COHORT / "shards" / "{shard}.parquet", shard=SHARDS),
        features=RESULTS / "features" / "features.zarr",
    output:
        metrics=RESULTS / "model" / "metrics.json",
        predictions=RESULTS / "model" / "predictions.parquet",
    params:
        digest=STUDY.digest(),
    log:
        RESULTS / "logs" / "model.log",
    benchmark:
        BENCHMARKS / "model.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.train_model(STUDY, input.store, COHORT, input.features, output.metrics,
                              output.predictions)
