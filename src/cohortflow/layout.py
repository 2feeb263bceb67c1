"""Where a study's files live: the one place that spells out the results tree.

``results/<study>/`` holds::

    omop/                      synthetic OMOP CDM (synth source only)
    events/                    sharded event store (person-level)
    genomics/                  genotypes (person-level; a study with genomics: only):
        genotypes.vcz          the VCF Zarr store converted from genomics.vcf
        genotypes.json         which store the later steps read, its samples and variants
        steps/                 the conversion's per-partition job records
        linkage.parquet        sample_id → subject_id of the store's samples
        phenotypes.parquet     subject_id, gene, diplotype, phenotype (pharmacogenes)
        variants.parquet       subject_id, variant, dosage (features.genomics.variants)
    cohorts/<cohort>/shards/<shard>.parquet, .attrition.json
                               one cohort's episodes per shard (person-level); every cohort
                               of the library an analysis uses, targets and outcomes alike
    cohorts/<cohort>/attrition.json   its attrition, summed over shards (exact counts)
    features/<target>/features.zarr   one feature tensor per target cohort (person-level)
    analyses/<analysis>/       one (target, outcome, time at risk):
        labels.parquet         the labels, one row per kept target episode (person-level)
        attrition.json         the target's attrition and the label exclusions (exact)
        matched.parquet        a matched analysis's cases and controls, with match_set
        matching.json          its matching counts and balance table (exact)
        model/                 metrics.json, predictions.parquet of the chosen model
        leaderboard.parquet    every configuration's scores                (shared)
    sweep/<config>/            params.json, metrics.json, predictions.parquet per configuration
    data_quality.json          the ingest's warnings, counts suppressed    (shared)
    report.html, figures/      the report and its figures, per analysis    (shared)
    export/<analysis>/         pseudonymous predictions, suppressed attrition (shared)
    manifest.json              the run manifest                            (shared)
    logs/, benchmarks/         step logs and timings                       (shared)

The Snakemake rules, the steps and the runner take every path from a :class:`Layout`;
:data:`SHARED` names the files meant to leave the compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SHARED = ("report.html", "data_quality.json", "figures/**/*.png", "export/**/*",
          "analyses/*/leaderboard.parquet", "manifest.json", "logs/**/*.log",
          "benchmarks/**/*.tsv")
"""The files under ``results/<study>/`` meant to leave the compute (globs relative to the
study's root): no raw subject id, no date of birth, no count below the study's
``min_cell_count``.  Everything else holds person-level data and stays inside."""


def shard_table(cohort_dir: str | Path, shard: str) -> Path:
    """One shard's table in a cohort folder (the folder's contract, read by the features and
    the models as well as written by the cohort step)."""
    return Path(cohort_dir) / "shards" / f"{shard}.parquet"


def shard_attrition(cohort_dir: str | Path, shard: str) -> Path:
    """One shard's attrition counts in a cohort folder."""
    return Path(cohort_dir) / "shards" / f"{shard}.attrition.json"


CONFIG_FILES = {"params": "params.json", "metrics": "metrics.json",
                "predictions": "predictions.parquet"}
"""What each sweep configuration's folder holds (metrics last written: it marks the folder
complete)."""


def config_file(sweep_dir: str | Path, config: str, kind: str) -> Path:
    """A file of one configuration in a sweep folder: ``kind`` is one of
    :data:`CONFIG_FILES` (params, metrics, predictions).

    >>> config_file("sweep", "0123456789ab", "metrics").as_posix()
    'sweep/0123456789ab/metrics.json'
    """
    return Path(sweep_dir) / config / CONFIG_FILES[kind]


