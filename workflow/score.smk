# cohortflow score: a model package scores an extract as of a date.
#
#   cohortflow score model-pkg --source cdm/ --as-of 2024-03-01 --out scores/ [--profile slurm]
#
# is this workflow with checked inputs and their digests in --config (package, package_digest,
# source, source_kind, source_digest, as_of, out, shards).  The steps are functions of
# cohortflow.scoring; each rule's params are its rerun key (package digest, source digest,
# as-of date), so scoring the same extract as of the same date again reruns nothing.
from datetime import date
from pathlib import Path

from snakemake.utils import min_version

from cohortflow import private
from cohortflow.lazy import LazyModule

min_version("9.0")

scoring = LazyModule("cohortflow.scoring")
run_module = LazyModule("cohortflow.scoring._run")

OUT = Path(config["out"])
private.protect(OUT)  # owner-only files from here on, every job
PACKAGE = Path(config["package"])
AS_OF = date.fromisoformat(str(config["as_of"]))
KEY = {"package": config["package_digest"], "source": config["source_digest"],
       "as_of": AS_OF.isoformat()}
RUN = OUT / KEY["package"][:12] / KEY["as_of"]
OMOP = config["source_kind"] == "omop"
STORE = OUT / "stores" / KEY["source"][:12] if OMOP else Path(config["source"])


localrules:
    all,


rule all:
    input:
        RUN / "summary.json",


if OMOP:

    rule ingest:
        output:
            directory(STORE),
        params:
            source=KEY["source"],
        resources:
            mem_mb=lambda wildcards, attempt: 4000 * attempt,
        run:
            run_module.ingest_extract(config, output[0])


rule eligible:
    input:
        [STORE] if OMOP else [],
    output:
        table=RUN / "private" / "eligible.parquet",
        attrition=RUN / "private" / "attrition.json",
    params:
        key=KEY,
    run:
        scoring.write_eligible(PACKAGE, STORE, AS_OF, output.table, output.attrition)


rule score_features:
    input:
        eligible=RUN / "private" / "eligible.parquet",
    output:
        features=directory(RUN / "features"),
        codes=RUN / "codes.json",
    params:
        key=KEY,
    run:
        scoring.write_features(PACKAGE, STORE, input.eligible, output.features, output.codes)


rule score:
    input:
        features=RUN / "features",
        eligible=RUN / "private" / "eligible.parquet",
        attrition=RUN / "private" / "attrition.json",
        codes=RUN / "codes.json",
    output:
        scores=RUN / "scores.parquet",
        index=RUN / "private" / "index.parquet",
        summary=RUN / "summary.json",
    params:
        key=KEY,
    run:
        scoring.write_scores(PACKAGE, input.features, input.eligible, input.attrition,
                             input.codes, as_of=AS_OF, source_digest=KEY["source"],
                             scores_out=output.scores, index_out=output.index,
                             summary_out=output.summary)
