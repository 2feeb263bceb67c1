# The study's genotypes (genomics:): VCF/BCF -> VCF Zarr in bio2zarr's partitioned passes,
# one job per partition (parallel on a cluster), then the linkage, the pharmacogene
# phenotypes and the variant dosages.  Only a study with genomics: has these jobs; with
# genomics.zarr the conversion jobs are skipped.  Logic: cohortflow.genomics.
import json

genomics_steps = LazyModule("cohortflow.genomics._study")


def genotype_inputs():
    """The VCFs to convert, the given store (None: converted) and the linkage table."""
    return genomics_steps.genotype_inputs(STUDY, LAYOUT.omop)


def get_genotype_sources(wildcards):
    """What the genotype steps read from outside: the user's files, or the synth output."""
    if STUDY.source.synth is not None and STUDY.genomics.from_synth:
        return [LAYOUT.omop]
    store = STUDY.genotype_store()
    return [store] if store is not None else STUDY.genotype_files()


def planned(step):
    """The per-partition records of a conversion pass, once its init checkpoint has run."""
    record = getattr(checkpoints, f"genomics_{step}_init").get().output[0]
    parts = range(json.loads(Path(record).read_text())["partitions"])
    return [LAYOUT.genomics_step(f"{step}/{part}.json") for part in parts]


if STUDY.genomics is not None and STUDY.genotype_store() is None:

    checkpoint genomics_explode_init:
        input:
            get_genotype_sources,
        output:
            LAYOUT.genomics_step("explode_init.json"),
        params:
            digest=STUDY.genomics_digest(),
        log:
            LAYOUT.log("genomics/explode_init"),
        benchmark:
            LAYOUT.benchmark("genomics/explode_init")
        run:
            with DISCLOSURE.step_log(log[0]):
                genomics_steps.convert_init(genotype_inputs()[0], LAYOUT.genotypes,
                                            STUDY.genomics.partitions, output[0],
                                            STUDY.genomics.reference_contigs())

    rule genomics_explode:
        input:
            LAYOUT.genomics_step("explode_init.json"),
        output:
            LAYOUT.genomics_step("explode/{part}.json"),
        log:
            LAYOUT.log("genomics/explode/{part}"),
        benchmark:
            LAYOUT.benchmark("genomics/explode/{part}")
        run:
            with DISCLOSURE.step_log(log[0]):
                genomics_steps.convert_explode(LAYOUT.genotypes, int(wildcards.part),
                                               output[0])

    checkpoint genomics_encode_init:
        input:
            lambda wildcards: planned("explode"),
        output:
            LAYOUT.genomics_step("encode_init.json"),
        log:
            LAYOUT.log("genomics/encode_init"),
        benchmark:
            LAYOUT.benchmark("genomics/encode_init")
        run:
            with DISCLOSURE.step_log(log[0]):
                genomics_steps.convert_encode_init(LAYOUT.genotypes, STUDY.genomics.partitions,
                                                   input, output[0])

    rule genomics_encode:
        input:
            LAYOUT.genomics_step("encode_init.json"),
        output:
            LAYOUT.genomics_step("encode/{part}.json"),
        log:
            LAYOUT.log("genomics/encode/{part}"),
        benchmark:
            LAYOUT.benchmark("genomics/encode/{part}")
        run:
            with DISCLOSURE.step_log(log[0]):
                genomics_steps.convert_encode(LAYOUT.genotypes, int(wildcards.part), output[0])

    rule genomics_store:
        input:
            lambda wildcards: planned("encode"),
        output:
            LAYOUT.genotypes_record,
        log:
            LAYOUT.log("genomics/store"),
        benchmark:
            LAYOUT.benchmark("genomics/store")
        run:
            with DISCLOSURE.step_log(log[0]):
                genomics_steps.convert_finish(LAYOUT.genotypes, output[0])

elif STUDY.genomics is not None:

    # genomics.zarr: the store as given, checked and recorded; nothing converted.
    rule genomics_store:
        input:
            get_genotype_sources,
        output:
            LAYOUT.genotypes_record,
        params:
            digest=STUDY.genomics_digest(),
        log:
            LAYOUT.log("genomics/store"),
        benchmark:
            LAYOUT.benchmark("genomics/store")
        run:
            with DISCLOSURE.step_log(log[0]):
                genomics_steps.describe_store(STUDY.genotype_store(), output[0],
                                              STUDY.genomics.reference_contigs())


rule genomics_linkage:
    input:
        store=LAYOUT.genotypes_record,
        sources=get_genotype_sources,
    output:
        LAYOUT.linkage,
    params:
        digest=STUDY.linkage_digest(),
    log:
        LAYOUT.log("genomics/linkage"),
    benchmark:
        LAYOUT.benchmark("genomics/linkage")
    run:
        with DISCLOSURE.step_log(log[0]):
            genomics_steps.write_linkage(input.store, genotype_inputs()[2], output[0])


rule genomics_phenotypes:
    input:
        store=LAYOUT.genotypes_record,
        linkage=LAYOUT.linkage,
    output:
        LAYOUT.phenotypes,
    params:
        digest=STUDY.phenotypes_digest(),
    log:
        LAYOUT.log("genomics/phenotypes"),
    benchmark:
        LAYOUT.benchmark("genomics/phenotypes")
    run:
        with DISCLOSURE.step_log(log[0]):
            genomics_steps.write_phenotypes(input.store, input.linkage, STUDY.genomics.absent,
                                            output[0])


rule genomics_variants:
    input:
        store=LAYOUT.genotypes_record,
        linkage=LAYOUT.linkage,
    output:
        LAYOUT.variants,
    params:
        digest=STUDY.variants_digest(),
    log:
        LAYOUT.log("genomics/variants"),
    benchmark:
        LAYOUT.benchmark("genomics/variants")
    run:
        with DISCLOSURE.step_log(log[0]):
            genomics_steps.write_dosages(input.store, input.linkage,
                                         STUDY.features.genomics.variants, output[0])
