"""Small-cell suppression for every count that leaves the compute."""

from __future__ import annotations

import hashlib
import hmac
import os

from cohortflow.errors import CohortflowError

DEFAULT_MIN_CELL_COUNT = 11
"""The default small-cell threshold: the one CMS uses for data it releases."""


def suppress(count: int, min_cell_count: int) -> str:
    """Show a count, or ``<min`` when it is positive and below the threshold.

    >>> suppress(250, 11), suppress(3, 11), suppress(0, 11)
    ('250', '<11', '0')
    """
    if 0 < count < min_cell_count:
        return f"<{min_cell_count}"
    return str(count)


COMPLEMENTARY = "*"
"""Shown for a count hidden only so that a small one cannot be recovered by subtraction."""

PSEUDONYM_KEY_ENV = "COHORTFLOW_PSEUDONYM_KEY"
"""Environment variable holding the secret key of :func:`pseudonyms`."""


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


def pseudonyms(subject_ids: list[int], key: str | None = None) -> list[str]:
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
    key = os.environ.get(PSEUDONYM_KEY_ENV) if key is None else key
    if not key:
        raise CohortflowError(
            f"no pseudonym key: shared outputs replace subject ids by a keyed hash; fix: "
            f"export {PSEUDONYM_KEY_ENV}=<a long random secret kept off the shared outputs>, "
            "e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    secret = key.encode()
    return [hmac.new(secret, str(int(i)).encode(), hashlib.sha256).hexdigest()[:16]
            for i in subject_ids]
