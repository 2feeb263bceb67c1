"""Benchmark genotypes: VCF → VCF Zarr conversion, and joining dosages to a cohort.

(a) conversion: a synthetic BGZF VCF (``--samples`` × ``--variants``, biallelic SNVs on four
contigs, phased genotypes with allele frequencies from Beta(0.5, 2)) is converted with
:mod:`cohortflow.genomics` step by step, as the workflow runs it: ``stage`` (CSI index),
``explode_init``, the explode partitions, ``explode_finalise``, ``encode_init``, the encode
partitions, ``encode_finalise``, ``publish``.  Once with every partition run in turn by one
worker process, once with the partitions spread over ``--workers`` processes running at
the same time (as separate Snakemake jobs would); the speed-up is measured in the same run,
and both stores must hold the same genotypes.

(b) joining: a VCF Zarr store of ``--join-samples`` × ``--join-variants`` (call_genotype
int8 variants × samples × 2, chunks ``--chunk`` × ``--chunk`` × 2, Blosc zstd bitshuffle
as bio2zarr writes it but at level 1, rare-variant frequencies from Beta(0.3, 3)) is written
directly with zarr; a
cohort of ``--persons`` persons (a fifth without genotypes) is linked through a sample →
person table, and the dosages of ``--dosage-variants`` variants spread over the genome are
read for it, each way in its own process: ``genomics.read_dosages`` (one chunk at a time)
and xarray/dask ``isel`` on the opened store.  Peak RSS is printed against a decoded
chunk's bytes and the store's bytes.

    python benchmarks/bench_genomics.py                  # both, the sizes above
    python benchmarks/bench_genomics.py --only convert --samples 500 --variants 5000

Everything is written under a temporary folder in ``--tmp`` (default /tmp) and removed at
the end (``--keep`` to keep it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._measure import SRC, run_child

sys.path.insert(0, str(SRC))

CONTIGS = ("chr2", "chr3", "chr4", "chr5")  # no pharmacogene there: REF is free to draw


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}


# --------------------------------------------------------------------------- (a) convert

def write_vcf(path: Path, samples: int, variants: int, seed: int = 0) -> int:
    """A phased biallelic SNV VCF (VCF 4.3, BGZF via synth's writer); returns its bytes."""
    from cohortflow.synth._genotypes import Bgzf

    rng = np.random.default_rng(seed)
    per = -(-variants // len(CONTIGS))
    codes = np.array([b"0|0\t", b"0|1\t", b"1|0\t", b"1|1\t"], dtype="S4")
    acgt = np.array(list("ACGT"))
    names = [f"S{i:07d}" for i in range(samples)]
    with path.open("wb") as raw, io.BufferedWriter(Bgzf(raw), 1 << 22) as f:
        f.write(b"##fileformat=VCFv4.3\n##source=bench_genomics\n")
        f.write("".join(f"##contig=<ID={c},length=200000000>\n" for c in CONTIGS).encode())
        f.write(b'##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        f.write(("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO",
                            "FORMAT", *names]) + "\n").encode())
        done = 0
        for contig in CONTIGS:
            n = min(per, variants - done)
            for start in range(0, n, 500):
                k = min(500, n - start)
                freq = rng.beta(0.5, 2.0, k)
                calls = rng.random((k, samples, 2), dtype=np.float32) < freq[:, None, None]
                gts = codes[2 * calls[..., 0] + calls[..., 1]]
                ref = rng.integers(0, 4, k)
                alt = (ref + rng.integers(1, 4, k)) % 4
                for j in range(k):
                    pos = 1000 + 100 * (start + j)
                    line = f"{contig}\t{pos}\t.\t{acgt[ref[j]]}\t{acgt[alt[j]]}\t.\tPASS\t.\tGT\t"
                    f.write(line.encode() + gts[j].tobytes()[:-1] + b"\n")
            done += n
    return path.stat().st_size


WORKER = """
import sys
from pathlib import Path
from cohortflow import genomics
step, work = getattr(genomics, sys.argv[1]), Path(sys.argv[2])
for partition in sys.argv[3:]:
    step(work, int(partition))
"""


