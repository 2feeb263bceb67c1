"""The ``cohortflow`` command: parse arguments, call one package function, report errors.

Errors a user can fix (:class:`~cohortflow.errors.CohortflowError`) print one message and
exit with status 2; they never show a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from cohortflow import __version__
from cohortflow.errors import CohortflowError

app = typer.Typer(
    help="Cohort studies on OMOP CDM data, on a laptop or a SLURM cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Nothing printed is read as console markup: paths, rule, cohort and code names may hold
# brackets (``study[2024].yaml``), which rich would take for styles and drop.  Styled words
# are :class:`Text` with a style.
err = Console(stderr=True, markup=False, highlight=False)
out = Console(markup=False, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


def _print_error(message: str) -> None:
    """``error: <message>`` on stderr, the message verbatim: it is a :class:`Text`, never
    read as console markup, so paths, JSON keys or fixes in brackets (``[fix: a]``,
    ``[red]``, ``[/]``) print as written instead of being taken for styles and dropped."""
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False,
              soft_wrap=True)


def _friendly(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return fn(*args, **kwargs)
        except CohortflowError as exc:
            _print_error(str(exc))
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _file_path(path: Path, what: str, must_exist: bool) -> Path:
    """Refuse, before any work, a path that must be a file but is a directory (or, for an
    input, is missing)."""
    if path.is_dir():
        raise CohortflowError(f"{path}: is a directory; fix: give the path of {what}")
    if must_exist and not path.is_file():
        raise CohortflowError(f"{path}: not found; fix: give the path of {what}")
    return path


@app.command()
@_friendly
def synth(
    persons: Annotated[int, typer.Option(help="Number of persons.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed; same seed, same bytes.")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory of Parquet tables.")] = Path("omop"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    preset: Annotated[str, typer.Option(
        help="demo (67 codes, small and fast) or warehouse (20,000+ codes in a deep "
             "hierarchy, Zipf-like frequencies, heavy-tailed events per person).")] = "demo",
    rare_disease_per_million: Annotated[float, typer.Option(
        help="Plant a rare disease (concept 2000000020) in about this many persons per "
             "million, more often in boys and young children; 0: none.")] = 0.0,
    drift: Annotated[str | None, typer.Option(
        help="Plant changes after a date (demo preset), as YAML, e.g. '{after: 2021-01-01, "
             "outcome_rate_factor: 1.5}'; see the docs for every part.")] = None,
    genotypes: Annotated[str | None, typer.Option(
        help="Write genotypes/cohort.vcf.gz and plant a CYP2C19 x escitalopram interaction "
             "(demo preset), as YAML, e.g. '{share: 0.3, background_variants: 2000}'.")] = None,
) -> None:
    """Generate a synthetic pediatric OMOP CDM v5.4 with a planted outcome risk."""
    import yaml

    from cohortflow import synth as synth_module

    planted = None if drift is None else yaml.safe_load(drift)
    if planted is not None and not isinstance(planted, dict):
        raise CohortflowError(f"--drift {drift!r}: not a mapping; "
                              "fix: --drift '{after: 2021-01-01, outcome_rate_factor: 1.5}'")
    typed = None if genotypes is None else yaml.safe_load(genotypes)
    if typed is not None and not isinstance(typed, dict):
        raise CohortflowError(f"--genotypes {genotypes!r}: not a mapping; "
                              "fix: --genotypes '{share: 0.3, background_variants: 2000}'")
    summary = synth_module.generate(persons, seed, out, progress=progress, preset=preset,
                                    rare_disease_per_million=rare_disease_per_million,
                                    drift=planted, genotypes=typed)
    err.print(f"wrote {summary.total_rows:,} rows for {summary.persons:,} persons to {out}; "
              f"oracle AUROC {summary.oracle_auroc:.3f}")


@app.command()
@_friendly
def ingest(
    source: Annotated[str, typer.Argument(
        help="DuckDB file, directory of Parquet/CSV, or postgresql://user@host/db URL "
             "(password from PGPASSWORD or ~/.pgpass).")],
    out: Annotated[Path, typer.Option(help="Event-store directory (MEDS layout).")] = Path(
        "events"),
    shards: Annotated[int, typer.Option(min=1, help="Number of subject shards.")] = 4,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="duckdb, parquet, csv or postgresql.")] = None,
    schema: Annotated[str | None, typer.Option(help="Database schema of the CDM.")] = None,
) -> None:
    """Ingest an OMOP CDM into a sharded MEDS event store."""
    from cohortflow import omop
    from cohortflow.privacy import DEFAULT_MIN_CELL_COUNT, suppress

    location = source if omop.is_postgres_url(source) else Path(source)
    summary = omop.ingest(omop.open_source(location, fmt, schema), out, shards)
    n_events, n_subjects = (suppress(summary[k], DEFAULT_MIN_CELL_COUNT)
                            for k in ("events", "subjects"))
    err.print(f"wrote {n_events} events of {n_subjects} subjects into {shards} shards at {out}")


@app.command()
@_friendly
def validate(study: Annotated[Path, typer.Argument(help="Study YAML file.")]) -> None:
    """Check a study file; print what is wrong, with the fix."""
    from cohortflow.study import load_study

    parsed = load_study(study)
    err.print(f"{study}: valid study '{parsed.name}' (digest {parsed.digest()})")


@app.command()
@_friendly
def schema(
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Print (or write) the JSON Schema of the study file."""
    from cohortflow.study import json_schema

    if out is not None:
        _file_path(out, "the JSON Schema file to write, e.g. study.schema.json", False)
    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


