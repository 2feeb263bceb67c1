"""ZIP codes generalised as HIPAA Safe Harbor allows: the first three digits, except where
the three-digit area holds 20,000 people or fewer (then ``000``).

The restricted prefixes are those the HHS de-identification guidance lists from the 2000
Census (the list to use until HHS publishes another).
"""

from __future__ import annotations

import polars as pl

from cohortflow.privacy import RESTRICTED_ZIP3

SUPPRESSED_ZIP3 = "000"


def zip3(zip_code: pl.Expr) -> pl.Expr:
    """The Safe Harbor three-digit ZIP of a ZIP code column (text or integer): its first
    three digits, ``000`` for a restricted prefix, null when there are fewer than three
    digits (no ZIP).  A ZIP held as an integer lost its leading zeros: it is read as five
    digits (``2134`` is ``02134``).

    >>> frame = pl.DataFrame({"zip": ["02134-1234", "03601", " 9", None, "10001"]})
    >>> frame.select(zip3(pl.col("zip"))).to_series().to_list()
    ['021', '000', None, None, '100']
    >>> pl.DataFrame({"zip": [2134, 89301]}).select(zip3(pl.col("zip"))).to_series().to_list()
    ['021', '000']
    """
    text = zip_code.cast(pl.String).str.strip_chars()
    digits = pl.when(text.str.contains(r"^\d{4}$")).then(text.str.zfill(5)).otherwise(text)
    prefix = digits.str.extract(r"^(\d{3})", 1)
    return (pl.when(prefix.is_in(sorted(RESTRICTED_ZIP3))).then(pl.lit(SUPPRESSED_ZIP3))
            .otherwise(prefix))
