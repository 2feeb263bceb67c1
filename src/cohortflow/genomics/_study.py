"""A study's genotype steps (``genomics:``), each one Snakemake job.

The conversion runs as bio2zarr's passes, one job per partition (``explode_*``,
``encode_*``), all writing into the store's staging folder; each job leaves a small JSON
record (its output) and the last publishes the store and writes
``genomics/genotypes.json``, which every later step reads to find the store (the
converted one, or ``genomics.zarr`` as given).  Then: the linkage of the store's samples to
persons, every linked person's pharmacogene phenotypes, and the dosages of the variants
the features declare.  All person-level, owner-only, never shared."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import xarray as xr

from cohortflow import events
from cohortflow.genomics._convert import (
    GenomicsError,
    encode_finalise,
    encode_init,
    encode_partition,
    explode_finalise,
    explode_init,
    explode_partition,
    publish,
    stage,
    staging_path,
)
from cohortflow.genomics._linkage import link_samples, read_linkage
from cohortflow.genomics._reference import check_contigs
from cohortflow.genomics._store import open_genotypes
from cohortflow.study import Study, phenotype_slug

SYNTH_VCF = Path("genotypes") / "cohort.vcf.gz"
SYNTH_LINKAGE = Path("genotypes") / "linkage.csv"
"""Where the synthetic source writes its genotypes, inside its OMOP folder."""

LINKAGE_SCHEMA = pl.Schema({"sample_id": pl.String(), "subject_id": pl.Int64()})
PHENOTYPE_SCHEMA = pl.Schema({"subject_id": pl.Int64(), "gene": pl.String(),
                              "diplotype": pl.String(), "phenotype": pl.String(),
                              "cpic_phenotype": pl.String(), "activity_score": pl.Float64(),
                              "reason": pl.String()})
"""``phenotype``: the short name criteria and features use (:func:`phenotype_slug`);
``cpic_phenotype``: the CPIC term; ``reason``: why a call is indeterminate."""
DOSAGE_SCHEMA = pl.Schema({"subject_id": pl.Int64(), "variant": pl.String(),
                           "dosage": pl.Float32()})


def genotype_inputs(study: Study, omop: Path) -> tuple[list[Path], Path | None, Path]:
    """The study's VCFs to convert, its VCF Zarr store (None: converted) and its linkage
    table; a synthetic source's are in its OMOP folder ``omop``."""
    genomics = study.genomics
    if genomics is None:
        raise GenomicsError("the study has no genomics: section; fix: add genomics: {vcf: "
                            "[FILE.vcf.gz], linkage: FILE.csv}")
    if genomics.from_synth:
        return [Path(omop) / SYNTH_VCF], None, Path(omop) / SYNTH_LINKAGE
    linkage = study.linkage_file()
    assert linkage is not None  # validated: given with the genotypes
    return study.genotype_files(), study.genotype_store(), linkage


def _record(path: Path, **fields: object) -> None:
    events.write_json(fields, Path(path))


def _partitions(record: Path) -> int:
    return int(json.loads(Path(record).read_text())["partitions"])


def partition_names(record: Path) -> list[str]:
    """The partitions an ``*_init`` job planned (its record), as wildcard values."""
    return [str(i) for i in range(_partitions(record))]


def convert_init(vcfs: Sequence[Path], out: Path, partitions: int, record: Path,
                 reference_contigs: Sequence[str] | None = None) -> None:
    """Stage the VCFs (indexing those without an index; their records on contigs of
    ``reference_contigs`` when given, see :func:`stage`) and plan the explode partitions.

    A store left at ``out`` by an earlier conversion (its inputs changed since) is removed
    first: it is this step's own output, rebuilt."""
    out = Path(out)
    store = any((out / name).is_file() for name in ("zarr.json", ".zgroup"))
    if out.is_dir() and not out.is_symlink() and store:
        shutil.rmtree(out)
    work = stage([Path(v) for v in vcfs], out, reference_contigs)
    _record(record, partitions=explode_init(work, partitions))


def convert_explode(out: Path, partition: int, record: Path) -> None:
    """Explode one partition (a region of one VCF) into the staged ICF."""
    explode_partition(staging_path(Path(out)), partition)
    _record(record, partition=partition)


def convert_encode_init(out: Path, partitions: int, exploded: Sequence[Path],
                        record: Path) -> None:
    """Join the exploded partitions, create the Zarr arrays and plan the encode
    partitions (``exploded``: the explode jobs' records, all present)."""
    work = staging_path(Path(out))
    explode_finalise(work)
    _record(record, partitions=encode_init(work, partitions), exploded=len(exploded))


def convert_encode(out: Path, partition: int, record: Path) -> None:
    """Encode one partition (a run of variant chunks) of every array."""
    encode_partition(staging_path(Path(out)), partition)
    _record(record, partition=partition)


def convert_finish(out: Path, record: Path) -> None:
    """Join the encoded partitions, index and publish the store, then record it."""
    out = Path(out)
    work = staging_path(out)
    encode_finalise(work)
    publish(work, out)
    describe_store(out, record)


def describe_store(store: Path, record: Path,
                   reference_contigs: Sequence[str] | None = None) -> None:
    """Check the VCF Zarr store ``store`` (its records on contigs of ``reference_contigs``
    when given) and record where it is, with its counts."""
    ds = open_genotypes(Path(store))
    names = _strings(ds["contig_id"].values)
    used = np.unique(np.asarray(ds["variant_contig"].values, dtype=np.int64))
    check_contigs([names[i] for i in used.tolist()], reference_contigs, str(store))
    _record(record, store=str(Path(store).absolute()), samples=int(ds.sizes["samples"]),
            variants=int(ds.sizes["variants"]))