@dataclass(frozen=True)
class Layout:
    """The results tree of one study, rooted at ``results/<study>``.

    Methods that take a name (shard, configuration, step) also accept a Snakemake wildcard
    such as ``"{shard}"``, so the rules and the code share one spelling of each path.

    >>> lay = Layout.of("results", "demo")
    >>> lay.cohort_table("{cohort}", "{shard}").as_posix()
    'results/demo/cohorts/{cohort}/shards/{shard}.parquet'
    >>> lay.tensor("asthma").relative_to(lay.root).as_posix()
    'features/asthma/features.zarr'
    """

    root: Path

    @classmethod
    def of(cls, results: str | Path, study_name: str) -> Layout:
        """The layout of study ``study_name`` under the results folder ``results``."""
        return cls(Path(results) / study_name)

    # -- person-level: stays on the compute ------------------------------------------------
    @property
    def omop(self) -> Path:
        """The synthetic OMOP CDM of a ``source.synth`` study."""
        return self.root / "omop"

    @property
    def store(self) -> Path:
        """The sharded event store."""
        return self.root / "events"

    @property
    def genomics(self) -> Path:
        """The study's genotype files (``genomics:``): all person-level."""
        return self.root / "genomics"

    @property
    def genotypes(self) -> Path:
        """The VCF Zarr store converted from ``genomics.vcf``."""
        return self.genomics / "genotypes.vcz"

    @property
    def genotypes_record(self) -> Path:
        """The store the genotype steps read (converted, or ``genomics.zarr``), with its
        sample and variant counts: written once the store is complete."""
        return self.genomics / "genotypes.json"

    def genomics_step(self, name: str) -> Path:
        """A conversion job's record (``explode/{part}.json``): the jobs' outputs, since the
        store is one folder they all write into."""
        return self.genomics / "steps" / name

    @property
    def linkage(self) -> Path:
        """The store's samples with their persons (``sample_id``, ``subject_id``)."""
        return self.genomics / "linkage.parquet"

    @property
    def phenotypes(self) -> Path:
        """Every linked person's diplotype and phenotype at each seeded pharmacogene."""
        return self.genomics / "phenotypes.parquet"

    @property
    def variants(self) -> Path:
        """Every linked person's dosage of each variant of ``features.genomics``."""
        return self.genomics / "variants.parquet"

    def cohort(self, name: str) -> Path:
        """A cohort's folder: its per-shard tables and its merged attrition."""
        return self.root / "cohorts" / name

    def cohort_table(self, name: str, shard: str) -> Path:
        """One shard's table of a cohort's episodes."""
        return shard_table(self.cohort(name), shard)

    def cohort_shard_attrition(self, name: str, shard: str) -> Path:
        """One shard's attrition counts of a cohort."""
        return shard_attrition(self.cohort(name), shard)

    def cohort_attrition(self, name: str) -> Path:
        """A cohort's attrition, summed over shards (exact counts)."""
        return self.cohort(name) / "attrition.json"

    def features(self, target: str) -> Path:
        """A target's features folder, around its tensor, so that Snakemake's
        ``.snakemake_timestamp`` lands beside the Zarr store, never inside it."""
        return self.root / "features" / target

    def tensor(self, target: str) -> Path:
        """A target cohort's feature tensor (Zarr)."""
        return self.features(target) / "features.zarr"

    def scratch(self, target: str) -> Path:
        """Dask's scheduler files while a features step runs (inside its output folder,
        so that Snakemake removes them with a failed step's output)."""
        return self.features(target) / ".dask"

    def analysis(self, analysis: str) -> Path:
        """One analysis's folder (``<target>__<outcome>__<time at risk>``)."""
        return self.root / "analyses" / analysis

    def labels(self, analysis: str) -> Path:
        """An analysis's labels: one row per kept target episode, with its tensor row."""
        return self.analysis(analysis) / "labels.parquet"

    def attrition(self, analysis: str) -> Path:
        """An analysis's attrition: the target cohort's steps, then the label exclusions."""
        return self.analysis(analysis) / "attrition.json"

    def matched(self, analysis: str) -> Path:
        """A matched analysis's rows: its cases and their matched controls (the labels'
        columns and ``match_set``); what its sweep, models and report read."""
        return self.analysis(analysis) / "matched.parquet"

    def matching(self, analysis: str) -> Path:
        """A matched analysis's matching record: settings, counts and balance (exact)."""
        return self.analysis(analysis) / "matching.json"

    def model_rows(self, analysis: str, matched: bool) -> Path:
        """The rows an analysis's sweep, models, package and report read: its matched set
        when it is ``matched`` (``matching:``), else its labels."""
        return self.matched(analysis) if matched else self.labels(analysis)

    @property
    def sweep(self) -> Path:
        """The model sweep: one folder per configuration (of every analysis)."""
        return self.root / "sweep"

    def config_file(self, config: str, kind: str) -> Path:
        """A file of one configuration: ``kind`` is params, metrics or predictions."""
        return config_file(self.sweep, config, kind)

    def model(self, analysis: str) -> Path:
        """An analysis's chosen model: metrics.json, predictions.parquet."""
        return self.analysis(analysis) / "model"

    def model_metrics(self, analysis: str) -> Path:
        return self.model(analysis) / "metrics.json"

    def model_predictions(self, analysis: str) -> Path:
        return self.model(analysis) / "predictions.parquet"

    # -- shared: may leave the compute (SHARED) ----------------------------------------------
    def leaderboard(self, analysis: str) -> Path:
        """Every configuration of an analysis, scored."""
        return self.analysis(analysis) / "leaderboard.parquet"

    @property
    def data_quality(self) -> Path:
        return self.root / "data_quality.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def figure(self, analysis: str, name: str) -> Path:
        """A figure of an analysis's section of the report (``roc``, ``calibration``)."""
        return self.root / "figures" / analysis / f"{name}.png"

    @property
    def export(self) -> Path:
        """Pseudonymous predictions and suppressed attrition, per analysis."""
        return self.root / "export"

    def export_predictions(self, analysis: str) -> Path:
        return self.export / analysis / "predictions.parquet"

    def export_attrition(self, analysis: str) -> Path:
        return self.export / analysis / "attrition.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, step: str) -> Path:
        """A step's log (``step`` may hold a folder: ``sweep/{config}``)."""
        return self.logs / f"{step}.log"

    @property
    def snakemake_log(self) -> Path:
        """The full Snakemake log of the last ``cohortflow run``."""
        return self.log("snakemake")

    @property
    def benchmarks(self) -> Path:
        return self.root / "benchmarks"

    def benchmark(self, step: str) -> Path:
        """A step's timing file (``step`` may hold a folder: ``sweep/{config}``)."""
        return self.benchmarks / f"{step}.tsv"
