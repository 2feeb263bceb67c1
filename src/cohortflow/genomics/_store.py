"""Reading a VCF Zarr store with zarr/xarray directly (sgkit pins zarr < 3), checked once
for the variables cohortflow uses so a corrupt or foreign store fails here, clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from cohortflow.genomics._errors import GenomicsError
from cohortflow.genomics._reference import bare, check_ref, defining_sites

REQUIRED = ("contig_id", "variant_contig", "variant_position", "variant_allele",
            "call_genotype", "sample_id")
"""VCF Zarr variables (VCF Zarr spec 0.4) the project reads; ``call_genotype_phased`` and
``call_genotype_mask`` are used when present."""

_FIX = ("fix: convert the VCF again (remove the store; genomics.vcf), or point "
        "genomics.zarr at a VCF Zarr store (`vcf2zarr convert`)")


def _blosc(array: Path) -> bool:
    """Whether the Zarr array folder ``array`` compresses its chunks with Blosc, unsharded
    (Zarr format 2 ``.zarray`` or format 3 ``zarr.json``)."""
    if (array / ".zarray").is_file():
        meta = json.loads((array / ".zarray").read_text())
        return (meta.get("compressor") or {}).get("id") == "blosc" and not meta.get("filters")
    if (array / "zarr.json").is_file():
        codecs = [c.get("name") for c in json.loads((array / "zarr.json").read_text())
                  .get("codecs", [])]
        return codecs[-1:] == ["blosc"] and "sharding_indexed" not in codecs
    return False


def truncated_chunks(array: Path) -> list[str]:
    """The chunk files of a Blosc-compressed array shorter or longer than the compressed
    size their own 16-byte Blosc header records (bytes 12-15): a copy cut short or a
    write interrupted.  Reads 16 bytes a chunk, so the whole call matrix is checked
    without decompressing it; other compressors are not checked (empty list)."""
    if not _blosc(array):
        return []
    bad = []
    for chunk in sorted(p for p in array.rglob("*") if p.is_file()
                        and p.name not in (".zarray", ".zattrs", "zarr.json")):
        with chunk.open("rb") as f:
            head = f.read(16)
        size = chunk.stat().st_size
        if len(head) < 16 or int.from_bytes(head[12:16], "little") != size:
            bad.append(chunk.relative_to(array).as_posix())
    return bad


def _check_reference(ds: xr.Dataset, path: Path) -> None:
    """REF alleles at the pharmacogenes' defining positions agree with GRCh38's."""
    sites = defining_sites()
    contigs = [str(c) for c in np.asarray(ds["contig_id"].values).tolist()]
    places = {(s.contig, s.position) for s in sites}
    position = np.asarray(ds["variant_position"].values, dtype=np.int64)
    contig = np.asarray(ds["variant_contig"].values, dtype=np.int64)
    rows = [i for i in np.flatnonzero(np.isin(position, [s.position for s in sites])).tolist()
            if (bare(contigs[contig[i]]), int(position[i])) in places]
    if not rows:
        return
    alleles = np.asarray(ds["variant_allele"].isel(variants=rows).values)
    check_ref(((contigs[contig[i]], int(position[i]), str(a[0]))
               for i, a in zip(rows, alleles, strict=True)), f"{path}", sites)


def open_genotypes(path: Path, check_reference: bool = True) -> xr.Dataset:
    """The VCF Zarr store at ``path`` as a lazy Dataset (genotypes stay on disk, read by
    chunk), after checking its variables and their shapes agree, that no chunk of
    ``call_genotype`` is truncated (:func:`truncated_chunks`) and, unless
    ``check_reference`` is false, that its REF alleles at the pharmacogenes' defining
    positions are GRCh38's."""
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
    cut = truncated_chunks(path / "call_genotype")
    if cut:
        raise GenomicsError(f"{path}: call_genotype: chunk(s) {', '.join(cut[:3])} "
                            f"truncated ({len(cut)} in all; their size is not the size their "
                            f"Blosc header records); {_FIX}")
    if check_reference:
        _check_reference(ds, path)
    return ds


def _blocks(index: np.ndarray, size: int) -> list[tuple[int, np.ndarray]]:
    """Positions in ``index`` grouped by the chunk (of ``size`` rows) each falls in.

    >>> [(c, p.tolist()) for c, p in _blocks(np.array([5, 1, 12, 3]), 4)]
    [(0, [1, 3]), (1, [0]), (3, [2])]
    """
    chunk = np.asarray(index, dtype=np.int64) // size
    return [(int(c), np.flatnonzero(chunk == c)) for c in np.unique(chunk)]


def read_dosages(path: Path, variants: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Alternate-allele dosages (copies of any ALT, float32; NaN where a call is missing)
    of store rows ``variants`` for store columns ``samples``: samples × variants, in the
    order given.  Read one ``call_genotype`` chunk at a time (only the chunks holding a
    requested pair), so memory holds one decoded chunk and the result, whatever the size
    of the store."""
    array = zarr.open_array(Path(path) / "call_genotype", mode="r")
    v_size, s_size = int(array.chunks[0]), int(array.chunks[1])
    variants = np.asarray(variants, dtype=np.int64)
    samples = np.asarray(samples, dtype=np.int64)
    out = np.empty((len(samples), len(variants)), dtype=np.float32)
    for _, vi in _blocks(variants, v_size):
        for _, si in _blocks(samples, s_size):
            try:
                calls = np.asarray(array.get_orthogonal_selection(
                    (variants[vi], samples[si], slice(None))))
            except Exception as e:  # a damaged chunk
                raise GenomicsError(f"{path}: call_genotype: unreadable chunk "
                                    f"({type(e).__name__}: {e}); {_FIX}") from None
            dosage = (calls > 0).sum(axis=2, dtype=np.int8).astype(np.float32)
            dosage[(calls < 0).any(axis=2)] = np.nan
            out[np.ix_(si, vi)] = dosage.T
    return out