@app.command("import-circe")
@_friendly
def import_circe(
    circe_json: Annotated[Path, typer.Argument(help="OHDSI Circe / ATLAS cohort JSON.")],
    out: Annotated[Path | None, typer.Option(help="Write the study YAML here.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Outcome concept set name.")] = None,
) -> None:
    """Turn an ATLAS cohort definition into a study file (unsupported parts are refused)."""
    import yaml

    from cohortflow.circe import import_circe as convert

    _file_path(circe_json, "an ATLAS / Circe cohort JSON file", True)
    if out is not None:
        _file_path(out, "the study YAML file to write, e.g. my_study.yaml", False)
    _, raw = convert(circe_json, outcome)
    text = yaml.safe_dump(raw, sort_keys=False)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        err.print(f"wrote {out}; check source and cohort.outcome before running it")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_friendly
def run(
    ctx: typer.Context,
    study: Annotated[Path | None, typer.Argument(help="Study YAML; default: the demo.")] = None,
    profile: Annotated[str, typer.Option(help="Profile in profiles/: laptop, slurm.")] = "laptop",
    results: Annotated[Path, typer.Option(help="Results root; the study writes "
                                                "<results>/<name>/.")] = Path("results"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Snakemake's whole "
                                          "output, not one line per step.")] = False,
) -> None:
    """Run a study end to end with Snakemake.  Extra arguments go to Snakemake.

    The console shows one line per step and a summary; Snakemake's whole output is in
    <results>/<name>/logs/snakemake.log.
    """
    from cohortflow.privacy import pseudonym_key
    from cohortflow.runner import run_workflow

    pseudonym_key()  # the export needs it: say so now, not after the whole study has run
    code = run_workflow(study, profile, results, list(ctx.args), verbose=verbose)
    raise typer.Exit(code)


VERIFY_ROWS = 30
"""Outputs ``cohortflow verify`` lists one by one; past it, only those not identical."""


@app.command("verify")
@_friendly
def verify_command(
    manifest_file: Annotated[Path, typer.Argument(metavar="MANIFEST",
                                                  help="manifest.json of an earlier run.")],
    profile: Annotated[str | None, typer.Option(help="Profile of the rerun; default: the "
                                                     "manifest's.")] = None,
    scratch: Annotated[Path | None, typer.Option(help="Rerun here (kept); default: a new "
                                                      "temporary directory, removed after "
                                                      "the comparison.")] = None,
    keep_scratch: Annotated[bool, typer.Option(help="Keep the temporary rerun directory "
                                                    "for inspection.")] = False,
) -> None:
    """Rerun a run's study and report, output by output, identical or different, and why.

    First, the run's shared files are audited against the disclosure gate's ledger: one
    written or changed by anything else fails the verification."""
    from rich.table import Table

    from cohortflow.disclosure import LEDGER, audit
    from cohortflow.layout import Layout
    from cohortflow.privacy import pseudonym_key
    from cohortflow.runner import verify

    pseudonym_key()
    recorded = Layout(manifest_file.resolve().parent)
    if (recorded.root / LEDGER).is_dir():  # the results tree the manifest sits in
        leaks = audit(recorded)
        if leaks:
            out.print(Text.assemble(("not verified.", "red"), " Shared files that did not come "
                                    "through the disclosure gate (written or changed some "
                                    "other way):"))
            for leak in leaks:
                out.print(f"  - {leak}")
            raise typer.Exit(1)
    findings, causes, rerun = verify(manifest_file, profile, scratch, keep_scratch)
    table = Table("output", "verdict")
    # A study of many analyses has an output per cohort, tensor and analysis: past
    # VERIFY_ROWS the identical ones are counted in one row, the others each listed.
    shown = [f for f in findings if len(findings) <= VERIFY_ROWS or f.verdict != "identical"]
    for finding in shown:
        colour = "green" if finding.verdict == "identical" else "red"
        table.add_row(Text(finding.output), Text(finding.verdict, style=colour))
    if len(shown) < len(findings):
        table.add_row(Text(f"({len(findings) - len(shown)} more outputs)"),
                      Text("identical", style="green"))
    out.print(table)
    if rerun is not None:
        out.print(f"rerun manifest: {rerun}")
    if all(f.verdict == "identical" for f in findings):
        out.print(Text.assemble(("verified:", "green"), " every output is identical"))
        if causes:  # a package or the lock changed, for example, yet gave the same outputs
            out.print("Though these changed since the recorded run:")
            for cause in causes:
                out.print(f"  - {cause}")
        return
    out.print(Text.assemble(("not verified.", "red"), " What changed since the recorded run:"))
    for cause in causes or ["nothing recorded changed: the difference is not explained by the "
                            "inputs, the study, the code or the packages"]:
        out.print(f"  - {cause}")
    raise typer.Exit(1)


