"""The linkage table: which person each genotyped sample belongs to (``sample_id``,
``person_id``; CSV or Parquet).  One sample per person and one person per sample, so a
genotype never counts twice and never lands on the wrong person."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from cohortflow.genomics._errors import GenomicsError

COLUMNS = ("sample_id", "person_id")


def _examples(values: Sequence[object], n: int = 3) -> str:
    """A few values for a message, and how many there are in all.

    >>> _examples(["a", "b", "c", "d"])
    'a, b, c (4 in all)'
    """
    shown = ", ".join(str(v) for v in values[:n])
    return shown if len(values) <= n else f"{shown} ({len(values)} in all)"


def _read(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise GenomicsError(f"{path}: genomics.linkage: no such file; fix: correct the path")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise GenomicsError(f"{path}: genomics.linkage: unreadable ({type(e).__name__}: "
                            f"{e}); fix: give a CSV or .parquet file with columns "
                            "sample_id, person_id") from None


def read_linkage(path: Path) -> pl.DataFrame:
    """``path``'s (sample_id String, person_id Int64) rows, sorted by sample_id, after
    checking every row is complete and the mapping is one-to-one."""
    path = Path(path)
    table = _read(path)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise GenomicsError(f"{path}: no {', '.join(missing)} column; it has "
                            f"{', '.join(table.columns)}; fix: name the columns sample_id, "
                            "person_id")
    table = table.select(pl.col("sample_id").cast(pl.String),
                         pl.col("person_id").cast(pl.String).str.strip_chars().alias("raw"))
    table = table.with_columns(pl.col("raw").cast(pl.Int64, strict=False).alias("person_id"))
    for field, bad in (("sample_id", table.filter(pl.col("sample_id").is_null()
                                                  | (pl.col("sample_id") == ""))),
                       ("person_id", table.filter(pl.col("person_id").is_null()))):
        if bad.height:
            raise GenomicsError(f"{path}: {field}: {bad.height} row(s) empty or not an "
                                f"integer (e.g. {bad['raw'][0]!r} for sample "
                                f"{bad['sample_id'][0]!r}); fix: complete or remove them")
    twice = table.filter(pl.col("sample_id").is_duplicated())["sample_id"].unique().sort()
    if twice.len():
        raise GenomicsError(f"{path}: sample_id: listed more than once: "
                            f"{_examples(twice.to_list())}; fix: keep one row per sample")
    shared = (table.filter(pl.col("person_id").is_duplicated())
              .group_by("person_id").agg(pl.col("sample_id").sort()).sort("person_id"))
    if shared.height:
        first = shared.row(0)
        raise GenomicsError(f"{path}: person_id: {shared.height} person(s) linked to more "
                            f"than one sample (person {first[0]}: "
                            f"{_examples(first[1])}); fix: keep one sample per person "
                            "(e.g. the one with the best call rate) and drop the others")
    return table.select(COLUMNS).sort("sample_id")


def link_samples(linkage: pl.DataFrame, sample_ids: Sequence[str], where: Path,
                 what: str = "genotyped sample(s)",
                 drop: str = "remove them from the VCF (`bcftools view -s ^SAMPLE`)"
                 ) -> pl.DataFrame:
    """The person of each of ``sample_ids`` (a store's samples, in its order); every one
    must be in the linkage table ``where`` was read from (``what`` and ``drop`` word the
    message for the kind of store)."""
    samples = pl.DataFrame({"sample_id": list(sample_ids)}, schema={"sample_id": pl.String})
    linked = samples.join(linkage, on="sample_id", how="left", maintain_order="left")
    unlinked = linked.filter(pl.col("person_id").is_null())["sample_id"].to_list()
    if unlinked:
        raise GenomicsError(f"{where}: sample_id: {len(unlinked)} {what} not "
                            f"in the linkage table: {_examples(unlinked)}; fix: add a row "
                            f"(sample_id, person_id) for each, or {drop}")
    return linked
