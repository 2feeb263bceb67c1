"""VCF/BCF → VCF Zarr with bio2zarr, once per study, in partitions.

bio2zarr converts in two passes, each split into partitions that separate processes (one
Snakemake job each) can run: *explode* parses the VCF regions into an intermediate columnar
format (ICF), *encode* writes the Zarr arrays, chunked variants × samples.  Everything is
written under one staging folder beside the output (``.<name>.partial``, owner-only) and
the finished store is renamed into place last, so a failed or interrupted run leaves no
output that looks complete.  A multi-contig VCF must be indexed to be split: an input
without a ``.tbi``/``.csi`` beside it gets a CSI index built into the staging folder with
the htslib that cyvcf2 ships (no ``tabix`` binary needed; the input folder may be
read-only)."""

from __future__ import annotations

import ctypes
import gzip
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import cyvcf2
import cyvcf2.cyvcf2
from bio2zarr import vcf as b2z
from bio2zarr import vcf_utils

from cohortflow.genomics._errors import GenomicsError as GenomicsError  # re-exported
from cohortflow.genomics._reference import Site, bare, check_contigs, check_ref, defining_sites

INPUT = "input"
ICF = "icf"
VCZ = "vcz"
CSI_MIN_SHIFT = 14
"""htslib's default for CSI indexes (bins of 16 kbp), as ``bcftools index`` uses."""


STAGING_MARKER = ".cohortflow-staging"
"""Written first into a staging folder: only a folder holding it is removed as stale."""

# bio2zarr narrates its passes at INFO: each partition's genomic region with its record
# count and last position, the sample count.  The steps' logs are shared outputs
# (logs/genomics/...), so only its warnings and errors may reach them.
logging.getLogger("bio2zarr").setLevel(logging.WARNING)


def staging_path(out: Path) -> Path:
    """The staging folder of ``out``: a hidden sibling, so the final rename stays on one
    file system.

    >>> staging_path(Path("/r/genotypes.vcz"))
    PosixPath('/r/.genotypes.vcz.partial')
    """
    return out.parent / f".{out.name}.partial"


def _suffix(vcf: Path) -> str:
    """The compound suffix that tells VCF from BCF (``.vcf.gz``, ``.bcf``).

    >>> _suffix(Path("a/cohort.chr1.vcf.gz")), _suffix(Path("b.bcf"))
    ('.vcf.gz', '.bcf')
    """
    name = vcf.name
    for ext in (".vcf.gz", ".vcf.bgz", ".bcf", ".vcf"):
        if name.endswith(ext):
            return ext
    return "".join(vcf.suffixes[-2:])


def is_bgzf(path: Path) -> bool:
    """Whether ``path`` starts with a BGZF block (a gzip member with the ``BC`` extra
    field, SAM/BAM specification 4.1): htslib indexes only those, not plain gzip."""
    with path.open("rb") as f:
        head = f.read(16)
    return head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC"


def build_index(vcf: Path, index: Path, name: Path | None = None) -> None:
    """Write a CSI index of a BGZF VCF or a BCF ``vcf`` to ``index`` with htslib's
    ``bcf_index_build3`` (the function ``bcftools index`` calls), from cyvcf2's build;
    errors name the file as ``name`` (the path the user gave)."""

    htslib = ctypes.CDLL(cyvcf2.cyvcf2.__file__)
    build = htslib.bcf_index_build3
    build.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    build.restype = ctypes.c_int
    rc = build(os.fsencode(vcf), os.fsencode(index), CSI_MIN_SHIFT, 1)
    if rc == 0:
        return
    why = {-2: "is not BGZF-compressed; fix: compress it with `bgzip` or "
               "`bcftools view -Oz -o FILE.vcf.gz FILE.vcf`",
           -3: "cannot be indexed (not a VCF or BCF?); fix: check it with `bcftools view -h`",
           -4: f"its index could not be written to {index}; fix: free disk space"}
    raise GenomicsError(f"{name or vcf}: " + why.get(rc, f"htslib could not index it (code {rc}); "
                                              "fix: check it with `bcftools index`"))


