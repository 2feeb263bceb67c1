# The model sweep: one job per configuration (id = hash of its parameters and its analysis),
# then per analysis the leaderboard and the best configuration, chosen by cross-validation
# alone.
from cohortflow import models

CONFIGS = models.configurations(STUDY)  # id -> configuration; every analysis's sweep
CONFIGS_OF = {a: [] for a in ANALYSES}  # analysis -> its configurations, in sweep order
for _config in CONFIGS.values():
    CONFIGS_OF[_config.analysis].append(_config.id)
SWEEP = LAYOUT.sweep

wildcard_constraints:
    config=r"[0-9a-f]{12}",


def get_config_input(wildcards):
    """A configuration's rows (its analysis's labels) and features (its target's tensor);
    one function for both, as Snakemake's cost per job grows with the functions it calls.
    A matched analysis's rows are its matched set (rule match)."""
    config = CONFIGS[wildcards.config]
    return {"labels": analysis_rows(config.analysis),
            "features": LAYOUT.features(config.cohort)}


def get_sweep_files(wildcards):
    """The metrics and the predictions of every configuration of an analysis."""
    configs = CONFIGS_OF[wildcards.analysis]
    return {kind: [LAYOUT.config_file(c, kind) for c in configs]
            for kind in ("metrics", "predictions")}


rule sweep_config:
    input:
        unpack(get_config_input),
        store=LAYOUT.store,
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
        config = CONFIGS[wildcards.config]
        with DISCLOSURE.step_log(log[0]):
            models.train_configuration(STUDY, config, input.store, input.labels,
                                       LAYOUT.tensor(config.cohort),
                                       params_out=output.params, metrics_out=output.metrics,
                                       predictions_out=output.predictions, threads=threads)


rule model:
    input:
        unpack(get_sweep_files),
    output:
        leaderboard=report(LAYOUT.leaderboard("{analysis}"),
                           caption="../report/leaderboard.rst", category="Sweep",
                           subcategory="{analysis}"),
        metrics=LAYOUT.model_metrics("{analysis}"),
        predictions=LAYOUT.model_predictions("{analysis}"),
    params:
        configs=lambda wildcards: sorted(CONFIGS_OF[wildcards.analysis]),
        digest=STUDY.selection_digest(),
    # With export (report.smk): one submission per batch of analyses on SLURM, unless the
    # study is small enough to run it on the submit host (a local rule is never grouped).
    group:
        None if TAIL_ON_SUBMIT_HOST else "analysis"
    log:
        LAYOUT.log("model/{analysis}"),
    benchmark:
        LAYOUT.benchmark("model/{analysis}")
    run:
        with DISCLOSURE.step_log(log[0]):
            models.select_models(STUDY, DISCLOSURE, input.metrics, input.predictions,
                                 output.leaderboard, output.metrics, output.predictions)
