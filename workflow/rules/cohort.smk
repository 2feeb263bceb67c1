rule cohort_shard:
    input:
        STORE,
    output:
        table=COHORT / "shards" / "{shard}.parquet",
        attrition=COHORT / "shards" / "{shard}.attrition.json",
    params:
        digest=STUDY.cohort_digest(),
    log:
        RESULTS / "logs" / "cohort_{shard}.log",
    benchmark:
        BENCHMARKS / "cohort_shard_{shard}.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.cohort_shard(STUDY, input[0], wildcards.shard, output.table, output.attrition)


rule attrition:
    input:
        expand(COHORT / "shards" / "{shard}.attrition.json", shard=SHARDS),
    output:
        COHORT / "attrition.json",
    log:
        RESULTS / "logs" / "attrition.log",
    benchmark:
        BENCHMARKS / "attrition.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.merge_attrition(input, output[0])
