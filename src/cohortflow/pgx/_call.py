"""Diplotype and phenotype calls from genotype bit masks and the seeds' rules.

Samples are grouped by their genotype pattern at a gene (numpy, over all samples at once);
each distinct pattern is resolved once, so the Python work grows with the number of
patterns (a few dozen per gene), not with the number of samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import xarray as xr

from cohortflow.errors import CohortflowError
from cohortflow.pgx._genotypes import GeneGenotypes, SiteIndex, _strings
from cohortflow.pgx._seeds import INDETERMINATE, GeneDefinition, load_definitions

MAX_UNPHASED = 12
"""Heterozygous sites without phase beyond which haplotype pairs are not enumerated."""

SCHEMA = {"sample_id": pl.String, "gene": pl.String, "diplotype": pl.String,
          "activity_score": pl.Float64, "phenotype": pl.String, "reason": pl.String}
"""Columns of :func:`call_phenotypes`."""


@dataclass(frozen=True)
class Call:
    """The call for one genotype pattern; ``reason`` says why a phenotype is Indeterminate."""

    diplotype: str | None
    activity_score: float | None
    phenotype: str
    reason: str | None


def _indeterminate(reason: str) -> Call:
    return Call(None, None, INDETERMINATE, reason)


def _bits(mask: int) -> list[int]:
    return [j for j in range(mask.bit_length()) if mask >> j & 1]


def _labels(gene: GeneDefinition, mask: int) -> str:
    return ", ".join(gene.variants[j].label() for j in _bits(mask))


def _cover(gene: GeneDefinition, dosage: dict[int, int]) -> list[str] | None:
    """Alleles explaining ``dosage`` (copies of each variant), largest definitions first;
    ``None`` when a carried variant is left over."""
    left = dict(dosage)
    found: list[str] = []
    order = sorted((bits for bits in gene.definitions if bits),
                   key=lambda b: (-b.bit_count(), gene.alleles[gene.definitions[b]].order, b))
    for bits in order:
        copies = min(left.get(j, 0) for j in _bits(bits))
        if copies:
            found += [gene.definitions[bits]] * copies
            for j in _bits(bits):
                left[j] -= copies
    return None if any(left.values()) else found


def _lowest(gene: GeneDefinition, names: list[str], count: int) -> list[str]:
    """The ``count`` lowest-activity alleles of ``names``, padded with the reference."""
    names = names + [gene.reference] * max(0, count - len(names))
    def rank(name: str) -> tuple[float, int]:
        allele = gene.alleles[name]
        return (allele.activity if allele.activity is not None else 1.0, allele.order)
    return sorted(names, key=rank)[:count]


def _haplotype(gene: GeneDefinition, mask: int) -> str | None:
    if gene.combine == "haplotype":
        return gene.definitions.get(mask)
    found = _cover(gene, dict.fromkeys(_bits(mask), 1))
    return None if found is None else _lowest(gene, found, 1)[0]


def diplotype_call(gene: GeneDefinition, first: str, second: str) -> Call:
    """The call of a known diplotype (two allele names of ``gene``): its name in allele
    order, activity score and CPIC phenotype, or Indeterminate where CPIC assigns none."""
    a, b = sorted((gene.alleles[first], gene.alleles[second]), key=lambda x: x.order)
    diplotype = f"{a.name}/{b.name}"
    if gene.phenotype_rule == "activity_score":
        score = (a.activity or 0.0) + (b.activity or 0.0)
        phenotype = gene.activity_scores.get(score)
        if phenotype is None:
            return Call(diplotype, score, INDETERMINATE,
                        f"activity_scores.csv has no phenotype for {gene.gene} score {score}")
        return Call(diplotype, score, phenotype, None)
    phenotype = gene.function_pairs.get(frozenset((a.function, b.function)))
    if phenotype is None:
        return Call(diplotype, None, INDETERMINATE, f"CPIC assigns no phenotype to "
                    f"{a.function} + {b.function} ({gene.gene} {diplotype})")
    return Call(diplotype, None, phenotype, None)


def _unphased(gene: GeneDefinition, both: int, het: int) -> Call:
    sites = _bits(het)
    if gene.combine == "lowest_activity":
        # CPIC (DPYD): without phase, the two lowest variant activity values count.
        dosage = dict.fromkeys(_bits(both), 2) | dict.fromkeys(sites, 1)
        found = _cover(gene, dosage)
        if found is None:
            return _indeterminate(f"the variants {_labels(gene, both | het)} match no "
                                  f"combination of defined {gene.gene} alleles")
        first, second = _lowest(gene, found, 2)
        return diplotype_call(gene, first, second)
    if len(sites) > MAX_UNPHASED:
        return _indeterminate(f"heterozygous without phase at {len(sites)} {gene.gene} sites")
    options: dict[tuple[str, str], None] = {}
    rest = sites[1:]
    for pick in range(2 ** len(rest)):
        one = 1 << sites[0] | sum(1 << j for i, j in enumerate(rest) if pick >> i & 1)
        left, right = _haplotype(gene, both | one), _haplotype(gene, both | (het & ~one))
        if left is not None and right is not None:
            key = sorted((left, right), key=lambda n: gene.alleles[n].order)
            options[key[0], key[1]] = None
    if len(options) == 1:
        return diplotype_call(gene, *next(iter(options)))
    if not options:
        return _indeterminate(f"the unphased variants {_labels(gene, both | het)} match no "
                              f"pair of defined {gene.gene} alleles")
    ranked = sorted(options, key=lambda p: (gene.alleles[p[0]].order, gene.alleles[p[1]].order))
    possible = " or ".join(f"{a}/{b}" for a, b in ranked)
    return _indeterminate(f"heterozygous without phase at {_labels(gene, het)}: "
                          f"possible diplotypes {possible}")


def _resolve(gene: GeneDefinition, missing: int, unphased: bool, a: int, b: int) -> Call:
    if missing:
        return _indeterminate(f"missing call at {_labels(gene, missing)}")
    if unphased:
        return _unphased(gene, a, b)
    first, second = _haplotype(gene, a), _haplotype(gene, b)
    if first is None or second is None:
        odd = a if first is None else b
        return _indeterminate(f"a haplotype carries {_labels(gene, odd)}, which together "
                              f"define no {gene.gene} allele in seeds/pgx/alleles.csv")
    return diplotype_call(gene, first, second)


def call_gene(gene: GeneDefinition, genotypes: GeneGenotypes, absent: str) -> list[Call]:
    """One call per sample for ``gene``."""
    n = len(genotypes.missing)
    if genotypes.absent and absent == "missing":
        call = _indeterminate(
            f"not in the genotypes: {_labels(gene, genotypes.absent)}; fix: genotype every "
            "defining site, or pass absent='reference' when absent sites are homozygous "
            "reference (e.g. a joint-called VCF)")
        return [call] * n
    h0, h1 = genotypes.haplotypes[:, 0], genotypes.haplotypes[:, 1]
    unphased = genotypes.unphased != 0
    keys = np.stack([genotypes.missing, unphased.astype(np.int64),
                     np.where(unphased, h0 & h1, np.minimum(h0, h1)),
                     np.where(unphased, h0 ^ h1, np.maximum(h0, h1))], axis=1)
    patterns, inverse = np.unique(keys, axis=0, return_inverse=True)
    calls = [_resolve(gene, int(m), bool(u), int(a), int(b)) for m, u, a, b in patterns]
    return [calls[i] for i in inverse.reshape(-1).tolist()]


def call_phenotypes(genotypes: xr.Dataset, definitions: dict[str, GeneDefinition] | None = None,
                    *, genes: Sequence[str] | None = None,
                    absent: Literal["missing", "reference"] = "missing") -> pl.DataFrame:
    """Diplotype, activity score and CPIC phenotype of every sample at every seeded gene.

    ``genotypes`` is a VCF Zarr dataset (``xarray.open_zarr`` of a store from bio2zarr):
    ``variant_contig``, ``contig_id``, ``variant_position``, ``variant_allele``,
    ``call_genotype``, ``call_genotype_phased`` and ``sample_id``.  A sample is
    Indeterminate, with a ``reason``, when a defining site is missing, when unphased
    heterozygous calls allow more than one diplotype, or when its variants match no defined
    allele.  A defining site absent from the dataset makes every sample Indeterminate unless
    ``absent="reference"`` (absent sites are then homozygous reference).

    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({
    ...     "contig_id": ("contigs", ["chr10"]), "variant_contig": ("variants", [0]),
    ...     "variant_position": ("variants", [94781859]),
    ...     "variant_allele": (("variants", "alleles"), [["G", "A"]]),
    ...     "call_genotype": (("variants", "samples", "ploidy"), np.array([[[1, 1]]])),
    ...     "sample_id": ("samples", ["s1"])})
    >>> row = call_phenotypes(ds, genes=["CYP2C19"], absent="reference").row(0, named=True)
    >>> row["diplotype"], row["phenotype"]
    ('*2/*2', 'Poor Metabolizer')
    """
    definitions = load_definitions() if definitions is None else definitions
    chosen = list(definitions) if genes is None else list(genes)
    unknown = [g for g in chosen if g not in definitions]
    if unknown:
        raise CohortflowError(f"genes {unknown} have no allele definitions; expected some of "
                              f"{', '.join(definitions)} (see seeds/pgx/genes.csv)")
    if absent not in ("missing", "reference"):
        raise CohortflowError(f"absent={absent!r}; expected 'missing' or 'reference'")
    sites = SiteIndex(genotypes)
    samples = _strings(genotypes["sample_id"].values).tolist()
    frames = []
    for name in chosen:
        calls = call_gene(definitions[name], sites.gene(definitions[name]), absent)
        frames.append(pl.DataFrame({
            "sample_id": samples, "gene": [name] * len(samples),
            "diplotype": [c.diplotype for c in calls],
            "activity_score": [c.activity_score for c in calls],
            "phenotype": [c.phenotype for c in calls], "reason": [c.reason for c in calls],
        }, schema=SCHEMA))
    return pl.concat(frames) if frames else pl.DataFrame(schema=SCHEMA)
