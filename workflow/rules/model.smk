# The model sweep: one job per configuration (id = hash of its parameters), then the
# leaderboard and the best configuration per outcome, chosen by cross-validation alone.
from cohortflow import models

CONFIGS = models.configurations(STUDY)  # id -> configuration; the sweep's parameter space
SWEEP = LAYOUT.sweep

wildcard_constraints:
    config=r"[0-9a-f]{12}",


def get_sweep_files(kind):
    """One file (kind: metrics, predictions) of every configuration."""
    return lambda wildcards: [LAYOUT.config_file(c, kind) for c in CONFIGS]


rule sweep_config:
    input:
        store=LAYOUT.store,
        cohort=expand(LAYOUT.cohort_table("{shard}"), shard=SHARDS),
        features=LAYOUT.features,
    output:
        params=LAYOUT.config_file("{config}", "params"),
        metrics=LAYOUT.config_file("{config}", "metrics"),
        predictions=LAYOUT.config_file("{config}", "predictions"),
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
        LAYOUT.log("sweep/{config}"),
    benchmark:
        LAYOUT.benchmark("sweep/{config}")
    run:
        with DISCLOSURE.step_log(log[0]):
            models.train_configuration(STUDY, CONFIGS[wildcards.config], input.store,
                                       LAYOUT.cohort, LAYOUT.tensor,
                                       params_out=output.params, metrics_out=output.metrics,
                                       predictions_out=output.predictions, threads=threads)


rule model:
    input:
        metrics=get_sweep_files("metrics"),
        predictions=get_sweep_files("predictions"),
    output:
        leaderboard=report(LAYOUT.leaderboard, caption="../report/leaderboard.rst",
                           category="Sweep"),
        metrics=LAYOUT.model_metrics,
        predictions=LAYOUT.model_predictions,
    params:
        configs=sorted(CONFIGS),
        select_by=STUDY.model.select_by,
    log:
        LAYOUT.log("model"),
    benchmark:
        LAYOUT.benchmark("model")
    run:
        with DISCLOSURE.step_log(log[0]):
            models.select_models(STUDY, DISCLOSURE, input.metrics, input.predictions,
                                 output.metrics, output.predictions)
