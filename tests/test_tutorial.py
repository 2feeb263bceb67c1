"""docs/tutorial.md as written: every block it shows is written, run or parsed, so it cannot drift.

The guide's fenced blocks are read in order.  A block right after ``<!-- file: PATH -->`` is
written to PATH (``<!-- append: PATH -->`` adds it to the end); a ``bash`` block is a list of
commands run in one working directory, one block after another, with what a block exports
kept for the next; a ``bash`` block after ``<!-- test: parse ... -->`` (the setup, and the real
SLURM runs, which need a cluster) is checked instead: each ``cohortflow`` line is parsed by
the CLI's own parser and names a real profile, each ``bash``/``source`` line names a file of
the checkout.  Any other block fails the test, so nothing in the guide goes unchecked.

The fast tests parse the guide and load the study it writes; the walk-through runs the
whole guide (a small study, its rerun after an edit, and its verification) and is ``e2e``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from cohortflow import models
from cohortflow.cli import app
from cohortflow.study import load_study
from tests.helpers import REPO

TUTORIAL = REPO / "docs" / "tutorial.md"
STUDY_NAME = "asthma_tutorial"
_MARK = re.compile(r"^<!--\s*(file|append|test):\s*(.*?)\s*-->$")
_FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of the guide: its language, its text, the marker comment on the line
    just above it (``(kind, value)``, or None) and the line it starts on."""

    lang: str
    text: str
    mark: tuple[str, str] | None
    line: int

    @property
    def action(self) -> str:
        """``write``, ``append``, ``run`` or ``parse``; ``unchecked`` for anything else."""
        kind = self.mark[0] if self.mark else None
        if kind == "file":
            return "write"
        if kind == "append":
            return "append"
        if self.lang == "bash" and kind is None:
            return "run"
        if self.lang == "bash" and kind == "test" and self.mark[1].startswith("parse"):
            return "parse"
        return "unchecked"

    def commands(self) -> list[str]:
        return [c for c in (raw.strip() for raw in self.text.splitlines())
                if c and not c.startswith("#")]


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order.

    >>> [(b.lang, b.text, b.mark) for b in blocks("<!-- file: a.yaml -->\\n```yaml\\nx: 1\\n```")]
    [('yaml', 'x: 1\\n', ('file', 'a.yaml'))]
    """
    lines = markdown.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        above = _MARK.match(lines[start - 1].strip()) if start else None
        found.append(Block(fence.group(1), "\n".join(body) + "\n",
                           (above.group(1), above.group(2)) if above else None, start + 1))
        i += 1
    return found


def guide() -> list[Block]:
    return blocks(TUTORIAL.read_text(encoding="utf-8"))


def write_files(blocks_: list[Block], folder: Path) -> None:
    """Write (or append) a file block into ``folder``."""
    for block in blocks_:
        assert block.mark is not None
        path = folder / block.mark[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if block.action == "append" else "w"
        with path.open(mode, encoding="utf-8") as handle:
            handle.write(block.text)


def parse_cohortflow(words: list[str]) -> typer.Context:
    """Parse ``cohortflow WORDS`` with the CLI's own parser, which raises on a bad word."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    top = typer.Context(group, info_name="cohortflow")
    command = group.get_command(top, words[0])
    if command is None:
        pytest.fail(f"cohortflow has no command {words[0]!r} "
                    f"(it has {', '.join(group.list_commands(top))})")
    return command.make_context(words[0], list(words[1:]), parent=top)


# ---- the guide's shape (fast) --------------------------------------------------------------

def test_every_block_is_written_run_or_parsed() -> None:
    found = guide()
    unchecked = [f"line {b.line} ({b.lang or 'no language'})" for b in found
                 if b.action == "unchecked"]
    assert not unchecked, f"blocks the test neither writes, runs nor parses: {unchecked}"
    run = [c for b in found if b.action == "run" for c in b.commands()]
    # the guide's steps, in this order: a run, the tensor, SLURM dry runs, an edit, a rerun,
    # the verification
    wanted = ["cohortflow synth", "cohortflow validate study.yaml", "cohortflow run study.yaml",
              "python read_tensor.py", "cohortflow run study.yaml --profile slurm -- --dry-run",
              "cohortflow status study.yaml", "cohortflow run study.yaml",
              "cohortflow verify results/asthma_tutorial/manifest.json"]
    at = 0
    for command in run:
        if at < len(wanted) and command.startswith(wanted[at]):
            at += 1
    assert at == len(wanted), f"the guide no longer runs {wanted[at]!r} (in order): {run}"


def check_parse_only(command: str) -> None:
    """Fail unless ``command`` is a valid ``cohortflow`` command line (real profile; only the
    words after ``--`` left for Snakemake) or runs a script of the checkout."""
    words = shlex.split(command)
    if words[0] in ("bash", "source"):
        assert (REPO / words[1]).is_file(), f"{command}: no {words[1]} in the checkout"
        return
    assert words[0] == "cohortflow", f"a parse-only line the test cannot check: {command}"
    context = parse_cohortflow(words[1:])
    # `run` hands unknown words to Snakemake: a misspelt option would go there unnoticed
    to_snakemake = words[words.index("--") + 1:] if "--" in words else []
    assert context.args == to_snakemake, f"{command}: {context.args} would go to Snakemake"
    profile = context.params.get("profile")
    if profile is not None:
        assert (REPO / "profiles" / profile / "config.yaml").is_file(), \
            f"{command}: no profile {profile} in profiles/"


