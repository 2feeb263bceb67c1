"""A cohort's de-identified OMOP CDM data mart (``cohortflow export-mart``).

The mart holds the cohort's persons' rows of the clinical tables, their generalised
location and the vocabulary rows they use, as Parquet files and one DuckDB file (itself an
OMOP CDM source for cohortflow): person ids pseudonymised (keyed HMAC, 63-bit integers),
other ids renumbered, dates shifted per person by a keyed offset, births generalised and
ages top-coded, free text dropped, ZIP codes cut to three digits, and k-anonymity over the
quasi-identifiers; ``deid_report.json`` and ``.html`` record what was done.  The policy is
the study's ``mart:`` section (:class:`cohortflow.study.MartPolicy`).
"""

from cohortflow.mart._export import MARKER, cohort_members, export_mart
from cohortflow.mart._geo import zip3
from cohortflow.mart._kanon import Anonymised, k_anonymise
from cohortflow.privacy import RESTRICTED_ZIP3

__all__ = ["MARKER", "RESTRICTED_ZIP3", "Anonymised", "cohort_members", "export_mart",
           "k_anonymise", "zip3"]
