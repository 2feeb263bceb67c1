"""``python -m cohortflow`` is the ``cohortflow`` command."""

from cohortflow.cli import app

app(prog_name="cohortflow")