def _check_vcf(vcf: Path) -> None:
    """A file that htslib reads as a VCF/BCF."""

    if not vcf.is_file():
        raise GenomicsError(f"{vcf}: genomics.vcf: no such file; fix: correct the path")
    try:
        cyvcf2.VCF(str(vcf), lazy=True).close()
    except (OSError, ValueError) as e:
        raise GenomicsError(f"{vcf}: genomics.vcf: not a readable VCF/BCF ({e}); fix: "
                            "check it with `bcftools view -h`") from None


def _header_contigs(vcf: Path) -> set[str]:
    """The contig ids the ##contig lines of a VCF's header declare, read from the file
    (htslib adds the contigs it meets in records to its in-memory copy)."""
    declared = set()
    opener = gzip.open if vcf.name.endswith(("gz", "bgz")) else open
    with opener(vcf, "rt", encoding="utf-8", errors="replace") as text:
        for line in text:
            if not line.startswith("##"):
                break
            if line.startswith("##contig=<ID="):
                declared.add(line.removeprefix("##contig=<ID=").split(",")[0].split(">")[0])
    return declared


def _check_contigs(vcf: Path, link: Path, reference: Sequence[str] | None) -> None:
    """Every contig with records (as the index lists them) is declared by a ##contig
    header line (bio2zarr numbers contigs by the header; a BCF cannot hold records on
    undeclared contigs) and, when ``reference`` lists the reference's contigs, is one of
    them (``chr10`` and ``10`` are the same)."""

    with vcf_utils.VcfFile(link) as staged:
        used = [str(name) for name, n in staged.contig_record_counts().items() if n != 0]
    if _suffix(vcf) != ".bcf":
        declared = _header_contigs(vcf)
        unknown = [name for name in used if name not in declared]
        if unknown:
            raise GenomicsError(
                f"{vcf}: CHROM: records on contig(s) {', '.join(unknown)} that no ##contig "
                f"header line declares; fix: add ##contig=<ID={unknown[0]},length=...> lines "
                "(`bcftools reheader`) or drop those records")
    check_contigs(used, reference, str(vcf))


def _check_reference(vcf: Path, link: Path, sites: Sequence[Site]) -> None:
    """The REF of every record at a defining position of the pharmacogenes agrees with
    the definitions' (GRCh38): indexed inputs are queried at those positions only, a
    plain VCF is read through."""

    reader = cyvcf2.VCF(str(link), lazy=True)
    try:
        indexed = any(link.with_name(link.name + ext).exists() for ext in (".tbi", ".csi"))
        if not indexed:
            places = {(s.contig, s.position) for s in sites}
            check_ref(((r.CHROM, r.POS, r.REF) for r in reader
                       if (bare(r.CHROM), r.POS) in places), str(vcf), sites)
            return
        names = {bare(n): n for n in reader.seqnames}
        for site in sites:
            if site.contig not in names:
                continue
            with warnings.catch_warnings():  # cyvcf2 warns of a region without records
                warnings.simplefilter("ignore", UserWarning)
                found = list(reader(f"{names[site.contig]}:{site.position}-{site.position}"))
            check_ref(((r.CHROM, r.POS, r.REF) for r in found if site.position == r.POS),
                      str(vcf), [site])
    finally:
        reader.close()


def stage(vcfs: Sequence[Path], out: Path, reference_contigs: Sequence[str] | None = None
          ) -> Path:
    """Make ``out``'s staging folder (owner-only, any stale one removed) holding a link to
    each input and its index, building the indexes missing, after checking each input's
    contigs (declared in its header; among ``reference_contigs`` when given, e.g.
    :data:`GRCH38_CONTIGS`) and its REF alleles at the pharmacogenes' defining positions;
    returns the folder.  Nothing is left behind when a check fails."""
    if not vcfs:
        raise GenomicsError("genomics.vcf: no files listed; fix: list the VCF/BCF files")
    if out.exists():
        raise GenomicsError(f"{out}: the VCF Zarr store already exists; fix: remove it to "
                            "convert again, or declare it as genomics.zarr")
    work = staging_path(out)
    if work.exists() or work.is_symlink():
        if work.is_symlink() or not (work / STAGING_MARKER).is_file():
            raise GenomicsError(
                f"{work}: exists and is not a staging folder a conversion left (no "
                f"{STAGING_MARKER}), so it is left untouched; fix: move it away")
        shutil.rmtree(work)  # a stale one of ours: an interrupted conversion's
    out.parent.mkdir(parents=True, exist_ok=True)
    (work / INPUT).mkdir(parents=True, mode=0o700)
    work.chmod(0o700)
    (work / STAGING_MARKER).touch(mode=0o600)
    try:
        sites = defining_sites()
        for i, vcf in enumerate(Path(v).absolute() for v in vcfs):
            _check_vcf(vcf)
            link = work / INPUT / f"{i:05d}{_suffix(vcf)}"
            link.symlink_to(vcf)
            present = [vcf.with_name(vcf.name + ext) for ext in (".tbi", ".csi")]
            existing = [p for p in present if p.is_file()]
            if existing:
                link.with_name(link.name + existing[0].suffix).symlink_to(existing[0])
            elif _suffix(vcf) != ".vcf":  # plain VCF: single contig, read unindexed
                if _suffix(vcf) != ".bcf" and not is_bgzf(vcf):
                    raise GenomicsError(
                        f"{vcf}: is not BGZF-compressed (plain gzip cannot be indexed, so "
                        "not split by contig); fix: compress it with `bgzip` or `bcftools "
                        "view -Oz`, or index it (`bcftools index`) if it is BGZF")
                build_index(link, link.with_name(link.name + ".csi"), vcf)
            _check_contigs(vcf, link, reference_contigs)
            _check_reference(vcf, link, sites)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return work


