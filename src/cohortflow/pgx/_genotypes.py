"""Genotypes at a gene's defining variants, read from a VCF Zarr layout (xarray Dataset).

Only the rows at the seeds' positions are read from ``call_genotype`` (so a dask- or
Zarr-backed store is never loaded whole).  A defining variant is matched by contig
(``chr10`` and ``10`` are the same), position, reference allele and one of the
alternate alleles; split and joined multi-allelic records both work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from cohortflow.errors import PgxGenotypeError
from cohortflow.pgx._seeds import GeneDefinition

REQUIRED = ("variant_contig", "contig_id", "variant_position", "variant_allele",
            "call_genotype", "sample_id")
"""VCF Zarr variables the caller reads (``call_genotype_phased`` is optional: without
it every call counts as unphased)."""

Bits = npt.NDArray[np.int64]


@dataclass(frozen=True)
class GeneGenotypes:
    """Per sample, bit ``j`` set when the gene's variant ``j`` is carried (``haplotypes``:
    samples × 2), missing (``missing``), absent from the dataset (``absent``, one mask for
    all samples), or heterozygous without phase (``unphased``)."""

    haplotypes: Bits
    missing: Bits
    unphased: Bits
    absent: int


def _strings(values: Any) -> npt.NDArray[np.str_]:
    array = np.asarray(values)
    if array.dtype.kind != "U":  # object, bytes, or numpy 2's StringDType (zarr v3 strings)
        array = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v),
                             otypes=[str])(array.astype(object))
    return array.astype(str)


def _contig(name: str) -> str:
    return name[3:] if name.lower().startswith("chr") else name


def check_layout(genotypes: xr.Dataset) -> None:
    """Raise :class:`PgxGenotypeError` unless ``genotypes`` has the VCF Zarr variables."""
    lacking = [name for name in REQUIRED if name not in genotypes.variables]
    if lacking:
        raise PgxGenotypeError(
            f"genotypes lack the VCF Zarr variable(s) {', '.join(lacking)}; expected "
            f"{', '.join(REQUIRED)} (open a VCF Zarr store with xarray.open_zarr)")
    shape = genotypes["call_genotype"].shape
    if len(shape) != 3 or shape[2] != 2:
        raise PgxGenotypeError(f"call_genotype has shape {shape}; expected variants × samples "
                               "× ploidy 2 (the pharmacogenes called here are autosomal)")


class SiteIndex:
    """The dataset's variant sites, indexed once for every gene."""

    def __init__(self, genotypes: xr.Dataset) -> None:
        check_layout(genotypes)
        self.genotypes = genotypes
        self.positions = np.asarray(genotypes["variant_position"].values, dtype=np.int64)
        contigs = [_contig(c) for c in _strings(genotypes["contig_id"].values).tolist()]
        self.contigs = np.asarray(contigs, dtype=str)[
            np.asarray(genotypes["variant_contig"].values, dtype=np.int64)]
        self.n_samples = int(genotypes.sizes[genotypes["call_genotype"].dims[1]])

    def gene(self, gene: GeneDefinition) -> GeneGenotypes:
        """Bit masks of the gene's variants for every sample (vectorised over samples)."""
        wanted = np.isin(self.positions, [v.position for v in gene.variants])
        rows = np.flatnonzero(wanted & (self.contigs == _contig(gene.chromosome)))
        alleles = _strings(self.genotypes["variant_allele"].isel(
            {self.genotypes["variant_allele"].dims[0]: rows}).values)
        calls, phased = self._calls(rows)
        haplotypes = np.zeros((self.n_samples, 2), dtype=np.int64)
        missing = np.zeros(self.n_samples, dtype=np.int64)
        unphased = np.zeros(self.n_samples, dtype=np.int64)
        absent = 0
        for j, variant in enumerate(gene.variants):
            bit = np.int64(1 << j)
            site = np.flatnonzero((self.positions[rows] == variant.position)
                                  & (alleles[:, 0] == variant.ref))
            if len(site) == 0:
                absent |= 1 << j
                continue
            carried = np.zeros((self.n_samples, 2), dtype=bool)
            for k in site:
                alt = np.flatnonzero(alleles[k, 1:] == variant.alt)
                if len(alt):
                    carried |= calls[k] == alt[0] + 1
            missing |= np.where((calls[site] < 0).any(axis=(0, 2)), bit, 0)
            haplotypes |= np.where(carried, bit, 0)
            het = carried[:, 0] != carried[:, 1]
            unphased |= np.where(het & ~phased[site].all(axis=0), bit, 0)
        return GeneGenotypes(haplotypes, missing, unphased, absent)

    def _calls(self, rows: npt.NDArray[np.int64]) -> tuple[Any, Any]:
        call = self.genotypes["call_genotype"]
        calls = np.asarray(call.isel({call.dims[0]: rows}).values, dtype=np.int64)
        if "call_genotype_phased" not in self.genotypes.variables:
            return calls, np.zeros(calls.shape[:2], dtype=bool)
        phase = self.genotypes["call_genotype_phased"]
        return calls, np.asarray(phase.isel({phase.dims[0]: rows}).values, dtype=bool)
