"""Pharmacogene diplotypes and CPIC phenotypes from VCF Zarr genotypes.

The allele definitions and diplotype → phenotype rules are seeds (``seeds/pgx``, transcribed
from PharmCAT/CPIC; see its README for sources and the alleles covered).  CYP2D6 is not
called (it needs copy-number calling).

>>> definitions = load_definitions()
>>> list(definitions)
['CYP2C19', 'CYP2C9', 'SLCO1B1', 'TPMT', 'NUDT15', 'DPYD']
"""

from cohortflow.errors import PgxGenotypeError, PgxSeedError
from cohortflow.pgx._call import SCHEMA, Call, call_gene, call_phenotypes, diplotype_call
from cohortflow.pgx._genotypes import REQUIRED, GeneGenotypes, SiteIndex
from cohortflow.pgx._seeds import (
    FUNCTIONS,
    INDETERMINATE,
    PHENOTYPES,
    Allele,
    GeneDefinition,
    Variant,
    load_definitions,
    seeds_folder,
)

__all__ = [
    "FUNCTIONS",
    "INDETERMINATE",
    "PHENOTYPES",
    "REQUIRED",
    "SCHEMA",
    "Allele",
    "Call",
    "GeneDefinition",
    "GeneGenotypes",
    "PgxGenotypeError",
    "PgxSeedError",
    "SiteIndex",
    "Variant",
    "call_gene",
    "call_phenotypes",
    "diplotype_call",
    "load_definitions",
    "seeds_folder",
]
