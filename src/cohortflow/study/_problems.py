"""Validation problems of a study file as one message: each problem's field, what is wrong
and a fix (the closest known key, a corrected example, a bound)."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from cohortflow.study._analyses import NAME, SEPARATOR

MAX_PROBLEMS = 20
"""Problems listed one by one in a validation error; the rest are counted."""
MAX_SHOWN = 80
"""Characters of a received value shown in a message."""


def message(exc: ValidationError, origin: str, root: type[BaseModel]) -> str:
    """Every problem of ``exc`` (the first :data:`MAX_PROBLEMS`, the rest counted)."""
    errors = exc.errors()
    lines = [describe(err, root) for err in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"  - ... and {len(errors) - MAX_PROBLEMS} more")
    return f"{origin}: {len(errors)} problem(s) in the study file:\n" + "\n".join(lines)


def describe(err: Any, root: type[BaseModel]) -> str:
    """One line of a validation message: the field, what is wrong, and a fix."""
    loc = [str(p) for p in err["loc"]]
    field = ".".join(loc) or "<root>"
    kind = err["type"]
    if kind == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") == NAME:
        return f"  - {field.removesuffix('.[key]')}: {_bad_name(str(err.get('input')))}"
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1], root)
        guess = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else f"known keys: {', '.join(known)}"
        return f"  - {field}: unknown key; {hint}"
    if kind == "missing":
        return f"  - {field}: required field is missing"
    received = err.get("input")
    if "fix:" in err["msg"]:  # the check's own message: the problem and its fix
        got = "" if not loc or received in ("", None) else f" (got {_shown(received)})"
        return f"  - {field}: {err['msg']}{got}"
    return (f"  - {field}: {err['msg']} (got {_shown(received)})"
            f"{_example(loc, root) or _bound_hint(err)}")


def _shown(received: Any) -> str:
    """A received value as a message shows it: short, a mapping by its kind, no password."""
    shown = repr(received) if not isinstance(received, dict) else "a mapping"
    shown = re.sub(r"(://[^/:@\s]*:)[^@\s]*@", r"\1***@", shown)  # never echo a password
    shown = re.sub(r"(?i)(password=)[^&\s']*", r"\1***", shown)
    if len(shown) > MAX_SHOWN:  # a value may be huge (many aliases): show its start only
        shown = shown[:MAX_SHOWN] + f"... ({len(shown):,} characters)"
    return shown


def _bad_name(name: str) -> str:
    """Why a cohort, outcome or time-at-risk name is refused, with a name that fits.

    >>> _bad_name("a__b").split("; ")[1]
    "fix: e.g. 'a_b'"
    """
    fixed = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]", "-", name)).strip("_") or "name"
    return (f"{name!r} is not a name: letters, digits, '-' and single '_' between them "
            f"('{SEPARATOR}' joins the parts of an analysis id); fix: e.g. {fixed!r}")


def _bound_hint(err: Any) -> str:
    """A fix for a list too short or a number too small, where the field has no default."""
    ctx = err.get("ctx") or {}
    if err["type"] == "too_short":
        return f"; fix: give at least {ctx.get('min_length', 1)} item(s)"
    if err["type"] in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        return f"; fix: use a value {'of at least' if 'ge' in ctx else 'above'} {bound}"
    return ""


def _example(loc: list[str], root: type[BaseModel]) -> str:
    """A corrected example for a field that has a default, e.g. '; fix: e.g. shards: 4'."""
    model: Any = root
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        if field is not None:
            model = _model_of(field.annotation)
        if model is None:
            return ""
    field = model.model_fields.get(loc[-1]) if loc else None
    if field is None or field.is_required():
        return ""
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return ""
    return f"; fix: e.g. {loc[-1]}: {json.dumps(default, default=str)}"


def _known_keys(loc: list[str], root: type[BaseModel]) -> list[str]:
    """Field names accepted at a location of the study, for 'did you mean' hints."""
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:  # a concept-set name or a list index: same model below it
            continue
        model = _model_of(field.annotation)
        if model is None:
            return []
    return sorted((f.alias or name) for name, f in model.model_fields.items())


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
