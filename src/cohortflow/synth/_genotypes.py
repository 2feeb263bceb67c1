"""Planted genotypes (``genotypes: {share, background_variants}``, demo preset): a VCF of
pharmacogene and background variants for a share of the persons, and a gene x drug
interaction on an outcome.

Every person has a latent diplotype at each gene of ``seeds/pgx`` (two haplotypes, each one
allele drawn from :data:`FREQUENCIES`); ``genotypes/cohort.vcf.gz`` (VCF 4.3, BGZF, records
sorted by GRCh38 contig and position) holds the genotypes of the persons drawn for
genotyping (about ``share``), under sample ids that are not person ids, and
``genotypes/linkage.csv`` maps them back.  Each haplotype is one allele definition of the
seeds, written phased, so :func:`cohortflow.pgx.call_phenotypes` on the VCF gives exactly the
diplotypes and phenotypes the generator assigned (``genotypes/truth.csv``).

Background: ``background_variants`` SNVs uniform over the GRCh38 autosomes (none within
:data:`CLEAR_BP` of a defining site), with alternate allele frequencies from
Beta(:data:`BETA`) and random REF/ALT bases (not the reference genome's), drawn
independently per haplotype.

The interaction: about ``exposed_share`` of the persons whose first observation period is
longer than :data:`WINDOW_DAYS` get escitalopram (a CYP2C19 substrate; CPIC 2023 SSRI
guideline) once, on a uniform day of that period at least :data:`WINDOW_DAYS` before its end;
within :data:`WINDOW_DAYS` days after it, an adverse drug reaction (a local condition concept)
follows with probability :data:`RATES` ``["poor_metabolizer"]`` for CYP2C19 Poor
Metabolizers and ``["other"]`` for everyone else, whether genotyped or not; with
``effect: graded`` (off by default), with probability :data:`GRADED_RATES` of the person's
CYP2C19 phenotype instead (poor highest, intermediate raised, rapid and ultrarapid lowered).
``oracle.json`` records the concepts, the rates and the exposed persons by genotype group
with their observed event rates.

Randomness: per block of :data:`BLOCK_PERSONS` person ids, streams
``default_rng([seed, TAG, stream, block])`` (the sites: ``[seed, TAG, SITES]``), never the
generator's own, so everything depends on the seed and the person id only, not on
``chunk_persons``, and no other row changes.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa

from cohortflow.errors import CohortflowError
from cohortflow.pgx import GeneDefinition, diplotype_call, load_definitions
from cohortflow.synth import vocab as V  # noqa: N812
from cohortflow.synth._plant_rows import DAY_US, days, insert_rows, ints, new_ids, sort_key
from cohortflow.synth._tables import table_of

TAG = 0x4745  # keeps the genotype streams apart from every other
BLOCK_PERSONS = 1000
GENOTYPED, HAPLOTYPES, EXPOSURE, BACKGROUND, SITES = 0, 1, 2, 3, 4  # stream numbers
VARIANT_BATCH = 500  # background variants drawn per stream (a constant: the data depend on it)
ESCITALOPRAM, ADVERSE_REACTION = 715939, 2_000_000_030
CONCEPTS = (
    (ESCITALOPRAM, "escitalopram", "Drug", "RxNorm", "Ingredient", "S", "321988"),
    (ADVERSE_REACTION, "Adverse drug reaction (planted)", "Condition", V.LOCAL,
     "Clinical Finding", "S", "CFS-C0030"),
)
ANCESTORS = ((ESCITALOPRAM, ESCITALOPRAM, 0, 0), (ADVERSE_REACTION, ADVERSE_REACTION, 0, 0))
WINDOW_DAYS = 90
DAYS_SUPPLY = 30
RATES = {"poor_metabolizer": 0.30, "other": 0.05}
POOR = "Poor Metabolizer"
# effect "graded": the adverse reaction's rate by CYP2C19 phenotype.  CPIC's 2023 SSRI
# guideline has escitalopram exposure raised in poor metabolisers (consider a 50% lower
# dose), somewhat raised in intermediate ones and lowered in rapid and ultrarapid ones; the
# rates follow that order (likely phenotypes as their phenotype; indeterminate as normal).
GRADED_RATES = {
    "Ultrarapid Metabolizer": 0.02, "Rapid Metabolizer": 0.03, "Normal Metabolizer": 0.05,
    "Likely Intermediate Metabolizer": 0.12, "Intermediate Metabolizer": 0.12,
    "Likely Poor Metabolizer": 0.30, "Poor Metabolizer": 0.30, "Indeterminate": 0.05,
}
EFFECTS = ("poor_only", "graded")
BETA = (0.5, 2.0)
CLEAR_BP = 50
BGZF_BLOCK = 65_280  # uncompressed bytes per BGZF block, as htslib writes them

# Allele frequencies per haplotype in Europeans (the reference allele takes the rest): the
# European column of the CPIC allele frequency tables (ClinPGx/PharmGKB "<GENE> frequency
# table" files), rounded, as recalled when this was written and not re-checked against those
# files (the seeds carry no frequencies): e.g. CYP2C19 *2 0.147 and *17 0.215, CYP2C9 *2
# 0.127 and *3 0.076, TPMT *3A 0.034, DPYD HapB3 0.024 and *2A 0.006.  SLCO1B1 haplotypes
# are split so that c.388A>G (rs2306283) is about 0.40, c.521T>C (rs4149056) 0.155 and
# c.463C>A (rs11045819) 0.16, as in Europeans.  Alleles near zero in Europeans get 0.001
# so that they occur at all.  Realistic enough for synthetic data, not a reference.
FREQUENCIES: dict[str, dict[str, float]] = {
    "CYP2C19": {"*2": 0.147, "*3": 0.002, "*4": 0.002, "*5": 0.001, "*6": 0.001,
                "*7": 0.001, "*8": 0.003, "*9": 0.001, "*10": 0.001, "*17": 0.215},
    "CYP2C9": {"*2": 0.127, "*3": 0.076, "*5": 0.001, "*6": 0.001, "*8": 0.002, "*11": 0.002},
    "SLCO1B1": {"*4": 0.02, "*5": 0.015, "*9": 0.001, "*14": 0.14, "*15": 0.14,
                "*19": 0.01, "*20": 0.03, "*37": 0.09},
    "TPMT": {"*2": 0.002, "*3A": 0.034, "*3B": 0.001, "*3C": 0.005, "*4": 0.001},
    "NUDT15": {"*2": 0.001, "*3": 0.002, "*6": 0.001},
    "DPYD": {"c.2846A>T": 0.004, "c.1905+1G>A (*2A)": 0.006, "c.1679T>G (*13)": 0.001,
             "c.1129-5923C>G, c.1236G>A (HapB3)": 0.024, "c.1129-5923C>G": 0.001,
             "c.557A>G": 0.001, "c.85T>C (*9A)": 0.2},
}

# GRCh38 autosome lengths (the ##contig lines)
CONTIGS = {f"chr{i}": n for i, n in enumerate((
    248956422, 242193529, 198295559, 190214555, 181538259, 170805979, 159345973, 145138636,
    138394717, 133797422, 135086622, 133275309, 114364328, 107043718, 101991189, 90338345,
    83257441, 80373285, 58617616, 64444167, 46709983, 50818468), start=1)}


@dataclass(frozen=True)
class Genotypes:
    """The settings: ``share`` of persons genotyped, ``background_variants`` SNVs, and the
    ``exposed_share`` of eligible persons given the substrate drug."""

    share: float = 0.3
    background_variants: int = 2000
    exposed_share: float = 0.3
    effect: str = "poor_only"

    @classmethod
    def of(cls, value: Genotypes | Mapping[str, Any] | None) -> Genotypes | None:
        """The settings from a mapping (checked), or ``None``."""
        if value is None or isinstance(value, Genotypes):
            return value
        if not isinstance(value, Mapping):
            raise CohortflowError(f"genotypes must be a mapping, got {value!r}; "
                                  "fix: genotypes: {share: 0.3, background_variants: 2000}")
        unknown = sorted(set(value) - {"share", "background_variants", "exposed_share",
                                       "effect"})
        if unknown:
            raise CohortflowError(f"genotypes: unknown field(s) {unknown}; expected share, "
                                  "background_variants, exposed_share, effect")
        out = cls(**{k: v for k, v in value.items() if v is not None})
        for name in ("share", "exposed_share"):
            x = getattr(out, name)
            if isinstance(x, bool) or not isinstance(x, int | float) or not 0 < x <= 1:
                raise CohortflowError(f"genotypes.{name} must be in (0, 1], got {x!r}; "
                                      f"fix: {name}: 0.3")
        n = out.background_variants
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 1_000_000:
            raise CohortflowError(f"genotypes.background_variants must be an integer in "
                                  f"[0, 1000000], got {n!r}; fix: background_variants: 2000")
        if out.effect not in EFFECTS:
            raise CohortflowError(f"genotypes.effect must be one of {list(EFFECTS)}, got "
                                  f"{out.effect!r}; fix: effect: graded")
        return out

    def settings(self) -> dict[str, object]:
        """For ``synth.json`` (the effect only when not the default, so that the files of
        runs made before it stay the same)."""
        out: dict[str, object] = {"share": self.share,
                                  "background_variants": self.background_variants,
                                  "exposed_share": self.exposed_share}
        if self.effect != "poor_only":
            out["effect"] = self.effect
        return out

    def rates(self) -> dict[str, float]:
        """The adverse reaction's rate by CYP2C19 CPIC phenotype."""
        if self.effect == "graded":
            return dict(GRADED_RATES)
        return {p: RATES["poor_metabolizer"] if p == POOR else RATES["other"]
                for p in GRADED_RATES}


