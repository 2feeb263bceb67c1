# cohortflow score: a model package scores an extract as of a date.
#
#   cohortflow score model-pkg --source cdm/ --as-of 2024-03-01 --out scores/ [--profile slurm]
#
# is this workflow with checked inputs and their digests in --config (package, package_digest,
# source, source_kind, source_digest, as_of, entered_within, out, shards).  The steps are
# functions of cohortflow.scoring; each rule's params are its rerun key (package digest,
# source digest, as-of date, entered_within), so scoring the same extract as of the same date
# again reruns nothing.
#
# Monitoring (docs/monitoring.md): `monitor` compares each run of the package with its
# training profile (<run>/monitor.json); `prospective` labels, from this run's extract, the
# persons of every earlier run whose time at risk has passed by this as-of date
# (<earlier>/prospective/<this as-of>.json); `monitor_page` draws <out>/<pkg>/monitor.html
# over every run.
from datetime import date
from pathlib import Path

from snakemake.utils import min_version

from cohortflow import private
from cohortflow.lazy import LazyModule

min_version("9.0")

scoring = LazyModule("cohortflow.scoring")
run_module = LazyModule("cohortflow.scoring._run")
monitor_module = LazyModule("cohortflow.scoring._monitor")

OUT = Path(config["out"])
private.protect(OUT)  # owner-only files from here on, every job
PACKAGE = Path(config["package"])
AS_OF = date.fromisoformat(str(config["as_of"]))
ENTERED = str(config.get("entered_within", "all"))
KEY = {"package": config["package_digest"], "source": config["source_digest"],
       "as_of": AS_OF.isoformat(), "entered_within": ENTERED}
PKG_DIR = OUT / KEY["package"][:12]
RUN = PKG_DIR / KEY["as_of"]
OMOP = config["source_kind"] == "omop"
STORE = OUT / "stores" / KEY["source"][:12] if OMOP else Path(config["source"])


# the runs already finished (their summaries on disk), and those whose outcomes are known
DAYS = sorted({d.isoformat() for d in monitor_module.run_days(PKG_DIR)} | {KEY["as_of"]})
END_DAYS = monitor_module.Definitions.of(monitor_module.package.load(PACKAGE)).time_at_risk.end_days
EARLIER = [d.isoformat() for d in monitor_module.elapsed_runs(PKG_DIR, AS_OF, END_DAYS)]


wildcard_constraints:
    day="|".join(DAYS),
    earlier="|".join(EARLIER) if EARLIER else "(?!)",


localrules:
    all,
    monitor_page,


rule all:
    input:
        RUN / "summary.json",
        RUN / "monitor.json",
        PKG_DIR / "monitor.html",
        expand(PKG_DIR / "{earlier}" / "prospective" / f"{AS_OF.isoformat()}.json",
               earlier=EARLIER),


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
        scoring.write_eligible(PACKAGE, STORE, AS_OF, output.table, output.attrition,
                               None if ENTERED == "all" else int(ENTERED))


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


rule monitor:
    input:
        features=PKG_DIR / "{day}" / "features",
        index=PKG_DIR / "{day}" / "private" / "index.parquet",
        codes=PKG_DIR / "{day}" / "codes.json",
    output:
        PKG_DIR / "{day}" / "monitor.json",
    params:
        package=KEY["package"],
    run:
        monitor_module.write_monitor(PACKAGE, input.features, input.index, input.codes,
                                     output[0])


rule prospective:
    input:
        [STORE] if OMOP else [],
        index=PKG_DIR / "{earlier}" / "private" / "index.parquet",
    output:
        metrics=PKG_DIR / "{earlier}" / "prospective" / f"{AS_OF.isoformat()}.json",
        labels=PKG_DIR / "{earlier}" / "private" / "prospective" / f"{AS_OF.isoformat()}.parquet",
    params:
        package=KEY["package"],
        source=KEY["source"],
    run:
        monitor_module.write_prospective(PACKAGE, STORE, input.index, labelled_as_of=AS_OF,
                                         source_digest=KEY["source"], out=output.metrics,
                                         labels_out=output.labels)


rule monitor_page:
    input:
        expand(PKG_DIR / "{day}" / "monitor.json", day=DAYS),
        expand(PKG_DIR / "{earlier}" / "prospective" / f"{AS_OF.isoformat()}.json",
               earlier=EARLIER),
    output:
        PKG_DIR / "monitor.html",
    params:
        package=KEY["package"],
    run:
        monitor_module.write_page(PACKAGE, PKG_DIR, output[0])
