"""The Snakemake command of a run: where the workflow is (Snakefile, profiles/), the command
line for a study under a profile, and the options a user passed on to Snakemake."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from cohortflow.errors import CohortflowError
from cohortflow.study import demo_study_path


def workflow_root() -> Path:
    """The directory holding the Snakefile and profiles/: this checkout of cohortflow."""
    for root in Path(__file__).resolve().parents:
        if (root / "Snakefile").is_file() and (root / "profiles").is_dir():
            return root
    raise CohortflowError(
        "the cohortflow workflow (Snakefile, profiles/) was not found next to the package; "
        "fix: install cohortflow from its repository with `pip install -e .`"
    )


def snakemake_command(study: Path | None, profile: str, results: Path,
                      extra: list[str]) -> list[str]:
    """The Snakemake command line for a study under a profile.

    ``extra`` (what follows ``--`` on ``cohortflow run``: targets, options) goes before
    ``--config``, whose list of entries would otherwise swallow a target.  A path under
    ``results`` given relative to this directory is made absolute, as the rules' outputs
    are.  A ``--config`` of its own is merged into cohortflow's, which wins for ``study``,
    ``results`` and ``profile``.

    >>> command = snakemake_command(None, "laptop", Path("r"), ["r/x.json", "-j", "2"])
    >>> target, *rest = command[command.index("--config") - 3:command.index("--config")]
    >>> target == str(Path("r/x.json").resolve()), rest
    (True, ['-j', '2'])
    >>> command = snakemake_command(None, "laptop", Path("r"), ["--config", "a=1", "-n"])
    >>> at = command.index("--config")
    >>> command[at - 1:at + 2], command[-1]
    (['-n', '--config', 'a=1'], 'profile=laptop')
    """
    root = workflow_root()
    profile_dir = root / "profiles" / profile
    if not (profile_dir / "config.yaml").is_file():
        known = sorted(p.name for p in (root / "profiles").iterdir() if p.is_dir())
        raise CohortflowError(
            f"profile '{profile}' not found in {root / 'profiles'}; fix: one of {', '.join(known)}"
        )
    study_path = (study or demo_study_path()).resolve()
    extra, config = _without_option(extra, "--config", "-C")
    extra = [str(Path(arg).resolve()) if _under(Path(arg), results) else arg for arg in extra]
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(root / "Snakefile"),
        "--workflow-profile", str(profile_dir),
        *extra,
        # --config replaces the profile's config list, so the profile name is repeated here.
        "--config", *config, f"study={study_path}", f"results={results.resolve()}",
        f"profile={profile}",
    ]


def _under(path: Path, root: Path) -> bool:
    """Whether a relative ``path`` lies under ``root`` (both as given on the command line).

    >>> _under(Path("results/demo/report.html"), Path("results")), _under(Path("all"), Path("."))
    (True, False)
    """
    # a target is at least <results>/<study>/<file>: a rule name has no slash
    return (not path.is_absolute() and not root.is_absolute() and "/" in str(path)
            and not str(path).startswith("-") and path.parts[:len(root.parts)] == root.parts)


def _without_option(extra: list[str], *names: str) -> tuple[list[str], list[str]]:
    """``extra`` without every option called one of ``names``, and those options' values.

    >>> _without_option(["t", "--config", "a=1", "b=2", "-n", "--config=c=3"], "--config")
    (['t', '-n'], ['a=1', 'b=2', 'c=3'])
    """
    kept: list[str] = []
    values: list[str] = []
    taking = False
    for arg in extra:
        name, eq, value = arg.partition("=")
        if name in names:
            taking = not eq
            values += [value] if eq else []
        elif taking and not arg.startswith("-"):
            values.append(arg)
        else:
            taking = False
            kept.append(arg)
    return kept, values


def _option(extra: list[str], *names: str) -> list[str] | None:
    """The values of the last Snakemake option called one of ``names`` in ``extra``.

    >>> _option(["--directory", "w", "-j", "2"], "--directory", "-d")
    ['w']
    >>> _option(["--resources=mem_mb=8000"], "--resources")
    ['mem_mb=8000']
    >>> _option(["--resources", "mem_mb=1", "gpu=1", "--until", "x"], "--resources")
    ['mem_mb=1', 'gpu=1']
    >>> _option([], "--directory") is None
    True
    """
    found = None
    for i, arg in enumerate(extra):
        name, eq, value = arg.partition("=")
        if name not in names:
            continue
        if eq:
            found = [value]
            continue
        values = []
        for following in extra[i + 1:]:
            if following.startswith("-"):
                break
            values.append(following)
        found = values
    return found


def snakemake_dir(extra: list[str]) -> Path:
    """Where Snakemake keeps its state (``.snakemake``) for a run with these arguments."""
    directory = _option(extra, "--directory", "-d")
    return Path(directory[0] if directory else ".") / ".snakemake"


def global_resources(profile: str, extra: list[str]) -> list[str]:
    """Snakemake's ``resources`` for a run: the command line's, else the profile's."""
    given = _option(extra, "--resources", "--res")
    if given is not None:
        return given
    config = yaml.safe_load((workflow_root() / "profiles" / profile / "config.yaml").read_text())
    return [str(entry) for entry in (config or {}).get("resources") or []]
