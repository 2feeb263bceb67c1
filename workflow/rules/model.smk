# The model sweep: one job per configuration (id = hash of its parameters), then the
# leaderboard and the best configuration per outcome, chosen by cross-validation alone.
from cohortflow import models

CONFIGS = models.configurations(STUDY)  # id -> configuration; the sweep's parameter space
SWEEP = RESULTS / "sweep"

wildcard_constraints:
    config=r"[0-9a-f]{12}",


def get_sweep_files(name):
    """One file (metrics.json, predictions.parquet) of every configuration."""
    return lambda wildcards: [SWEEP / c / name for c in CONFIGS]


rule sweep_config:
    input:
        store=STORE,
        cohort=expand(COHORT / "shards" / "{shard}.parquet", shard=SHARDS),
        features=FEATURES_DIR,
    output:
        params=SWEEP / "{config}" / "params.json",
        metrics=SWEEP / "{config}" / "metrics.json",
        predictions=SWEEP / "{config}" / "predictions.parquet",
    params:
        # Only what this configuration depends on: adding one to the sweep reruns no other.
        digest=lambda wildcards: models.rerun_digest(STUDY, CONFIGS[wildcards.config]),
    # On SLURM, `group-components: [sweep=N]` (profiles/slurm) packs N configurations into
    # one submission; the laptop runs them as ordinary jobs.
    group:
        "sweep"
    threads: 1
    resources:
        # Minutes per configuration (sbatch -t of a batch sums its serial layers); a batch
        # that hit its time limit comes back with more on the profile's retry.
        runtime=lambda wildcards, attempt: 15 * attempt,
    log:
        RESULTS / "logs" / "sweep" / "{config}.log",
    benchmark:
        BENCHMARKS / "sweep" / "{config}.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.train_configuration(STUDY, CONFIGS[wildcards.config], input.store, COHORT,
                                      FEATURES, Path(output.metrics).parent, threads)


rule model:
    input:
        metrics=get_sweep_files("metrics.json"),
        predictions=get_sweep_files("predictions.parquet"),
    output:
        leaderboard=report(SWEEP / "leaderboard.parquet", caption="../report/leaderboard.rst",
                           category="Sweep"),
        metrics=RESULTS / "model" / "metrics.json",
        predictions=RESULTS / "model" / "predictions.parquet",
    params:
        configs=sorted(CONFIGS),
        select_by=STUDY.model.select_by,
    log:
        RESULTS / "logs" / "model.log",
    benchmark:
        BENCHMARKS / "model.tsv"
    run:
        with steps.logging_to(log[0]):
            steps.select_models(STUDY, input.metrics, output.leaderboard, output.metrics,
                                output.predictions)