@app.command("package")
@_friendly
def package_command(
    results: Annotated[Path, typer.Argument(help="A finished study's results: "
                                                 "results/<study>.")],
    out: Annotated[Path, typer.Option(help="The new package folder.")] = Path("model-pkg"),
    study: Annotated[Path | None, typer.Option(help="The study file it ran with; default: "
                                                    "the one its manifest names.")] = None,
    analysis: Annotated[str | None, typer.Option(help="The analysis whose chosen model to "
                                                      "package; default: the study's only "
                                                      "one.")] = None,
) -> None:
    """Package an analysis's chosen model (safe arrays, definitions, columns, calibration,
    checksums) into a self-contained folder for scoring."""
    from cohortflow.package import write

    digest = write(results, out, study, analysis=analysis)
    err.print(f"wrote the model package {out} (digest {digest})")


@app.command("score")
@_friendly
def score_command(
    package: Annotated[Path, typer.Argument(help="A model package (`cohortflow package`).")],
    source: Annotated[Path, typer.Option(help="The extract: an OMOP CDM (DuckDB file, "
                                              "Parquet or CSV folder) or an event store.")],
    as_of: Annotated[str, typer.Option(help="Score as of this day, YYYY-MM-DD: the persons "
                                            "the target cohort holds on it, features up to "
                                            "it.")],
    out: Annotated[Path, typer.Option(help="Scoring folder; the run goes to "
                                           "<out>/<package digest[:12]>/<as-of>/.")] = Path(
        "scores"),
    profile: Annotated[str, typer.Option(help="Profile in profiles/.")] = "laptop",
    shards: Annotated[int, typer.Option(min=1, help="Event-store shards of an OMOP "
                                                    "extract's ingest.")] = 4,
    entered_within: Annotated[int | None, typer.Option(
        help="Score only episodes that entered the target cohort in the last DAYS days up "
             "to --as-of (new entrants); default: every open episode.")] = None,
) -> None:
    """Score an extract as of a date with a model package (docs/scoring.md)."""
    from cohortflow.scoring import run_scoring

    code, run, log = run_scoring(package, source, as_of, out, profile, shards=shards,
                                 entered_within=entered_within)
    if code != 0:
        err.print(f"scoring failed (Snakemake exit {code}); its whole output: {log}")
        raise typer.Exit(code)
    err.print(f"scored as of {run.as_of.isoformat()}: {run.folder} (Snakemake's output: {log})")


@app.command("scores")
@_friendly
def scores_command(
    folder: Annotated[Path, typer.Argument(help="The --out folder of `cohortflow score`.")
                      ] = Path("scores"),
) -> None:
    """List the scoring history: as-of date, package, persons scored, mean score, state,
    monitoring flags."""
    from rich.table import Table

    from cohortflow.scoring import history

    table = Table("as of", "package", "persons scored", "mean score", "state", "flags")
    for row in history(folder):
        table.add_row(row.as_of, row.package, row.persons, row.mean_score, row.state,
                      row.flags)
    out.print(table)


@app.command("export-mart")
@_friendly
def export_mart_command(
    study: Annotated[Path, typer.Argument(help="Study YAML file (its mart: section is the "
                                               "de-identification policy).")],
    cohort: Annotated[str, typer.Option(help="The built cohort whose persons to export.")],
    out: Annotated[Path, typer.Option(help="The new mart folder (or a previous mart, "
                                           "replaced).")] = Path("mart"),
    results: Annotated[Path, typer.Option(help="Results root the study ran into.")] = Path(
        "results"),
) -> None:
    """Export a cohort's de-identified OMOP CDM subset (Parquet and DuckDB) with its
    de-identification record; the pseudonym key comes from $COHORTFLOW_PSEUDONYM_KEY."""
    from cohortflow.mart import export_mart
    from cohortflow.study import load_study

    _file_path(study, "the study's YAML file", True)
    record = export_mart(load_study(study), cohort, out, results=results, origin=str(study))
    err.print(f"wrote the mart of cohort '{cohort}' ({record['persons']} persons, k = "
              f"{record['k']}) to {out}")


@app.command("status")
@_friendly
def status_command(
    study: Annotated[Path | None, typer.Argument(help="Study YAML; default: the demo.")] = None,
    profile: Annotated[str, typer.Option(help="Profile in profiles/.")] = "laptop",
    results: Annotated[Path, typer.Option(help="Results root of the study.")] = Path("results"),
) -> None:
    """Show which steps of a study are done, pending or out of date, and why."""
    from rich.table import Table

    from cohortflow.runner import status

    table = Table("step", "outputs", "state", "why")
    colour = {"done": "green", "pending": "yellow", "out of date": "red"}
    for step in status(study, profile, results):
        table.add_row(step.rule, str(step.outputs), Text(step.state, style=colour[step.state]),
                      step.why)
    out.print(table)


@app.command()
def version() -> None:
    """Print the cohortflow version."""
    typer.echo(__version__)
