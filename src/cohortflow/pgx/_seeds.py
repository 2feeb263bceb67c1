"""Allele-definition seeds: read ``seeds/pgx/*.csv`` into typed, validated gene definitions.

Each bad row stops the load with one message naming the file, the line, the field, the
value received and what is expected (see ``seeds/pgx/README.md`` for the columns).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cohortflow.errors import PgxSeedError

FUNCTIONS = ("Normal function", "Increased function", "Decreased function", "No function",
             "Uncertain function", "Unknown function")
"""CPIC allele-function terms a seed may use."""

INDETERMINATE = "Indeterminate"
PHENOTYPES = (
    "Ultrarapid Metabolizer", "Rapid Metabolizer", "Normal Metabolizer",
    "Likely Intermediate Metabolizer", "Intermediate Metabolizer",
    "Possible Intermediate Metabolizer", "Likely Poor Metabolizer", "Poor Metabolizer",
    "Increased Function", "Normal Function", "Possible Decreased Function",
    "Decreased Function", "Poor Function", INDETERMINATE,
)
"""CPIC phenotype terms (metabolizer status; transporter function for SLCO1B1)."""

MAX_VARIANTS = 63
"""Defining variants per gene: a haplotype is held as the bits of one int64."""

_COLUMNS = {
    "genes.csv": ("gene", "chromosome", "reference_allele", "phenotype_rule", "combine"),
    "variants.csv": ("gene", "variant", "chromosome", "position", "ref", "alt", "hgvs"),
    "alleles.csv": ("gene", "allele", "variants", "function", "activity_value"),
    "function_pairs.csv": ("gene", "function_a", "function_b", "phenotype"),
    "activity_scores.csv": ("gene", "activity_score", "phenotype"),
}
_BASES = re.compile(r"^[ACGTN]+$")
_CHROM = re.compile(r"^chr([1-9]|1[0-9]|2[0-2]|X|Y)$")


@dataclass(frozen=True)
class Variant:
    """One defining variant on GRCh38 (VCF-style ``ref``/``alt``)."""

    id: str
    chromosome: str
    position: int
    ref: str
    alt: str
    hgvs: str

    def label(self) -> str:
        """``rs4244285 (chr10:94781859 G>A)``"""
        return f"{self.id} ({self.chromosome}:{self.position} {self.ref}>{self.alt})"


@dataclass(frozen=True)
class Allele:
    """A named allele: its CPIC function, activity value, and its order in the seed."""

    name: str
    function: str
    activity: float | None
    order: int


@dataclass
class GeneDefinition:
    """Everything needed to call one gene.  ``definitions`` maps the bit set of a haplotype
    (bit ``j`` = ``variants[j]`` carried) to the allele name it defines."""

    gene: str
    chromosome: str
    reference: str
    phenotype_rule: str
    combine: str
    variants: list[Variant] = field(default_factory=list)
    alleles: dict[str, Allele] = field(default_factory=dict)
    definitions: dict[int, str] = field(default_factory=dict)
    function_pairs: dict[frozenset[str], str] = field(default_factory=dict)
    activity_scores: dict[float, str] = field(default_factory=dict)


def seeds_folder() -> Path:
    """The repository's ``seeds/pgx`` folder.

    >>> seeds_folder().name
    'pgx'
    """
    here = Path(str(resources.files("cohortflow")))
    for root in (here, *here.parents):
        candidate = root / "seeds" / "pgx"
        if (candidate / "genes.csv").is_file():
            return candidate
    raise PgxSeedError(f"no seeds/pgx/genes.csv above {here}; fix: install cohortflow from "
                       "its repository with `pip install -e .`, or pass the seeds folder")


def _rows(folder: Path, name: str) -> Iterator[tuple[str, int, dict[str, str]]]:
    path = folder / name
    if not path.is_file():
        raise PgxSeedError(f"{path}: seed file missing; fix: restore it from seeds/pgx")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        expected = _COLUMNS[name]
        if tuple(reader.fieldnames or ()) != expected:
            raise PgxSeedError(f"{path}:1: header {reader.fieldnames} does not match; "
                               f"fix: the header must be {','.join(expected)}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(value is None for value in row.values()):
                raise PgxSeedError(f"{where}: the row has {len(row)} cells but the header "
                                   f"{len(expected)}; fix: one value per column "
                                   "(quote values holding commas)")
            yield where, reader.line_num, {key: value.strip() for key, value in row.items()}


def _bad(where: str, column: str, value: str, expected: str) -> PgxSeedError:
    return PgxSeedError(f"{where}: field '{column}' is {value!r}; expected {expected}")


def _number(where: str, column: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _bad(where, column, value, "a number such as 0.5") from None
    if not 0 <= number <= 2 or number * 4 != int(number * 4):
        raise _bad(where, column, value, "a multiple of 0.25 from 0 to 2")
    return number


def _choice(where: str, row: dict[str, str], column: str, choices: tuple[str, ...]) -> str:
    if row[column] not in choices:
        raise _bad(where, column, row[column], f"one of {', '.join(choices)}")
    return row[column]


def _gene(where: str, row: dict[str, str], genes: dict[str, GeneDefinition]) -> GeneDefinition:
    if row["gene"] not in genes:
        raise _bad(where, "gene", row["gene"], f"a gene of genes.csv ({', '.join(genes)})")
    return genes[row["gene"]]


def load_definitions(folder: str | Path | None = None) -> dict[str, GeneDefinition]:
    """Read and validate the allele-definition seeds (default: the repository's
    ``seeds/pgx``); returns one :class:`GeneDefinition` per gene, in seed order.

    >>> defs = load_definitions()
    >>> defs["CYP2C19"].reference, defs["TPMT"].definitions[0b101]
    ('*1', '*3A')
    """
    folder = seeds_folder() if folder is None else Path(folder)
    genes: dict[str, GeneDefinition] = {}
    for where, _, row in _rows(folder, "genes.csv"):
        if not row["gene"] or row["gene"] in genes:
            raise _bad(where, "gene", row["gene"], "a gene name listed once")
        if not _CHROM.match(row["chromosome"]):
            raise _bad(where, "chromosome", row["chromosome"], "a GRCh38 name such as chr10")
        genes[row["gene"]] = GeneDefinition(
            row["gene"], row["chromosome"], row["reference_allele"],
            _choice(where, row, "phenotype_rule", ("function_pair", "activity_score")),
            _choice(where, row, "combine", ("haplotype", "lowest_activity")))
    _load_variants(folder, genes)
    _load_alleles(folder, genes)
    _load_rules(folder, genes)
    return genes


def _load_variants(folder: Path, genes: dict[str, GeneDefinition]) -> None:
    for where, _, row in _rows(folder, "variants.csv"):
        gene = _gene(where, row, genes)
        if not re.match(r"^rs[0-9]+$", row["variant"]):
            raise _bad(where, "variant", row["variant"], "an rsID such as rs4244285")
        if any(v.id == row["variant"] for v in gene.variants):
            raise _bad(where, "variant", row["variant"], f"an rsID listed once for {gene.gene}")
        if row["chromosome"] != gene.chromosome:
            raise _bad(where, "chromosome", row["chromosome"],
                       f"{gene.chromosome}, the chromosome of {gene.gene} in genes.csv")
        if not row["position"].isdigit() or int(row["position"]) < 1:
            raise _bad(where, "position", row["position"], "a 1-based GRCh38 position")
        for column in ("ref", "alt"):
            if not _BASES.match(row[column]):
                raise _bad(where, column, row[column], "bases A, C, G, T or N (VCF style)")
        if row["ref"] == row["alt"]:
            raise _bad(where, "alt", row["alt"], "an allele different from ref")
        if len(gene.variants) == MAX_VARIANTS:
            raise _bad(where, "variant", row["variant"], f"at most {MAX_VARIANTS} per gene")
        gene.variants.append(Variant(row["variant"], row["chromosome"], int(row["position"]),
                                     row["ref"], row["alt"], row["hgvs"]))


def _load_alleles(folder: Path, genes: dict[str, GeneDefinition]) -> None:
    for where, _, row in _rows(folder, "alleles.csv"):
        gene = _gene(where, row, genes)
        if not row["allele"]:
            raise _bad(where, "allele", row["allele"], "an allele name such as *2")
        function = _choice(where, row, "function", FUNCTIONS)
        activity = None
        if gene.phenotype_rule == "activity_score" or row["activity_value"]:
            activity = _number(where, "activity_value", row["activity_value"])
        known = gene.alleles.get(row["allele"])
        if known is not None and (known.function, known.activity) != (function, activity):
            raise _bad(where, "function", function, f"the function and activity value of the "
                       f"earlier {row['allele']} row ({known.function}, {known.activity})")
        ids = [v.id for v in gene.variants]
        bits = 0
        for name in filter(None, row["variants"].split("+")):
            if name not in ids:
                raise _bad(where, "variants", row["variants"],
                           f"rsIDs of {gene.gene} in variants.csv joined by '+'")
            bits |= 1 << ids.index(name)
        if (bits == 0) != (row["allele"] == gene.reference):
            raise _bad(where, "variants", row["variants"], "no variants for the reference "
                       f"allele {gene.reference} and at least one for any other")
        if bits in gene.definitions:
            raise _bad(where, "variants", row["variants"],
                       f"a set not already defining {gene.definitions[bits]}")
        gene.definitions[bits] = row["allele"]
        gene.alleles.setdefault(row["allele"],
                                Allele(row["allele"], function, activity, len(gene.alleles)))
    for gene in genes.values():
        if gene.reference not in gene.alleles:
            raise PgxSeedError(f"{folder / 'alleles.csv'}: no row for {gene.gene}'s reference "
                               f"allele {gene.reference}; fix: add "
                               f"{gene.gene},{gene.reference},,Normal function,")


def _load_rules(folder: Path, genes: dict[str, GeneDefinition]) -> None:
    for where, _, row in _rows(folder, "function_pairs.csv"):
        gene = _gene(where, row, genes)
        if gene.phenotype_rule != "function_pair":
            raise _bad(where, "gene", gene.gene, "a gene whose phenotype_rule is function_pair")
        pair = frozenset((_choice(where, row, "function_a", FUNCTIONS),
                          _choice(where, row, "function_b", FUNCTIONS)))
        if pair in gene.function_pairs:
            raise _bad(where, "function_b", row["function_b"], "a pair listed once")
        gene.function_pairs[pair] = _choice(where, row, "phenotype", PHENOTYPES)
    for where, _, row in _rows(folder, "activity_scores.csv"):
        gene = _gene(where, row, genes)
        if gene.phenotype_rule != "activity_score":
            raise _bad(where, "gene", gene.gene, "a gene whose phenotype_rule is activity_score")
        score = _number(where, "activity_score", row["activity_score"])
        if score in gene.activity_scores:
            raise _bad(where, "activity_score", row["activity_score"], "a score listed once")
        gene.activity_scores[score] = _choice(where, row, "phenotype", PHENOTYPES)
