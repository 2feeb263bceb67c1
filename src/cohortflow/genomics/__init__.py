"""Genotypes of a study (``genomics:``): VCF/BCF files converted once into a VCF Zarr
store with bio2zarr (:func:`convert_vcf`, in partitions a workflow can run as separate
jobs), read back with zarr/xarray (:func:`open_genotypes`), and linked to persons by a
sample → person table (:func:`read_linkage`).  Genotypes stay in Zarr, chunked by
variants × samples; they never enter the event store.  Omics matrices (samples × features,
plain Zarr or AnnData) are read as person × feature blocks by :func:`open_omics` and
:func:`omics_block`."""

from cohortflow.genomics._convert import (
    build_index,
    convert_vcf,
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
from cohortflow.genomics._errors import GenomicsError
from cohortflow.genomics._linkage import link_samples, read_linkage
from cohortflow.genomics._omics import OmicsBlock, OmicsMatrix, omics_block, open_omics
from cohortflow.genomics._reference import GRCH38_CONTIGS
from cohortflow.genomics._store import (
    REQUIRED,
    open_genotypes,
    read_dosages,
    truncated_chunks,
)

__all__ = ["GRCH38_CONTIGS", "REQUIRED", "GenomicsError", "OmicsBlock", "OmicsMatrix",
           "build_index", "convert_vcf", "encode_finalise", "encode_init", "encode_partition",
           "explode_finalise", "explode_init", "explode_partition", "link_samples",
           "omics_block", "open_genotypes", "open_omics", "publish", "read_dosages",
           "read_linkage", "stage", "staging_path", "truncated_chunks"]
