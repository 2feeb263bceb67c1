"""Where a study's files live: the one place that spells out the results tree.

``results/<study>/`` holds::

    omop/                      synthetic OMOP CDM (synth source only)
    events/                    sharded event store (person-level)
    cohort/shards/<shard>.parquet, .attrition.json    cohort table per shard (person-level)
    cohort/attrition.json      attrition counts, exact
    features/features.zarr     the feature tensor (person-level)
    sweep/<config>/            params.json, metrics.json, predictions.parquet per configuration
    sweep/leaderboard.parquet  every configuration's scores                (shared)
    model/                     metrics.json, predictions.parquet of the chosen model
    data_quality.json          the ingest's warnings, counts suppressed    (shared)
    report.html, figures/      the report and its figures                  (shared)
    export/                    pseudonymous predictions, suppressed attrition (shared)
    manifest.json              the run manifest                            (shared)
    logs/, benchmarks/         step logs and timings                       (shared)

The Snakemake rules, the steps and the runner take every path from a :class:`Layout`;
:data:`SHARED` names the files meant to leave the compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SHARED = ("report.html", "data_quality.json", "figures/*", "export/*",
          "sweep/leaderboard.parquet", "manifest.json", "logs/**/*.log",
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
    >>> lay.cohort_table("{shard}").as_posix()
    'results/demo/cohort/shards/{shard}.parquet'
    >>> lay.tensor.relative_to(lay.root).as_posix()
    'features/features.zarr'
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
    def cohort(self) -> Path:
        """The cohort folder: per-shard tables and the merged attrition."""
        return self.root / "cohort"

    def cohort_table(self, shard: str) -> Path:
        """One shard's cohort table."""
        return shard_table(self.cohort, shard)

    def cohort_attrition(self, shard: str) -> Path:
        """One shard's attrition counts."""
        return shard_attrition(self.cohort, shard)

    @property
    def attrition(self) -> Path:
        """The cohort's attrition, summed over shards (exact counts)."""
        return self.cohort / "attrition.json"

    @property
    def features(self) -> Path:
        """The features rule's output: the folder around the tensor, so that Snakemake's
        ``.snakemake_timestamp`` lands beside the Zarr store, never inside it."""
        return self.root / "features"

    @property
    def tensor(self) -> Path:
        """The feature tensor (Zarr)."""
        return self.features / "features.zarr"

    @property
    def sweep(self) -> Path:
        """The model sweep: one folder per configuration, and the leaderboard."""
        return self.root / "sweep"

    def config_file(self, config: str, kind: str) -> Path:
        """A file of one configuration: ``kind`` is params, metrics or predictions."""
        return config_file(self.sweep, config, kind)

    @property
    def model(self) -> Path:
        """The chosen model's metrics.json and predictions.parquet."""
        return self.root / "model"

    @property
    def model_metrics(self) -> Path:
        return self.model / "metrics.json"

    @property
    def model_predictions(self) -> Path:
        return self.model / "predictions.parquet"

    # -- shared: may leave the compute (SHARED) ----------------------------------------------
    @property
    def leaderboard(self) -> Path:
        return self.sweep / "leaderboard.parquet"

    @property
    def data_quality(self) -> Path:
        return self.root / "data_quality.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def figure(self, name: str) -> Path:
        """A figure of the report as a PNG file (``roc``, ``calibration``)."""
        return self.root / "figures" / f"{name}.png"

    @property
    def export(self) -> Path:
        """Pseudonymous predictions and suppressed attrition."""
        return self.root / "export"

    @property
    def export_predictions(self) -> Path:
        return self.export / "predictions.parquet"

    @property
    def export_attrition(self) -> Path:
        return self.export / "attrition.json"

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

    @property
    def scratch(self) -> Path:
        """Dask's scheduler files while the features step runs (inside its output folder,
        so that Snakemake removes them with a failed step's output)."""
        return self.features / ".dask"