def _inputs(work: Path) -> list[Path]:
    """The staged inputs, in the order they were listed."""
    return sorted(p for p in (work / INPUT).iterdir() if not p.name.endswith((".tbi", ".csi")))


def explode_init(work: Path, partitions: int) -> int:
    """Scan the staged VCFs and plan about ``partitions`` explode partitions; returns
    how many there are (each is one :func:`explode_partition` call)."""

    try:
        summary = b2z.explode_init(work / ICF, _inputs(work),
                                   target_num_partitions=max(1, partitions))
    except ValueError as e:
        raise GenomicsError(f"genomics.vcf: the VCFs cannot be combined ({e}); fix: give "
                            "files with the same samples and contig definitions") from None
    return int(summary.num_partitions)


def explode_partition(work: Path, partition: int) -> None:
    """Parse one explode partition (a region of one VCF) into the ICF."""

    b2z.explode_partition(work / ICF, partition)


def explode_finalise(work: Path) -> None:
    """Join the exploded partitions into one ICF."""

    b2z.explode_finalise(work / ICF)


def encode_init(work: Path, partitions: int, variants_chunk_size: int | None = None,
                samples_chunk_size: int | None = None) -> int:
    """Create the Zarr arrays (chunks of ``variants_chunk_size`` × ``samples_chunk_size``,
    bio2zarr's defaults when None) and plan about ``partitions`` encode partitions;
    returns how many there are."""

    summary = b2z.encode_init(work / ICF, work / VCZ, max(1, partitions),
                              variants_chunk_size=variants_chunk_size,
                              samples_chunk_size=samples_chunk_size)
    return int(summary.num_partitions)


def encode_partition(work: Path, partition: int) -> None:
    """Write one encode partition (a run of variant chunks) of every array."""

    b2z.encode_partition(work / VCZ, partition)


def encode_finalise(work: Path) -> None:
    """Join the encoded partitions and add the region index."""

    b2z.encode_finalise(work / VCZ)
    b2z.create_index(work / VCZ)


def publish(work: Path, out: Path) -> Path:
    """Rename the finished store into place (owner-only) and remove the staging folder."""
    store = work / VCZ
    store.chmod(0o700)
    store.replace(out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def convert_vcf(vcfs: Sequence[Path], out: Path, *, partitions: int = 1,
                variants_chunk_size: int | None = None,
                samples_chunk_size: int | None = None,
                reference_contigs: Sequence[str] | None = None) -> Path:
    """Convert ``vcfs`` (BGZF VCF or BCF, indexed or not; same samples) into the VCF Zarr
    store ``out``, running every partition here in turn; nothing at ``out`` unless all
    of it succeeded.  A workflow runs the same steps as separate jobs instead."""
    out = Path(out)
    work = stage([Path(v) for v in vcfs], out, reference_contigs)
    try:
        for i in range(explode_init(work, partitions)):
            explode_partition(work, i)
        explode_finalise(work)
        for i in range(encode_init(work, partitions, variants_chunk_size,
                                   samples_chunk_size)):
            encode_partition(work, i)
        encode_finalise(work)
        return publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
