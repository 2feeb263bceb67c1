"""Small-cell suppression for every count that leaves the compute."""

from __future__ import annotations

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