def uniforms(seed: int, stream: int, person_id: np.ndarray, k: int) -> np.ndarray:
    """``k`` uniforms per person (shape ``k`` x persons) of ``stream``: a function of
    ``(seed, stream, person_id)`` only.

    >>> a = uniforms(3, 2, np.arange(1, 2501), 2)
    >>> bool((a[:, 1000:1500] == uniforms(3, 2, np.arange(1001, 1501), 2)).all())
    True
    """
    slot = np.asarray(person_id, np.int64) - 1
    block = slot // BLOCK_PERSONS
    u = np.empty((k, slot.size))
    for b in np.unique(block):
        here = block == b
        u[:, here] = np.random.default_rng([seed, TAG, stream, int(b)]).random(
            (k, BLOCK_PERSONS))[:, slot[here] % BLOCK_PERSONS]
    return u


@dataclass(frozen=True)
class _Gene:
    definition: GeneDefinition
    names: list[str]  # allele names, the reference first
    bits: np.ndarray  # the variants each allele carries (bit j: definition.variants[j])
    cumulative: np.ndarray  # upper ends of the alleles' frequency intervals


def _genes() -> list[_Gene]:
    out = []
    for name, gene in load_definitions().items():
        freq = FREQUENCIES[name]
        first: dict[str, int] = {}
        for bits, allele in sorted(gene.definitions.items(), key=lambda kv: (kv[0].bit_count(),
                                                                             kv[0])):
            first.setdefault(allele, bits)  # a sub-allele with the fewest variants
        names = [gene.reference, *freq]
        missing = [a for a in names[1:] if a not in first]
        if missing:
            raise CohortflowError(f"FREQUENCIES[{name!r}] names {missing}, not alleles of "
                                  "seeds/pgx/alleles.csv; fix: the frequency table")
        p = np.array([1.0 - sum(freq.values()), *freq.values()])
        out.append(_Gene(gene, names, np.array([0, *(first[a] for a in names[1:])], np.int64),
                         np.cumsum(p)))
    return out