def test_parse_only_commands_are_real_commands_and_profiles() -> None:
    parsed = [c for b in guide() if b.action == "parse" for c in b.commands()]
    assert "cohortflow run study.yaml --profile slurm" in parsed
    assert "cohortflow run study.yaml --profile slurm-dask" in parsed
    for command in parsed:
        check_parse_only(command)


@pytest.mark.parametrize("command", [
    "cohortflow run study.yaml --profiles slurm",   # misspelt: Snakemake would get it
    "cohortflow run study.yaml --profile pbs",      # no such profile
    "cohortflow verify",                            # a missing argument
    "cohortflow sbatch study.yaml",                 # no such command
    "sbatch study.yaml",                            # not cohortflow
])
def test_a_wrong_parse_only_command_fails(command: str) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception, typer.BadParameter)):
        check_parse_only(command)


def test_the_study_it_writes_is_valid(tmp_path: Path) -> None:
    write_files([b for b in guide() if b.action in ("write", "append")], tmp_path)
    study = load_study(tmp_path / "study.yaml")
    assert study.name == STUDY_NAME
    assert study.source.omop is not None and study.source.omop.path == Path("warehouse")
    assert sorted(study.concept_sets) == ["asthma", "exacerbation"]
    # the CSV concept set: Asthma and its descendants, less the exacerbation concept
    asthma = study.concept_sets["asthma"]
    assert [(c.concept_id, c.descendants) for c in asthma.include] == [(317009, True)]
    assert [c.concept_id for c in asthma.exclude] == [2000000003]
    assert [w.label for w in study.features.all_windows()] == ["365d", "-730d..-366d"]
    assert len(models.configurations(study)) == 2  # "That is two configurations."


# ---- the whole guide, run (e2e) -------------------------------------------------------------

@dataclass(frozen=True)
class Ran:
    commands: list[str]
    result: subprocess.CompletedProcess[str]

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


def walk(folder: Path) -> Iterator[Ran]:
    """Write and run the guide's blocks in order in ``folder``; yields each bash block run.

    The guide's commands find ``cohortflow`` and ``python`` in this checkout's environment,
    as after its ``source .venv/bin/activate``.
    """
    state = folder / ".tutorial-env.sh"
    state.write_text("")
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("COHORTFLOW_PSEUDONYM_KEY", None)  # the guide sets its own
    for block in guide():
        if block.action in ("write", "append"):
            write_files([block], folder)
        elif block.action == "run":
            script = (f"set -euo pipefail\n. {shlex.quote(str(state))}\n{block.text}"
                      f"export -p > {shlex.quote(str(state))}\n")
            result = subprocess.run(["bash", "-c", script], cwd=folder, env=env,
                                    capture_output=True, text=True, check=False)
            assert result.returncode == 0, (
                f"docs/tutorial.md line {block.line}: {block.text}"
                f"{(result.stdout + result.stderr)[-5000:]}")
            yield Ran(block.commands(), result)


def summary(output: str, label: str) -> set[str]:
    """The rules of a run summary's ``ran:`` or ``reused (up to date):`` list."""
    for line in output.splitlines():
        if label in line:
            listed = line.split(label, 1)[1]
            return {item.strip().rsplit(" ", 1)[0] for item in listed.split(",") if item.strip()}
    raise AssertionError(f"no {label!r} line in:\n{output[-3000:]}")


@pytest.mark.e2e
def test_the_guide_runs_as_written(tmp_path: Path) -> None:
    import xarray as xr

    ran = list(walk(tmp_path))
    results = tmp_path / "results" / STUDY_NAME
    by_command = {}
    for step in ran:
        for command in step.commands:
            by_command.setdefault(command, []).append(step)

    # the pseudonym key the guide made is what every run used
    assert (tmp_path / "pseudonym.key").stat().st_mode & 0o077 == 0

    # the laptop run made the report; the edit's rerun trained only the new configuration
    first, rerun = by_command["cohortflow run study.yaml"]
    assert f"report: {results / 'report.html'}" in first.output
    assert (results / "report.html").stat().st_size > 0
    assert summary(rerun.output, "ran:") == {"sweep_config", "model", "report", "export",
                                             "manifest"}, rerun.output[-3000:]
    assert {"ingest", "cohort_shard", "features"} <= summary(rerun.output,
                                                              "reused (up to date):")
    assert len(list((results / "sweep").glob("*/metrics.json"))) == 3

    # the tensor opens with the feature index the guide reads
    [tensor] = by_command["python read_tensor.py"]
    assert "allergic rhinitis records in the year before index" in tensor.output
    ds = xr.open_zarr(results / "features" / "cohort" / "features.zarr")
    assert "feature" in ds.indexes
    assert "CONDITION//257007|365d|count" in ds.indexes["feature"]
    assert set(ds["window"].values.tolist()) == {"365d", "-730d..-366d", "all"}
    assert f"{ds.sizes['subject']} persons, {ds.sizes['feature']} features" in tensor.output

    # the SLURM dry run, after the laptop run: the results do not depend on the profile
    [dry] = by_command["cohortflow run study.yaml --profile slurm -- --dry-run"]
    assert "Nothing to be done: every step is up to date" in dry.output, dry.output[-3000:]

    # status saw the edit: the new configuration pending, the report out of date
    [status] = by_command["cohortflow status study.yaml"]
    assert "pending" in status.output and "out of date" in status.output, status.output

    [verify] = by_command["cohortflow verify results/asthma_tutorial/manifest.json"]
    assert "verified: every output is identical" in verify.output, verify.output[-3000:]