def _run_partitions(step: str, work: Path, partitions: int, workers: int) -> float:
    """Every partition of ``step``, round-robin over ``workers`` processes run at once;
    returns the CPU seconds (user + system) the processes used."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, step, str(work),
                               *map(str, range(w, partitions, workers))], env=_env())
             for w in range(min(workers, partitions))]
    cpu = 0.0
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            sys.exit(f"{step} failed: {p.args}")
        cpu += usage.ru_utime + usage.ru_stime
    return cpu


def convert(vcf: Path, out: Path, workers: int) -> dict[str, float]:
    """Convert ``vcf`` into ``out`` step by step, the partitions over ``workers``
    processes (target: ``workers`` partitions each pass, at least 4 for the explode);
    seconds per phase."""
    from cohortflow import genomics

    times: dict[str, float] = {}
    t, c = time.perf_counter(), time.process_time()
    work = genomics.stage([vcf], out)
    times["stage"] = time.perf_counter() - t
    t = time.perf_counter()
    n = genomics.explode_init(work, max(workers, 1))
    cpu = _run_partitions("explode_partition", work, n, workers)
    genomics.explode_finalise(work)
    times["explode"], times["explode_partitions"] = time.perf_counter() - t, n
    t = time.perf_counter()
    n = genomics.encode_init(work, max(workers, 1))
    cpu += _run_partitions("encode_partition", work, n, workers)
    genomics.encode_finalise(work)
    genomics.publish(work, out)
    times["encode"], times["encode_partitions"] = time.perf_counter() - t, n
    times["total"] = times["stage"] + times["explode"] + times["encode"]
    times["cpu"] = cpu + time.process_time() - c
    return times


def bench_convert(root: Path, samples: int, variants: int, workers: int) -> None:
    import zarr

    vcf = root / "cohort.vcf.gz"
    t = time.perf_counter()
    size = write_vcf(vcf, samples, variants)
    print(f"\n(a) VCF -> VCF Zarr: {samples:,} samples x {variants:,} variants "
          f"({size / 2**20:,.1f} MiB BGZF VCF, written in {time.perf_counter() - t:.1f} s); "
          f"{os.cpu_count()} cores")
    rows = [(1, convert(vcf, root / "one.vcz", 1)), (workers, convert(vcf, root / "par.vcz",
                                                                      workers))]
    a = zarr.open_array(root / "one.vcz" / "call_genotype", mode="r")
    b = zarr.open_array(root / "par.vcz" / "call_genotype", mode="r")
    same = a.shape == b.shape == (variants, samples, 2) and all(
        np.array_equal(a[i:i + 2000], b[i:i + 2000]) for i in range(0, variants, 2000))
    cells = samples * variants
    print(f"{'workers':>7} {'partitions (explode/encode)':>28} {'stage s':>8} {'explode s':>10} "
          f"{'encode s':>9} {'total s':>8} {'CPU s':>7} {'genotypes/s':>12} "
          f"{'per CPU s':>10}")
    for w, r in rows:
        parts = f"{int(r['explode_partitions'])}/{int(r['encode_partitions'])}"
        print(f"{w:>7} {parts:>28} {r['stage']:>8.1f} {r['explode']:>10.1f} "
              f"{r['encode']:>9.1f} {r['total']:>8.1f} {r['cpu']:>7.1f} "
              f"{cells / r['total']:>12,.0f} {cells / r['cpu']:>10,.0f}")
    one, par = rows[0][1], rows[1][1]
    print(f"speed-up with {workers} processes: explode {one['explode'] / par['explode']:.2f}x, "
          f"encode {one['encode'] / par['encode']:.2f}x, total {one['total'] / par['total']:.2f}x;"
          f" stores identical: {same}")
    store = sum(p.stat().st_size for p in (root / "one.vcz").rglob("*") if p.is_file())
    print(f"store {store / 2**20:,.1f} MiB; genotypes/s: samples x variants / total wall s; "
          "per CPU s: / CPU seconds of every process of the conversion; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end (other work on the "
          "machine takes cores from the workers)")


# --------------------------------------------------------------------------- (b) join

WRITE_CHUNKS = """
import json, sys
import numpy as np, zarr
path, seed, first, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
array = zarr.open_array(path, mode="r+")
cv, cs = array.chunks[0], array.chunks[1]
nv, ns = -(-array.shape[0] // cv), -(-array.shape[1] // cs)
freq = np.load(path + ".freq.npy")
for k in range(first, nv * ns, step):
    i, j = divmod(k, ns)
    rng = np.random.default_rng([seed, i, j])
    v0, v1 = i * cv, min((i + 1) * cv, array.shape[0])
    s0, s1 = j * cs, min((j + 1) * cs, array.shape[1])
    block = np.empty((v1 - v0, s1 - s0, 2), dtype=np.int8)
    level = np.round(freq * 256).astype(np.uint16)  # P(byte < level) = freq, to 1/256
    for a in range(0, v1 - v0, 500):
        f = level[v0 + a:min(v0 + a + 500, v1)]
        u = np.frombuffer(rng.bytes(f.size * (s1 - s0) * 2), np.uint8).reshape(f.size, -1, 2)
        block[a:a + f.size] = u < f[:, None, None]
    array[v0:v1, s0:s1] = block
print(json.dumps({"ok": 1}))
"""


def write_store(path: Path, samples: int, variants: int, chunk: int, workers: int,
                seed: int = 1) -> None:
    """A VCF Zarr store (Zarr format 2, the variables genomics.open_genotypes needs)."""
    import numcodecs
    import zarr

    # bio2zarr's codec at level 1, not 7: level 7 takes ten times longer to write these
    # 100 chunks and decodes at the same speed, to about the same size
    blosc = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.BITSHUFFLE)
    root = zarr.open_group(path, mode="w", zarr_format=2)

    def array(name: str, data: np.ndarray | None, dims: list[str], **kw: object) -> None:
        extra = {"data": data} if data is not None else {}
        a = root.create_array(name, compressors=blosc, **extra, **kw)  # type: ignore[arg-type]
        a.attrs["_ARRAY_DIMENSIONS"] = dims

    rng = np.random.default_rng(seed)
    array("sample_id", np.array([f"P{i:07d}" for i in range(samples)]), ["samples"],
          chunks=(chunk,))
    array("contig_id", np.array(["chr2"]), ["contigs"])
    array("variant_contig", np.zeros(variants, dtype=np.int8), ["variants"], chunks=(chunk,))
    array("variant_position", (1000 + 100 * np.arange(variants)).astype(np.int32),
          ["variants"], chunks=(chunk,))
    acgt = np.array(list("ACGT"))
    ref = rng.integers(0, 4, variants)
    array("variant_allele", np.stack([acgt[ref], acgt[(ref + 1) % 4]], axis=1),
          ["variants", "alleles"], chunks=(chunk, 2))
    array("call_genotype", None, ["variants", "samples", "ploidy"], shape=(variants, samples, 2),
          chunks=(chunk, chunk, 2), dtype="i1", fill_value=None)
    np.save(str(path / "call_genotype") + ".freq.npy", rng.beta(0.3, 3.0, variants))
    procs = [subprocess.Popen([sys.executable, "-c", WRITE_CHUNKS, str(path / "call_genotype"),
                               str(seed), str(w), str(workers)], env=_env(),
                              stdout=subprocess.DEVNULL) for w in range(workers)]
    if any(p.wait() != 0 for p in procs):
        sys.exit("writing the store failed")
    (path / "call_genotype.freq.npy").unlink()


JOIN = """
import json, resource, sys, time
from pathlib import Path
import numpy as np, polars as pl
from cohortflow import genomics
store, linkage, cohort, variants, how = (Path(sys.argv[1]), Path(sys.argv[2]),
                                         Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
def hwm():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
ds = genomics.open_genotypes(store)
table = genomics.read_linkage(linkage)
linked = genomics.link_samples(table, ds["sample_id"].values.tolist(), linkage)
persons = pl.read_parquet(cohort)["person_id"]
at = (persons.to_frame().join(linked.with_row_index("column"), on="person_id", how="left",
                              maintain_order="left")["column"])
has = at.is_not_null().to_numpy()
columns = at.drop_nulls().to_numpy().astype(np.int64)
rows = np.load(variants)
opened, base = time.perf_counter() - t, hwm()
t = time.perf_counter()
if how == "chunks":
    got = genomics.read_dosages(store, rows, columns)
else:
    calls = ds["call_genotype"].isel(variants=rows, samples=columns).values
    got = (calls > 0).sum(axis=2).astype(np.float32).T
    got[(calls < 0).any(axis=2).T] = np.nan
dosage = np.full((len(persons), len(rows)), np.nan, dtype=np.float32)
dosage[has] = got
wall = time.perf_counter() - t
np.save(Path(sys.argv[6]), dosage)
print(json.dumps({"open_s": opened, "read_s": wall, "base_mib": base, "peak_mib": hwm(),
                  "persons": int(len(persons)), "genotyped": int(has.sum())}))
"""


def bench_join(root: Path, samples: int, variants: int, chunk: int, persons: int,
               dosage_variants: int, workers: int) -> None:
    import polars as pl

    store = root / "join.vcz"
    t = time.perf_counter()
    write_store(store, samples, variants, chunk, workers)
    written = time.perf_counter() - t
    disk = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    rng = np.random.default_rng(2)
    ids = rng.permutation(samples) + 1_000_000  # person ids are not sample positions
    pl.DataFrame({"sample_id": [f"P{i:07d}" for i in range(samples)], "person_id": ids}
                 ).write_csv(root / "linkage.csv")
    genotyped = rng.choice(ids, persons - persons // 5, replace=False)
    cohort = np.r_[genotyped, np.arange(persons // 5) + 5_000_000]  # a fifth not genotyped
    pl.DataFrame({"person_id": rng.permutation(cohort)}).write_parquet(root / "cohort.parquet")
    np.save(root / "variants.npy", np.sort(rng.choice(variants, dosage_variants,
                                                      replace=False)))
    chunk_bytes = chunk * chunk * 2
    print(f"\n(b) dosages for a cohort from a VCF Zarr store of {samples:,} samples x "
          f"{variants:,} variants (written in {written:.0f} s): call_genotype "
          f"{variants * samples * 2 / 2**30:,.1f} GiB decoded, {disk / 2**30:,.2f} GiB on disk, "
          f"chunks {chunk:,} x {chunk:,} x 2 = {chunk_bytes / 2**20:,.0f} MiB decoded")
    print(f"cohort: {persons:,} persons ({persons - persons // 5:,} genotyped) x "
          f"{dosage_variants:,} variants spread over all "
          f"{-(-variants // chunk) * -(-samples // chunk)} chunks")
    print(f"{'reader':>26} {'open s':>7} {'read s':>7} {'RSS before MiB':>15} "
          f"{'peak RSS MiB':>13} {'peak - before':>14} {'/ chunk':>8} {'/ store':>8}")
    results = {}
    for how, name in (("chunks", "genomics.read_dosages"), ("xarray", "xarray isel (dask)")):
        r = run_child(JOIN, store, root / "linkage.csv", root / "cohort.parquet",
                      root / "variants.npy", how, root / f"{how}.npy")
        results[how] = np.load(root / f"{how}.npy")
        grown = (r["peak_mib"] - r["base_mib"]) * 2**20
        print(f"{name:>26} {r['open_s']:>7.1f} {r['read_s']:>7.1f} {r['base_mib']:>15,.0f} "
              f"{r['peak_mib']:>13,.0f} {grown / 2**20:>14,.0f} {grown / chunk_bytes:>8.2f} "
              f"{grown / (variants * samples * 2):>8.3f}")
    same = np.array_equal(results["chunks"], results["xarray"], equal_nan=True)
    print(f"both readers give the same dosages: {same}; NaN rows (not genotyped): "
          f"{int(np.isnan(results['chunks']).all(axis=1).sum()):,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["convert", "join"])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--variants", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--join-samples", type=int, default=100_000)
    parser.add_argument("--join-variants", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--persons", type=int, default=5000)
    parser.add_argument("--dosage-variants", type=int, default=200)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    free = shutil.disk_usage(args.tmp).free
    print(f"{args.tmp}: {free / 2**30:,.1f} GiB free; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    root = Path(tempfile.mkdtemp(prefix="bench_genomics_", dir=args.tmp))
    try:
        if args.only in (None, "convert"):
            bench_convert(root, args.samples, args.variants, args.workers)
        if args.only in (None, "join"):
            bench_join(root, args.join_samples, args.join_variants, args.chunk, args.persons,
                       args.dosage_variants, args.workers)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"removed": not args.keep}))


if __name__ == "__main__":
    main()
