"""The command's error printer: a :class:`~cohortflow.errors.CohortflowError` prints as
``error: <message>``, the message verbatim (never read as console markup, which would take
``[fix: a]`` or ``[red]`` for styles and drop them, or fail on a lone ``[/]``), and the
command exits with status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cohortflow import cli
from cohortflow.errors import CohortflowError

MESSAGE = "study.yaml: cohorts[0] is wrong [fix: a] [red]not red[/] [/] [bold]x[/bold] \\[y]"


def test_an_error_message_prints_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    @cli._friendly
    def fails() -> None:
        raise CohortflowError(MESSAGE)

    with pytest.raises(typer.Exit) as done:
        fails()
    assert done.value.exit_code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {MESSAGE}\n"


def test_a_command_prints_a_bracketed_path_verbatim_and_exits_2(tmp_path: Path) -> None:
    study = tmp_path / "[fix: a] [red] x [/].yaml"
    done = subprocess.run([sys.executable, "-m", "cohortflow", "validate", str(study)],
                          capture_output=True, text=True, check=False,
                          env={"COLUMNS": "400", "PATH": "", "PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 2, done.stderr
    assert f"error: {study}: " in done.stderr
    assert "Traceback" not in done.stderr


def test_a_progress_line_prints_a_bracketed_path_verbatim(tmp_path: Path) -> None:
    """Not only errors: every line the command prints names paths as they are."""
    from cohortflow.study import demo_study_path

    study = tmp_path / "[bold]study [2024].yaml"
    study.write_text(demo_study_path().read_text())
    done = subprocess.run([sys.executable, "-m", "cohortflow", "validate", str(study)],
                          capture_output=True, text=True, check=False,
                          env={"COLUMNS": "400", "PATH": "", "PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"{study}: valid study "), done.stderr


def test_every_input_error_class_lives_in_cohortflow_errors() -> None:
    """`cohortflow run` knows a step's refusal by its error's name in :mod:`cohortflow.errors`
    (message alone, exit 2); a class defined elsewhere would print as a crash."""
    import importlib
    import pkgutil

    import cohortflow

    for module in pkgutil.walk_packages(cohortflow.__path__, "cohortflow."):
        if module.name != "cohortflow.__main__":
            importlib.import_module(module.name)

    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    found = subclasses(CohortflowError)
    assert len(found) >= 11
    assert [c.__qualname__ for c in found if c.__module__ != "cohortflow.errors"] == []