def _store(record: Path) -> xr.Dataset:
    return open_genotypes(Path(json.loads(Path(record).read_text())["store"]))


def _strings(values: object) -> list[str]:
    array = np.asarray(values)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel().tolist()]


def write_linkage(record: Path, linkage: Path, out: Path) -> None:
    """The store's samples, in store order, with their persons (``LINKAGE_SCHEMA``):
    every sample must be in the linkage table; persons without a sample are left out."""
    ds = _store(record)
    table = link_samples(read_linkage(Path(linkage)), _strings(ds["sample_id"].values),
                         Path(linkage))
    frame = table.select("sample_id", subject_id="person_id").cast(LINKAGE_SCHEMA)
    events.write_parquet(frame.to_arrow(), Path(out))


def write_phenotypes(record: Path, linkage: Path, absent: str, out: Path) -> None:
    """Every linked person's diplotype and phenotype at every seeded pharmacogene
    (``PHENOTYPE_SCHEMA``, sorted by subject and gene), called by
    :func:`cohortflow.pgx.call_phenotypes`."""
    from cohortflow.pgx import call_phenotypes

    ds = _store(record)
    calls = call_phenotypes(ds, absent="reference" if absent == "reference" else "missing")
    persons = pl.read_parquet(linkage)
    frame = (calls.join(persons, on="sample_id", how="inner")
             .with_columns(cpic_phenotype=pl.col("phenotype"),
                           phenotype=pl.col("phenotype").map_elements(
                               phenotype_slug, return_dtype=pl.String))
             .select(list(PHENOTYPE_SCHEMA)).cast(PHENOTYPE_SCHEMA)
             .sort("subject_id", "gene"))
    events.write_parquet(frame.to_arrow(), Path(out))


def _contig(name: str) -> str:
    return name[3:] if name.lower().startswith("chr") else name


def variant_rows(ds: xr.Dataset, variant: str) -> tuple[int, int | None]:
    """The store row of a declared variant and the alternate allele counted (its index in
    ``variant_allele``; None: every alternate allele, a biallelic CHROM:POS)."""
    positions = np.asarray(ds["variant_position"].values, dtype=np.int64)
    parts = variant.split(":")
    if len(parts) == 1:
        if "variant_id" not in ds.variables:
            raise GenomicsError(f"features.genomics.variants: {variant!r}: the genotypes "
                                "carry no variant IDs; fix: write it CHROM:POS:REF:ALT")
        rows = np.flatnonzero(np.asarray(_strings(ds["variant_id"].values)) == variant)
        alt = None
    else:
        contigs = np.asarray([_contig(c) for c in _strings(ds["contig_id"].values)])
        contig = contigs[np.asarray(ds["variant_contig"].values, dtype=np.int64)]
        rows = np.flatnonzero((contig == _contig(parts[0])) & (positions == int(parts[1])))
        alt = None
    if len(parts) == 4 and len(rows):
        options = [_strings(ds["variant_allele"].isel(variants=int(r)).values) for r in rows]
        hits = [(int(r), a.index(parts[3])) for r, a in zip(rows, options, strict=True)
                if a[0] == parts[2] and parts[3] in a[1:]]
        if len(hits) == 1:
            return hits[0]
        rows = np.array([], dtype=np.int64)
    if len(rows) != 1:
        found = "is not in the genotypes" if not len(rows) else f"matches {len(rows)} records"
        raise GenomicsError(f"features.genomics.variants: {variant!r} {found}; fix: declare "
                            "a variant of the VCF by its ID, CHROM:POS (a biallelic site) or "
                            "CHROM:POS:REF:ALT")
    row = int(rows[0])
    if alt is None and len(parts) == 2:
        alleles = [a for a in _strings(ds["variant_allele"].isel(variants=row).values) if a]
        if len(alleles) > 2:
            raise GenomicsError(f"features.genomics.variants: {variant!r} has "
                                f"{len(alleles) - 1} alternate alleles; fix: name one, "
                                f"{variant}:{alleles[0]}:{alleles[1]}")
    return row, alt


def dosages(ds: xr.Dataset, variant: str) -> np.ndarray:
    """Per sample, the copies of the variant's alternate allele (float32; NaN where a call
    is missing)."""
    row, alt = variant_rows(ds, variant)
    calls = np.asarray(ds["call_genotype"].isel(variants=row).values, dtype=np.int64)
    carried = calls > 0 if alt is None else calls == alt
    out = carried.sum(axis=1).astype(np.float32)
    out[(calls == -1).any(axis=1)] = np.nan
    return np.asarray(out, dtype=np.float32)


def write_dosages(record: Path, linkage: Path, variants: Sequence[str], out: Path) -> None:
    """Every linked person's dosage of each declared variant (``DOSAGE_SCHEMA``, sorted by
    subject and the variants' order)."""
    ds = _store(record)
    persons = pl.read_parquet(linkage)
    samples = pl.DataFrame({"sample_id": _strings(ds["sample_id"].values)})
    order = samples.join(persons, on="sample_id", how="left", maintain_order="left")
    frames = [order.select("subject_id", variant=pl.lit(v, pl.String),
                           dosage=pl.Series(dosages(ds, v)), k=pl.lit(k))
              for k, v in enumerate(variants)]
    empty = pl.DataFrame(schema={**DOSAGE_SCHEMA, "k": pl.Int32()})
    frame = (pl.concat(frames, how="vertical_relaxed") if frames else empty)
    frame = (frame.filter(pl.col("subject_id").is_not_null()).sort("subject_id", "k")
             .select(list(DOSAGE_SCHEMA)).cast(DOSAGE_SCHEMA))
    # NaN (a missing call) is written as null: one spelling of "no value"
    frame = frame.with_columns(pl.col("dosage").fill_nan(None))
    events.write_parquet(frame.to_arrow(), Path(out))
