"""Reading a VCF Zarr store with zarr/xarray directly (sgkit pins zarr < 3), checked once
for the variables cohortflow uses so a corrupt or foreign store fails here, clearly."""

from __future__ import annotations

from pathlib import Path

import xarray as xr
import zarr

from cohortflow.genomics._convert import GenomicsError

REQUIRED = ("contig_id", "variant_contig", "variant_position", "variant_allele",
            "call_genotype", "sample_id")
"""VCF Zarr variables (VCF Zarr spec 0.4) the project reads; ``call_genotype_phased`` and
``call_genotype_mask`` are used when present."""

_FIX = ("fix: convert the VCF again (remove the store; genomics.vcf), or point "
        "genomics.zarr at a VCF Zarr store (`vcf2zarr convert`)")


def open_genotypes(path: Path) -> xr.Dataset:
    """The VCF Zarr store at ``path`` as a lazy Dataset (genotypes stay on disk, read by
    chunk), after checking its variables and their shapes agree."""
    path = Path(path)
    if not path.is_dir():
        raise GenomicsError(f"{path}: genomics.zarr: no VCF Zarr store here; {_FIX}")
    try:
        names = set(zarr.open_group(path, mode="r").array_keys())
        missing = [name for name in REQUIRED if name not in names]
        if missing:
            raise GenomicsError(f"{path}: not a VCF Zarr store: no {', '.join(missing)} "
                                f"variable(s); {_FIX}")
        ds: xr.Dataset = xr.open_zarr(path, consolidated=False, concat_characters=False)
        for name in ("sample_id", "contig_id", "variant_position", "variant_contig"):
            ds[name].load()  # small: reading them now finds a corrupt store early
    except GenomicsError:
        raise
    except Exception as e:  # zarr and the codecs raise many kinds for a damaged store
        raise GenomicsError(f"{path}: unreadable VCF Zarr store ({type(e).__name__}: "
                            f"{e}); {_FIX}") from None
    call = ds["call_genotype"]
    n_variants, n_samples = ds.sizes.get("variants", -1), ds.sizes.get("samples", -1)
    if call.dims[:2] != ("variants", "samples") or call.ndim != 3:
        raise GenomicsError(f"{path}: call_genotype has dimensions {call.dims}; expected "
                            f"(variants, samples, ploidy); {_FIX}")
    if (ds["variant_position"].shape != (n_variants,)
            or ds["sample_id"].shape != (n_samples,)):
        raise GenomicsError(f"{path}: variant_position/sample_id do not match "
                            f"call_genotype's {n_variants} variants × {n_samples} samples; "
                            f"{_FIX}")
    return ds