def alleles(seed: int, person_id: np.ndarray, genes: list[_Gene]) -> np.ndarray:
    """Each person's allele (an index into ``names``) per gene and haplotype:
    genes x persons x 2."""
    u = uniforms(seed, HAPLOTYPES, person_id, 2 * len(genes)).reshape(len(genes), 2, -1)
    out = np.empty((len(genes), u.shape[2], 2), np.int64)
    for g, gene in enumerate(genes):
        idx = np.searchsorted(gene.cumulative, u[g].T, side="right")
        out[g] = np.minimum(idx, len(gene.names) - 1)
    return out


def _calls(gene: _Gene) -> tuple[list[list[str]], list[list[str]]]:
    """Diplotype and phenotype of each pair of allele indices, by the pgx rules."""
    dip, phe = [], []
    for a in gene.names:
        calls = [diplotype_call(gene.definition, a, b) for b in gene.names]
        dip.append([str(c.diplotype) for c in calls])
        phe.append([c.phenotype for c in calls])
    return dip, phe


def _sites(seed: int, n: int, genes: list[_Gene]) -> dict[str, np.ndarray]:
    """The background SNVs: contig index, position, REF, ALT, frequency (draw order)."""
    rng = np.random.default_rng([seed, TAG, SITES])
    lengths = np.array(list(CONTIGS.values()), np.int64)
    ends = np.cumsum(lengths)
    draw = 2 * n + 100
    at = rng.integers(0, int(ends[-1]), draw)
    base = rng.integers(0, 4, draw)
    shift = rng.integers(1, 4, draw)
    freq = rng.beta(*BETA, draw)
    contig = np.searchsorted(ends, at, side="right")
    pos = at - np.r_[0, ends[:-1]][contig] + 1
    names = list(CONTIGS)
    pgx = [(names.index(v.chromosome), v.position) for g in genes for v in g.definition.variants]
    keep = np.ones(draw, bool)
    for c, p in pgx:
        keep &= ~((contig == c) & (np.abs(pos - p) <= CLEAR_BP))
    key = contig * (1 << 32) + pos
    _, first = np.unique(key, return_index=True)
    unique = np.zeros(draw, bool)
    unique[first] = True
    take = np.flatnonzero(keep & unique)[:n]
    acgt = np.array(list("ACGT"))
    return {"contig": contig[take], "pos": pos[take], "ref": acgt[base[take]],
            "alt": acgt[(base[take] + shift[take]) % 4], "freq": freq[take]}


