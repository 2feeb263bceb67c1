cohorts = LazyModule("cohortflow.cohorts")


# One job per (cohort, shard) for every cohort an analysis reads, as target or outcome: a
# cohort shared by many analyses is built once.
rule cohort_shard:
    input:
        store=LAYOUT.store,
        phenotypes=get_cohort_phenotypes,
    output:
        table=LAYOUT.cohort_table("{cohort}", "{shard}"),
        attrition=LAYOUT.cohort_shard_attrition("{cohort}", "{shard}"),
    params:
        digest=lambda wildcards: STUDY.cohort_digest(wildcards.cohort),
    # On SLURM, `group-components: [cohort=N]` (profiles/slurm) packs N shards, of any
    # cohorts, into one submission: a warehouse's thousands of shards are not thousands of
    # sbatch calls (docs/scaling.md).
    group:
        "cohort"
    log:
        LAYOUT.log("cohort_shard/{cohort}/{shard}"),
    benchmark:
        LAYOUT.benchmark("cohort_shard/{cohort}/{shard}")
    run:
        with DISCLOSURE.step_log(log[0]):
            cohorts.write_shard(STUDY, wildcards.cohort, input.store, wildcards.shard,
                                output.table, output.attrition,
                                input.phenotypes[0] if input.phenotypes else None)


rule attrition:
    input:
        lambda wildcards: [LAYOUT.cohort_shard_attrition(wildcards.cohort, shard)
                           for shard in SHARDS],
    output:
        LAYOUT.cohort_attrition("{cohort}"),
    log:
        LAYOUT.log("attrition/{cohort}"),
    benchmark:
        LAYOUT.benchmark("attrition/{cohort}")
    run:
        with DISCLOSURE.step_log(log[0]):
            cohorts.write_attrition(input, output[0])


# The labels of one (target, outcome, time at risk): the target's episodes and the outcome
# cohort's rows, joined; no event is read again.
rule labels:
    input:
        unpack(get_labels_input),
    output:
        labels=LAYOUT.labels("{analysis}"),
        attrition=LAYOUT.attrition("{analysis}"),
    params:
        digest=lambda wildcards: STUDY.labels_digest(wildcards.analysis),
    # On SLURM, `group-components` (profiles/slurm) packs many analyses' labels, each well
    # under a second, into one submission.
    group:
        "labels"
    log:
        LAYOUT.log("labels/{analysis}"),
    benchmark:
        LAYOUT.benchmark("labels/{analysis}")
    run:
        analysis = ANALYSES[wildcards.analysis]
        with DISCLOSURE.step_log(log[0]):
            cohorts.write_labels(STUDY, analysis, LAYOUT.cohort(analysis.target),
                                 LAYOUT.cohort(analysis.outcome_cohort), SHARDS,
                                 output.labels, output.attrition)


# A matched analysis's cases and their controls (`matching:` of its analyses: entry): every
# shard's labels at once, with each person's sex and birth from the store and the prior
# observation from the target's episodes (the target stands in the inputs by its attrition,
# as in rule labels).  Unmatched analyses have no such job.
rule match:
    input:
        labels=LAYOUT.labels("{analysis}"),
        target=lambda wildcards: LAYOUT.cohort_attrition(ANALYSES[wildcards.analysis].target),
        store=LAYOUT.store,
    output:
        matched=LAYOUT.matched("{analysis}"),
        record=LAYOUT.matching("{analysis}"),
    params:
        digest=lambda wildcards: STUDY.matching_digest(wildcards.analysis),
    group:
        "labels"
    log:
        LAYOUT.log("match/{analysis}"),
    benchmark:
        LAYOUT.benchmark("match/{analysis}")
    run:
        analysis = ANALYSES[wildcards.analysis]
        with DISCLOSURE.step_log(log[0]):
            cohorts.write_matching(analysis, STUDY.seed, input.labels,
                                   LAYOUT.cohort(analysis.target), input.store, SHARDS,
                                   output.matched, output.record)
