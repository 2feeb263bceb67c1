from cohortflow import cohorts


rule cohort_shard:
    input:
        LAYOUT.store,
    output:
        table=LAYOUT.cohort_table("{shard}"),
        attrition=LAYOUT.cohort_attrition("{shard}"),
    params:
        digest=STUDY.cohort_digest(),
    log:
        LAYOUT.log("cohort_{shard}"),
    benchmark:
        LAYOUT.benchmark("cohort_shard_{shard}")
    run:
        with DISCLOSURE.step_log(log[0]):
            cohorts.write_shard(STUDY, input[0], wildcards.shard, output.table,
                                output.attrition)


rule attrition:
    input:
        expand(LAYOUT.cohort_attrition("{shard}"), shard=SHARDS),
    output:
        LAYOUT.attrition,
    log:
        LAYOUT.log("attrition"),
    benchmark:
        LAYOUT.benchmark("attrition")
    run:
        with DISCLOSURE.step_log(log[0]):
            cohorts.write_attrition(input, output[0])