class GenotypePlant:
    """Draws the genotypes, plants the interaction chunk by chunk, writes the files."""

    def __init__(self, seed: int, genotypes: Genotypes) -> None:
        self.seed, self.options = seed, genotypes
        self.genes = _genes()
        self.cyp2c19 = [g.definition.gene for g in self.genes].index("CYP2C19")
        phenotypes = np.array(_calls(self.genes[self.cyp2c19])[1], dtype=object)
        self.poor = phenotypes == POOR
        missing = sorted(set(phenotypes.ravel().tolist()) - set(GRADED_RATES))
        if missing:
            raise CohortflowError(f"GRADED_RATES has no rate for CYP2C19 {missing}; "
                                  "fix: the rate table")
        # the adverse reaction's rate and phenotype (index into GRADED_RATES) per allele pair
        rates = genotypes.rates()
        self.rate = np.vectorize(rates.__getitem__, otypes=[float])(phenotypes)
        self.phenotype = np.vectorize(list(GRADED_RATES).index, otypes=[np.int64])(phenotypes)
        # [group: genotyped PM, genotyped other, not genotyped] x [exposed, events]; and
        # [true PM, other] x [exposed, events] over everyone; and by true phenotype
        self.counts = np.zeros((3, 2), np.int64)
        self.truth = np.zeros((2, 2), np.int64)
        self.by_phenotype = np.zeros((len(GRADED_RATES), 2), np.int64)

    def genotyped(self, person_id: np.ndarray) -> np.ndarray:
        """Whether each person is in the VCF."""
        return np.asarray(uniforms(self.seed, GENOTYPED, person_id, 1)[0] < self.options.share,
                          bool)

    def poor_metabolizer(self, person_id: np.ndarray) -> np.ndarray:
        """Whether each person is a CYP2C19 Poor Metabolizer (genotyped or not)."""
        a = alleles(self.seed, person_id, self.genes)[self.cyp2c19]
        return np.asarray(self.poor[a[:, 0], a[:, 1]], bool)

    def _pairs(self, person_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each person's CYP2C19 allele indices (the two haplotypes)."""
        a = alleles(self.seed, person_id, self.genes)[self.cyp2c19]
        return a[:, 0], a[:, 1]

    def chunk(self, tables: dict[str, pa.Table], ids: dict[str, int]) -> dict[str, pa.Table]:
        """The chunk's tables with the exposures and the adverse reactions inserted."""
        per = tables["observation_period"]
        pp, ps, pe = (ints(per, "person_id"), days(per, "observation_period_start_date"),
                      days(per, "observation_period_end_date"))
        order = np.lexsort((ps, pp))
        pp, ps, pe = pp[order], ps[order], pe[order]
        head = np.r_[True, pp[1:] != pp[:-1]] if pp.size else np.zeros(0, bool)
        pp, ps, pe = pp[head], ps[head], pe[head]
        u = uniforms(self.seed, EXPOSURE, pp, 4)
        exposed = (u[0] < self.options.exposed_share) & (pe - ps > WINDOW_DAYS)
        who, start, end = pp[exposed], ps[exposed], pe[exposed]
        day = start + (u[1, exposed] * (end - WINDOW_DAYS - start + 1)).astype(np.int64)
        a, b = self._pairs(who)
        pm = np.asarray(self.poor[a, b], bool)
        event = u[2, exposed] < self.rate[a, b]
        event_day = day + 1 + (u[3, exposed] * WINDOW_DAYS).astype(np.int64)
        group = np.where(self.genotyped(who), np.where(pm, 0, 1), 2)
        self.counts += _tally(group, event, 3)
        self.truth += _tally((~pm).astype(np.int64), event, 2)
        self.by_phenotype += _tally(self.phenotype[a, b], event, len(GRADED_RATES))
        drug = tables["drug_exposure"]
        stop = day + DAYS_SUPPLY - 1
        rows = table_of(drug.schema, who.size, {
            "drug_exposure_id": new_ids(ids, "drug_exposure", who.size), "person_id": who,
            "drug_concept_id": ESCITALOPRAM, "drug_type_concept_id": V.EHR,
            "drug_exposure_start_date": _date(day), "drug_exposure_start_datetime": _time(day),
            "drug_exposure_end_date": _date(stop), "drug_exposure_end_datetime": _time(stop),
            "days_supply": DAYS_SUPPLY, "quantity": float(DAYS_SUPPLY),
            "route_concept_id": 0, "drug_source_concept_id": 0})
        key = sort_key(ints(drug, "person_id"), days(drug, "drug_exposure_start_date"))
        tables = {**tables, "drug_exposure": insert_rows(drug, key, rows, sort_key(who, day))}
        cw, cd = who[event], event_day[event]
        cond = tables["condition_occurrence"]
        rows = table_of(cond.schema, cw.size, {
            "condition_occurrence_id": new_ids(ids, "condition_occurrence", cw.size),
            "person_id": cw, "condition_concept_id": ADVERSE_REACTION,
            "condition_start_date": _date(cd), "condition_start_datetime": _time(cd),
            "condition_type_concept_id": V.EHR, "condition_status_concept_id": 0,
            "condition_source_concept_id": 0})
        key = sort_key(ints(cond, "person_id"), days(cond, "condition_start_date"))
        return {**tables, "condition_occurrence": insert_rows(cond, key, rows,
                                                              sort_key(cw, cd))}

    def write(self, out: Path, persons: int) -> None:
        """``genotypes/cohort.vcf.gz`` (BGZF), ``linkage.csv`` and ``truth.csv`` under
        ``out``."""
        folder = out / "genotypes"
        folder.mkdir(exist_ok=True)
        everyone = np.arange(1, persons + 1, dtype=np.int64)
        who = everyone[self.genotyped(everyone)]
        rank = np.argsort(np.argsort(uniforms(self.seed, GENOTYPED, who, 2)[1], kind="stable"),
                          kind="stable")
        sample = np.array([f"CFS{r + 1:08d}" for r in rank.tolist()], dtype=object)
        order = np.argsort(rank, kind="stable")  # VCF columns in sample id order
        who, sample = who[order], sample[order]
        pl.DataFrame({"sample_id": sample.tolist(), "person_id": who},
                     schema={"sample_id": pl.String, "person_id": pl.Int64}
                     ).write_csv(folder / "linkage.csv")
        allele = alleles(self.seed, who, self.genes)
        frames = []
        for g, gene in enumerate(self.genes):
            dip, phe = (np.array(x, dtype=object) for x in _calls(gene))
            a, b = allele[g, :, 0], allele[g, :, 1]
            frames.append(pl.DataFrame({
                "sample_id": sample.tolist(), "gene": gene.definition.gene,
                "diplotype": dip[a, b].tolist(), "phenotype": phe[a, b].tolist()}))
        pl.concat(frames).write_csv(folder / "truth.csv")  # quotes the names with commas
        self._vcf(folder / "cohort.vcf.gz", who, sample.tolist(), allele)

    def _vcf(self, path: Path, who: np.ndarray, samples: list[str], allele: np.ndarray
             ) -> None:
        """Write the VCF record by record (one batch of background calls in memory)."""
        names = list(CONTIGS)
        sites: list[tuple[int, int, str, str, str, float, int, int]] = []  # sortable
        for g, gene in enumerate(self.genes):
            freq = np.diff(np.r_[0.0, gene.cumulative])
            for j, v in enumerate(gene.definition.variants):
                carries = (gene.bits >> j) & 1 == 1
                sites.append((names.index(v.chromosome), v.position, v.id, v.ref, v.alt,
                              float(freq[carries].sum()), g, j))
        bg = _sites(self.seed, self.options.background_variants, self.genes)
        for i in range(bg["pos"].size):
            sites.append((int(bg["contig"][i]), int(bg["pos"][i]), ".", str(bg["ref"][i]),
                          str(bg["alt"][i]), float(bg["freq"][i]), -1, -1))
        sites.sort(key=lambda r: (r[0], r[1]))
        # background variant k (in file order) is drawn in batch k // VARIANT_BATCH
        freqs = np.array([r[5] for r in sites if r[6] < 0])
        codes = np.array([b"0|0\t", b"0|1\t", b"1|0\t", b"1|1\t"], dtype="S4")
        fields = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
        fields += ["FORMAT", *samples] if samples else []
        with path.open("wb") as raw, io.BufferedWriter(Bgzf(raw), 1 << 20) as f:
            f.write(b"##fileformat=VCFv4.3\n##source=cohortflow.synth\n##reference=GRCh38\n")
            f.write("".join(f"##contig=<ID={c},length={n}>\n"
                            for c, n in CONTIGS.items()).encode())
            f.write(b'##INFO=<ID=AF,Number=A,Type=Float,Description="Alternate allele '
                    b'frequency the generator drew from">\n'
                    b'##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
            f.write(("\t".join(fields) + "\n").encode())
            k, batch, calls = 0, -1, np.zeros((0, who.size, 2), np.int8)
            for c, pos, vid, ref, alt, af, g, j in sites:
                if g >= 0:
                    carries = (self.genes[g].bits >> j) & 1
                    row = carries[allele[g]]  # persons x 2
                else:
                    if k // VARIANT_BATCH != batch:
                        batch = k // VARIANT_BATCH
                        calls = self._background(batch, freqs[batch * VARIANT_BATCH:
                                                               (batch + 1) * VARIANT_BATCH], who)
                    row, k = calls[k % VARIANT_BATCH], k + 1
                line = f"{names[c]}\t{pos}\t{vid}\t{ref}\t{alt}\t.\tPASS\tAF={af:.6g}"
                if samples:
                    gts = codes[2 * row[:, 0] + row[:, 1]].tobytes()
                    f.write(f"{line}\tGT\t".encode() + gts[:-1] + b"\n")
                else:
                    f.write(f"{line}\n".encode())

    def _background(self, batch: int, freq: np.ndarray, who: np.ndarray) -> np.ndarray:
        """The background calls of variants ``freq`` (batch ``batch``): variants x persons
        x 2, a function of the seed, the batch and the person id."""
        slot = who - 1
        block = slot // BLOCK_PERSONS
        out = np.zeros((freq.size, who.size, 2), np.int8)
        for b in np.unique(block):
            here = np.flatnonzero(block == b)
            rng = np.random.default_rng([self.seed, TAG, BACKGROUND, batch, int(b)])
            u = rng.random((VARIANT_BATCH, BLOCK_PERSONS, 2))[:freq.size]
            out[:, here] = u[:, slot[here] % BLOCK_PERSONS] < freq[:, None, None]
        return out

    def oracle(self) -> dict[str, object]:
        """What was planted and the observed event rates, for ``oracle.json``."""
        def group(row: np.ndarray) -> dict[str, object]:
            n, k = int(row[0]), int(row[1])
            return {"exposed": n, "events": k, "event_rate": round(k / n, 6) if n else None}

        return {
            "description": (
                "Genotypes (genotypes/cohort.vcf.gz, sample ids linked to persons by "
                "genotypes/linkage.csv) for about `share` of the persons at every defining "
                "variant of seeds/pgx plus background SNVs.  About exposed_share of the "
                "persons whose first observation period is longer than 90 days get "
                "escitalopram (715939, a CYP2C19 substrate) once, at least 90 days before "
                "that period's end; an adverse drug reaction (2000000030) follows within "
                "90 days with probability rates.poor_metabolizer for CYP2C19 Poor "
                "Metabolizers (by cohortflow.pgx on the diplotypes, genotyped or not) and "
                "rates.other for everyone else; with effect graded, with probability "
                "rates_by_phenotype[<the person's CYP2C19 phenotype>] instead."),
            "drug_concept_id": ESCITALOPRAM, "outcome_concept_id": ADVERSE_REACTION,
            "gene": "CYP2C19", "phenotype": POOR, "window_days": WINDOW_DAYS,
            "rates": dict(RATES), **self.options.settings(),
            **({"rates_by_phenotype": self.options.rates(),
                "exposed_by_phenotype": {p: group(self.by_phenotype[i])
                                         for i, p in enumerate(GRADED_RATES)}}
               if self.options.effect != "poor_only" else {}),
            "exposed": {"genotyped_poor_metabolizer": group(self.counts[0]),
                        "genotyped_other": group(self.counts[1]),
                        "not_genotyped": group(self.counts[2])},
            "exposed_by_true_phenotype": {"poor_metabolizer": group(self.truth[0]),
                                          "other": group(self.truth[1])},
            "allele_frequencies": {g: dict(f) for g, f in FREQUENCIES.items()},
        }


class Bgzf(io.RawIOBase):
    """A write-only BGZF stream (SAM/BAM specification section 4.1): gzip members of at most
    :data:`BGZF_BLOCK` bytes each with the ``BC`` extra field, then the empty end block, so
    htslib tools (``bcftools``, ``tabix``) read and index the file; any gzip reader reads it.
    Fixed header bytes (no time stamp, no name), so the bytes depend on the text only.

    >>> import gzip
    >>> buf = io.BytesIO()
    >>> with Bgzf(buf) as z:
    ...     _ = z.write(b"x" * 100_000)
    >>> gzip.decompress(buf.getvalue()) == b"x" * 100_000, buf.getvalue()[-28:] == Bgzf.EOF
    (True, True)
    """

    EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self.raw, self.pending = raw, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.pending += view
        while len(self.pending) >= BGZF_BLOCK:
            self._block(bytes(self.pending[:BGZF_BLOCK]))
            del self.pending[:BGZF_BLOCK]
        return len(view)

    def close(self) -> None:
        if not self.closed:
            if self.pending:
                self._block(bytes(self.pending))
            self.raw.write(self.EOF)
        super().close()

    def _block(self, data: bytes) -> None:
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = deflate.compress(data) + deflate.flush()
        header = struct.pack("<4BI2BH2BHH", 0x1F, 0x8B, 8, 4, 0, 0, 0xFF, 6, ord("B"),
                             ord("C"), 2, len(body) + 25)
        self.raw.write(header + body + struct.pack("<II", zlib.crc32(data), len(data)))


def _tally(group: np.ndarray, event: np.ndarray, k: int) -> np.ndarray:
    """Persons and events per group (``k`` groups x 2)."""
    return np.stack([np.bincount(group, minlength=k),
                     np.bincount(group[event], minlength=k)], axis=1).astype(np.int64)


def _date(day: np.ndarray) -> pa.Array:
    return pa.array(day.astype("datetime64[D]"), pa.date32())


def _time(day: np.ndarray) -> pa.Array:
    return pa.array((day * DAY_US).astype("datetime64[us]"), pa.timestamp("us"))
