"""The rules of small-cell suppression for every count that leaves the compute, and keyed
pseudonyms.

What leaves the compute is :data:`cohortflow.layout.SHARED` (the report, its figures, the
export, the leaderboard, the manifest, logs and step timings), written only through the
disclosure gate (:class:`cohortflow.disclosure.Disclosure`), which applies these rules at
the study's ``min_cell_count``; everything else under ``results/<study>/`` (event store,
cohort tables, tensors, per-configuration predictions) holds person-level data and stays
inside.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any

from cohortflow.errors import CohortflowError

DEFAULT_MIN_CELL_COUNT = 11
"""The default small-cell threshold: the one CMS uses for data it releases."""


def suppress(count: int, min_cell_count: int) -> str:
    """Show a count, or ``<min`` when it is positive and below the threshold.

    >>> suppress(250, 11), suppress(3, 11), suppress(0, 11)
    ('250', '<11', '0')
    """
    if small(count, min_cell_count):
        return f"<{min_cell_count}"
    return str(count)


def split_shown(persons: int, outcomes: int, min_cell_count: int) -> bool:
    """Whether a figure or metric computed over a group of ``persons`` (a model's test
    split), ``outcomes`` of them with the outcome, may be shown: only when at least
    ``min_cell_count`` have the outcome and as many do not.  A ROC curve's steps are
    1 / (persons with the outcome) high and 1 / (persons without) wide; a Brier score with
    its scaled Brier gives the outcome rate exactly (scaled = 1 - Brier / (rate × (1 -
    rate))); an AUROC over so few is a fraction of a small denominator: each gives the
    counts back.

    >>> split_shown(41, 11, 11), split_shown(34, 4, 11), split_shown(8, 2, 11)
    (True, False, False)
    """
    return outcomes >= min_cell_count and persons - outcomes >= min_cell_count


def curve_shown(labels: Sequence[int] | Any, min_cell_count: int) -> bool:
    """Whether a ROC curve of these labels may be drawn (:func:`split_shown`).

    >>> curve_shown([1] * 11 + [0] * 30, 11), curve_shown([1] * 4 + [0] * 30, 11)
    (True, False)
    """
    return split_shown(len(labels), int(sum(int(v) for v in labels)), min_cell_count)


def suppress_value(count: int, min_cell_count: int) -> int | str:
    """A count for a machine-readable output (JSON): the number, or ``"<min"`` when small.

    >>> suppress_value(250, 11), suppress_value(3, 11)
    (250, '<11')
    """
    return f"<{min_cell_count}" if small(count, min_cell_count) else count


def pool_bins(positives: Sequence[int], totals: Sequence[int], min_cell_count: int
              ) -> list[list[int]]:
    """Group adjacent bins (of a calibration plot) so that no group has a small number of
    persons with, or without, the outcome: a rate over a known group size would give it.

    Returns the groups as lists of bin indices, in order; the offending group is merged with
    its smaller neighbour until none is left (one group when nothing else works).

    >>> pool_bins([0, 15, 3, 40], [50, 50, 50, 80], 11)
    [[0], [1, 2], [3]]
    >>> pool_bins([5, 5], [20, 20], 11)
    [[0, 1]]
    """
    groups = [[i] for i in range(len(totals))]
    pos, tot = list(positives), list(totals)

    def bad(j: int) -> bool:
        return small(pos[j], min_cell_count) or small(tot[j] - pos[j], min_cell_count)

    while len(groups) > 1 and any(bad(j) for j in range(len(groups))):
        j = next(j for j in range(len(groups)) if bad(j))
        if j == 0:
            other = 1
        elif j == len(groups) - 1:
            other = j - 1
        else:
            other = j - 1 if tot[j - 1] <= tot[j + 1] else j + 1
        a, b = sorted((j, other))
        groups[a] += groups.pop(b)
        pos[a] += pos.pop(b)
        tot[a] += tot.pop(b)
    return groups


def suppress_counts(record: Any, keys: frozenset[str], min_cell_count: int) -> Any:
    """A JSON-like record with every integer under one of ``keys`` suppressed.

    >>> suppress_counts({"death": {"rows": 2, "sha256": "ab"}}, frozenset({"rows"}), 11)
    {'death': {'rows': '<11', 'sha256': 'ab'}}
    """
    if isinstance(record, dict):
        return {k: suppress_value(v, min_cell_count)
                if k in keys and isinstance(v, int) and not isinstance(v, bool)
                else suppress_counts(v, keys, min_cell_count) for k, v in record.items()}
    if isinstance(record, list):
        return [suppress_counts(v, keys, min_cell_count) for v in record]
    return record


RESTRICTED_ZIP3 = frozenset({
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831",
    "878", "879", "884", "890", "893"})
"""Three-digit ZIP prefixes of areas of 20,000 people or fewer, which HIPAA Safe Harbor
replaces by ``000`` (the list of the HHS de-identification guidance, from the 2000 Census)."""

COMPLEMENTARY = "*"
"""Shown for a count hidden only so that a small one cannot be recovered by subtraction."""

PSEUDONYM_KEY_ENV = "COHORTFLOW_PSEUDONYM_KEY"
"""Environment variable holding the secret key of :func:`pseudonyms`."""

def small(count: int, min_cell_count: int) -> bool:
    """Whether a count must not be shown: positive and below the threshold.

    >>> small(0, 11), small(10, 11), small(11, 11)
    (False, True, False)
    """
    return 0 < count < min_cell_count


def suppress_steps(counts: list[int], min_cell_count: int) -> list[str]:
    """Show a chain of counts where each step keeps a subset of the one before (attrition).

    A count below the threshold shows as ``<min``; a count whose drop from the last count
    shown is below the threshold is hidden too (``*``), since subtraction would give the
    small count of persons removed.  Later steps compare with the last count shown.

    >>> suppress_steps([500, 498, 300, 295, 3], 11)
    ['500', '*', '300', '*', '<11']
    >>> suppress_steps([500, 500, 400], 11)
    ['500', '500', '400']
    """
    shown: list[str] = []
    last: int | None = None
    for count in counts:
        if 0 < count < min_cell_count:
            shown.append(f"<{min_cell_count}")
        elif last is not None and 0 < last - count < min_cell_count:
            shown.append(COMPLEMENTARY)
        else:
            shown.append(str(count))
            last = count
    return shown


def suppress_categories(counts: dict[str, int], min_cell_count: int,
                        total_shown: bool = True) -> dict[str, str]:
    """Show the counts of categories that add up to a total (sex, age band, outcome).

    A small count shows as ``<min``; when exactly one category is suppressed and the total
    is shown, the next smallest is hidden too (``*``), or subtraction would recover it.

    >>> suppress_categories({"F": 120, "M": 95, "unknown": 4}, 11)
    {'F': '120', 'M': '*', 'unknown': '<11'}
    >>> suppress_categories({"F": 120, "M": 95, "unknown": 4, "other": 2}, 11)
    {'F': '120', 'M': '95', 'unknown': '<11', 'other': '<11'}
    """
    shown = {name: suppress(count, min_cell_count) for name, count in counts.items()}
    small = [n for n, c in counts.items() if 0 < c < min_cell_count]
    if total_shown and len(small) == 1:
        rest = sorted((c, n) for n, c in counts.items() if n not in small and c > 0)
        if rest:
            shown[rest[0][1]] = COMPLEMENTARY
    return shown


def pseudonym_key(key: str | None = None) -> str:
    """The secret of :func:`pseudonyms`: ``key``, else ``$COHORTFLOW_PSEUDONYM_KEY``."""
    key = os.environ.get(PSEUDONYM_KEY_ENV) if key is None else key
    if not key:
        raise CohortflowError(
            f"no pseudonym key: shared outputs replace subject ids by a keyed hash; fix: "
            f"export {PSEUDONYM_KEY_ENV}=<a long random secret kept off the shared outputs>, "
            "e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    return key


def pseudonyms(subject_ids: Sequence[int], key: str | None = None) -> list[str]:
    """Keyed pseudonyms of subject ids: HMAC-SHA256 with a secret, first 16 hex digits.

    The key comes from ``$COHORTFLOW_PSEUDONYM_KEY`` when not given; without one there is
    no pseudonym (a plain hash of an id can be reversed by hashing every id).

    >>> pseudonyms([1, 2], key="k")
    ['0aa2054d88556d7e', 'e94dc0787a13962a']
    >>> pseudonyms([1], key="")
    Traceback (most recent call last):
    ...
    cohortflow.errors.CohortflowError: no pseudonym key: ...
    """
    secret = pseudonym_key(key).encode()
    return [hmac.new(secret, str(int(i)).encode(), hashlib.sha256).hexdigest()[:16]
            for i in subject_ids]
