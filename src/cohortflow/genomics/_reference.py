"""The reference genome a VCF must be aligned to: GRCh38, as the pharmacogene definitions
(``seeds/pgx/variants.csv``) are.  A VCF on another build (GRCh37 positions, or a
different REF at a defining site) would be called silently wrong by :mod:`cohortflow.pgx`
(the site would just look absent), so the REF alleles at the defining positions are
checked, in the VCF before converting and in a declared store when it is opened."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cohortflow.genomics._errors import GenomicsError
from cohortflow.study._genomics import GRCH38_CONTIGS as GRCH38_CONTIGS  # re-exported


@dataclass(frozen=True)
class Site:
    """A defining variant's reference: contig (``chr``-less), 1-based position, REF."""

    gene: str
    variant: str
    contig: str
    position: int
    ref: str


def bare(contig: str) -> str:
    """A contig name without its ``chr`` prefix (``chr10`` and ``10`` are the same).

    >>> bare("chr10"), bare("10"), bare("CHRX")
    ('10', '10', 'X')
    """
    return contig[3:] if contig.lower().startswith("chr") else contig


def check_contigs(used: Iterable[str], reference: Sequence[str] | None, where: str) -> None:
    """Raise :class:`GenomicsError` when a contig with records (``used``) is not one of
    ``reference``'s (None: not checked); ``where`` names the file or store.

    >>> check_contigs(["10", "chrX"], GRCH38_CONTIGS, "a.vcf.gz")
    >>> check_contigs(["chr10", "chrEBV"], ["chr10"], "a.vcf.gz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cohortflow.errors.GenomicsError: a.vcf.gz: CHROM: records on contig(s) chrEBV, ...
    """
    if reference is None:
        return
    known = {bare(c) for c in reference}
    foreign = [name for name in used if bare(name) not in known]
    if foreign:
        raise GenomicsError(
            f"{where}: CHROM: records on contig(s) {', '.join(foreign)}, not a contig of the "
            f"reference ({_few(reference)}); fix: rename the contigs to the reference's names "
            "(`bcftools annotate --rename-chrs`), drop those records (`bcftools view -t "
            "^CONTIG`), or list the reference's contigs as genomics.reference")


def _few(names: Sequence[str], n: int = 4) -> str:
    """The first few names of a list and how many there are.

    >>> _few(["chr1", "chr2", "chr3", "chr4", "chr5"])
    'chr1, chr2, chr3, chr4, … 5 in all'
    """
    shown = ", ".join(names[:n])
    return shown if len(names) <= n else f"{shown}, … {len(names)} in all"


def defining_sites() -> list[Site]:
    """Every defining variant of the pharmacogene definitions (seed order)."""
    from cohortflow.pgx import load_definitions  # pgx does not import genomics

    return [Site(gene.gene, v.id, bare(v.chromosome), v.position, v.ref)
            for gene in load_definitions().values() for v in gene.variants]


def consistent(found: str, expected: str) -> bool:
    """Whether two REF alleles at the same position can both be the reference genome's:
    one is a prefix of the other (an indel's REF runs on past a SNV's).

    >>> consistent("GA", "G"), consistent("G", "GA"), consistent("A", "G")
    (True, True, False)
    """
    found, expected = found.upper(), expected.upper()
    return found.startswith(expected) or expected.startswith(found)


def check_ref(records: Iterable[tuple[str, int, str]], where: str,
              sites: Sequence[Site] | None = None) -> None:
    """Raise :class:`GenomicsError` for the first record (contig, position, REF) at a
    defining position whose REF disagrees with the definition's; ``where`` names the file
    or store for the message."""
    sites = defining_sites() if sites is None else sites
    by_place = {(s.contig, s.position): s for s in sites}
    for contig, position, ref in records:
        site = by_place.get((bare(contig), int(position)))
        if site is not None and not consistent(ref, site.ref):
            raise GenomicsError(
                f"{where}: REF: {contig}:{position} has REF {ref!r} but the {site.gene} "
                f"definition of {site.variant} there has {site.ref!r} (seeds/pgx/"
                "variants.csv, GRCh38); the genotypes are not aligned to GRCh38; fix: give "
                "a GRCh38 VCF (lift it over, e.g. `bcftools +liftover`) or left-align it "
                "against GRCh38 (`bcftools norm -f GRCh38.fa`)")
