# cohortflow: cohort → features → model → report, for one study file.
#
#   snakemake --workflow-profile profiles/laptop                      # the demo study
#   snakemake --workflow-profile profiles/slurm --config study=my.yaml
#
# `cohortflow run [STUDY] [--profile NAME]` is the same thing with a validated study first.

from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/source.smk"
include: "workflow/rules/genomics.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/manifest.smk"


# Rules too small to be worth a cluster job: they read and write a few kilobytes.
localrules:
    all,
    manifest,
    data_quality,
    attrition,


if TAIL_ON_SUBMIT_HOST:  # a small study (workflow/rules/common.smk)

    localrules:
        model,
        export,
        report,


rule all:
    input:
        RESULTS / "report.html",
        RESULTS / "manifest.json",
