"""The OMOP vocabulary subset used by :mod:`cohortflow.synth`.

Real OMOP concept ids where they exist; everything invented lives in OMOP's local range
(ids >= 2_000_000_000) under the ``CohortflowSynth`` vocabulary.  ``PARENTS`` holds the
direct "is a" edges; :func:`ancestor_rows` closes them into ``concept_ancestor`` rows with
OMOP's conventions (a level-0 self row for every standard concept, min/max levels of
separation over all paths).  ``SCHEMAS`` holds the OMOP CDM v5.4 table layouts written.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

LOCAL = "CohortflowSynth"

# Condition concepts.
ASTHMA = 317009
CHILDHOOD_ASTHMA = 2_000_000_001
ALLERGIC_ASTHMA = 2_000_000_002
EXACERBATION = 2_000_000_003
ALLERGIC_RHINITIS = 257007
ATOPIC_DERMATITIS = 133834
PHARYNGITIS, BRONCHITIS, OTITIS, STREP, SPRAIN = 4112343, 260139, 372328, 28060, 81151
GASTROENTERITIS, CONJUNCTIVITIS, FEVER = 2_000_000_004, 2_000_000_005, 2_000_000_006
URTI = 2_000_000_007
RESP_INFECTION, RESP_DISORDER, INFECTIOUS_DISEASE = 2_000_000_010, 2_000_000_011, 2_000_000_012
# Drug concepts (exposures record clinical drugs).
ALBUTEROL, ALBUTEROL_MDI = 1154343, 2_000_000_101
AMOXICILLIN, AMOXICILLIN_SUSP = 1713332, 2_000_000_102
ACETAMINOPHEN, ACETAMINOPHEN_SUSP = 1125315, 2_000_000_103
IBUPROFEN, IBUPROFEN_SUSP = 1177480, 2_000_000_104
ICS_INGREDIENT, ICS_MDI = 2_000_000_105, 2_000_000_106
SABA_CLASS, ICS_CLASS, AIRWAY_CLASS = 2_000_000_150, 2_000_000_151, 2_000_000_152
# Measurement concepts and units.
WEIGHT, HEIGHT, HEART_RATE, EOSINOPHILS = 3025315, 3036277, 3027018, 2_000_000_201
VITAL_SIGNS = 2_000_000_250
KG, CM, PER_MINUTE, THOUSAND_PER_UL = 9529, 8582, 8541, 2_000_000_401
# Procedure concepts.
SPIROMETRY, NEBULIZER, IMMUNIZATION, STREP_TEST, DEV_SCREENING = (
    2_000_000_301, 2_000_000_302, 2_000_000_303, 2_000_000_304, 2_000_000_305)
PULMONARY_PROCEDURE = 2_000_000_350
# Visit, demographic and type concepts.
INPATIENT, OUTPATIENT, EMERGENCY = 9201, 9202, 9203
MALE, FEMALE = 8507, 8532
WHITE, BLACK, ASIAN = 8527, 8516, 8515
HISPANIC, NOT_HISPANIC = 38003563, 38003564
EHR, PERIOD_ENCOUNTERS = 32817, 44814724

# (concept_id, name, domain, vocabulary, class, standard, code)
_C = tuple[int, str, str, str, str, str | None, str]
CONCEPTS: tuple[_C, ...] = (
    (0, "No matching concept", "Metadata", "None", "Undefined", None, "No matching concept"),
    (ASTHMA, "Asthma", "Condition", "SNOMED", "Clinical Finding", "S", "195967001"),
    (CHILDHOOD_ASTHMA, "Childhood asthma", "Condition", LOCAL, "Clinical Finding", "S",
     "CFS-C0001"),
    (ALLERGIC_ASTHMA, "Allergic asthma", "Condition", LOCAL, "Clinical Finding", "S",
     "CFS-C0002"),
    (EXACERBATION, "Acute exacerbation of asthma", "Condition", LOCAL, "Clinical Finding", "S",
     "CFS-C0003"),
    (ALLERGIC_RHINITIS, "Allergic rhinitis", "Condition", "SNOMED", "Clinical Finding", "S",
     "61582004"),
    (ATOPIC_DERMATITIS, "Atopic dermatitis", "Condition", "SNOMED", "Clinical Finding", "S",
     "24079001"),
    (PHARYNGITIS, "Acute viral pharyngitis", "Condition", "SNOMED", "Clinical Finding", "S",
     "195662009"),
    (BRONCHITIS, "Acute bronchitis", "Condition", "SNOMED", "Clinical Finding", "S",
     "10509002"),
    (OTITIS, "Otitis media", "Condition", "SNOMED", "Clinical Finding", "S", "65363002"),
    (STREP, "Streptococcal sore throat", "Condition", "SNOMED", "Clinical Finding", "S",
     "43878008"),
    (SPRAIN, "Sprain of ankle", "Condition", "SNOMED", "Clinical Finding", "S", "44465007"),
    (GASTROENTERITIS, "Viral gastroenteritis", "Condition", LOCAL, "Clinical Finding", "S",
     "CFS-C0004"),
    (CONJUNCTIVITIS, "Conjunctivitis", "Condition", LOCAL, "Clinical Finding", "S",
     "CFS-C0005"),
    (FEVER, "Fever", "Condition", LOCAL, "Clinical Finding", "S", "CFS-C0006"),
    (URTI, "Upper respiratory tract infection", "Condition", LOCAL, "Clinical Finding", "S",
     "CFS-C0007"),
    (RESP_INFECTION, "Respiratory tract infection", "Condition", LOCAL, "Clinical Finding",
     "S", "CFS-C0010"),
    (RESP_DISORDER, "Disorder of respiratory system", "Condition", LOCAL, "Clinical Finding",
     "S", "CFS-C0011"),
    (INFECTIOUS_DISEASE, "Infectious disease", "Condition", LOCAL, "Clinical Finding", "S",
     "CFS-C0012"),
    (ALBUTEROL, "albuterol", "Drug", "RxNorm", "Ingredient", "S", "435"),
    (ALBUTEROL_MDI, "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "Drug", LOCAL,
     "Clinical Drug", "S", "CFS-D0101"),
    (AMOXICILLIN, "amoxicillin", "Drug", "RxNorm", "Ingredient", "S", "723"),
    (AMOXICILLIN_SUSP, "amoxicillin 50 MG/ML Oral Suspension", "Drug", LOCAL, "Clinical Drug",
     "S", "CFS-D0102"),
    (ACETAMINOPHEN, "acetaminophen", "Drug", "RxNorm", "Ingredient", "S", "161"),
    (ACETAMINOPHEN_SUSP, "acetaminophen 32 MG/ML Oral Suspension", "Drug", LOCAL,
     "Clinical Drug", "S", "CFS-D0103"),
    (IBUPROFEN, "ibuprofen", "Drug", "RxNorm", "Ingredient", "S", "5640"),
    (IBUPROFEN_SUSP, "ibuprofen 20 MG/ML Oral Suspension", "Drug", LOCAL, "Clinical Drug", "S",
     "CFS-D0104"),
    (ICS_INGREDIENT, "inhaled corticosteroid (local ingredient)", "Drug", LOCAL, "Ingredient",
     "S", "CFS-D0105"),
    (ICS_MDI, "inhaled corticosteroid 0.044 MG/ACTUAT Metered Dose Inhaler (local)", "Drug",
     LOCAL, "Clinical Drug", "S", "CFS-D0106"),
    (SABA_CLASS, "Short-acting inhaled beta-2 agonists (local class)", "Drug", LOCAL,
     "Drug Class", "C", "CFS-D0150"),
    (ICS_CLASS, "Inhaled corticosteroids (local class)", "Drug", LOCAL, "Drug Class", "C",
     "CFS-D0151"),
    (AIRWAY_CLASS, "Drugs for obstructive airway diseases (local class)", "Drug", LOCAL,
     "Drug Class", "C", "CFS-D0152"),
    (WEIGHT, "Body weight", "Measurement", "LOINC", "Clinical Observation", "S", "29463-7"),
    (HEIGHT, "Body height", "Measurement", "LOINC", "Clinical Observation", "S", "8302-2"),
    (HEART_RATE, "Heart rate", "Measurement", "LOINC", "Clinical Observation", "S", "8867-4"),
    (EOSINOPHILS, "Eosinophils [#/volume] in Blood", "Measurement", LOCAL, "Lab Test", "S",
     "CFS-M0201"),
    (VITAL_SIGNS, "Vital signs (local grouper)", "Measurement", LOCAL, "Clinical Observation",
     "C", "CFS-M0250"),
    (KG, "kilogram", "Unit", "UCUM", "Unit", "S", "kg"),
    (CM, "centimeter", "Unit", "UCUM", "Unit", "S", "cm"),
    (PER_MINUTE, "per minute", "Unit", "UCUM", "Unit", "S", "/min"),
    (THOUSAND_PER_UL, "thousand per microliter", "Unit", LOCAL, "Unit", "S", "10*3/uL"),
    (SPIROMETRY, "Spirometry", "Procedure", LOCAL, "Procedure", "S", "CFS-P0301"),
    (NEBULIZER, "Nebulizer treatment", "Procedure", LOCAL, "Procedure", "S", "CFS-P0302"),
    (IMMUNIZATION, "Vaccine administration", "Procedure", LOCAL, "Procedure", "S",
     "CFS-P0303"),
    (STREP_TEST, "Rapid streptococcal antigen test", "Procedure", LOCAL, "Procedure", "S",
     "CFS-P0304"),
    (DEV_SCREENING, "Developmental screening", "Procedure", LOCAL, "Procedure", "S",
     "CFS-P0305"),
    (PULMONARY_PROCEDURE, "Pulmonary procedure (local grouper)", "Procedure", LOCAL,
     "Procedure", "C", "CFS-P0350"),
    (INPATIENT, "Inpatient Visit", "Visit", "Visit", "Visit", "S", "IP"),
    (OUTPATIENT, "Outpatient Visit", "Visit", "Visit", "Visit", "S", "OP"),
    (EMERGENCY, "Emergency Room Visit", "Visit", "Visit", "Visit", "S", "ER"),
    (MALE, "MALE", "Gender", "Gender", "Gender", "S", "M"),
    (FEMALE, "FEMALE", "Gender", "Gender", "Gender", "S", "F"),
    (WHITE, "White", "Race", "Race", "Race", "S", "5"),
    (BLACK, "Black or African American", "Race", "Race", "Race", "S", "3"),
    (ASIAN, "Asian", "Race", "Race", "Race", "S", "2"),
    (HISPANIC, "Hispanic or Latino", "Ethnicity", "Ethnicity", "Ethnicity", "S", "Hispanic"),
    (NOT_HISPANIC, "Not Hispanic or Latino", "Ethnicity", "Ethnicity", "Ethnicity", "S",
     "Not Hispanic"),
    (EHR, "EHR", "Type Concept", "Type Concept", "Type Concept", "S", "OMOP4976890"),
    (PERIOD_ENCOUNTERS, "Period covering healthcare encounters", "Type Concept",
     "Type Concept", "Type Concept", "S", "OMOP4822292"),
)

# Direct "is a" edges: child -> parents.  Respiratory tract infection and streptococcal sore
# throat have two parents; for the latter min and max levels of separation differ.
PARENTS: dict[int, tuple[int, ...]] = {
    ASTHMA: (RESP_DISORDER,),
    CHILDHOOD_ASTHMA: (ASTHMA,),
    ALLERGIC_ASTHMA: (ASTHMA,),
    EXACERBATION: (ASTHMA,),
    ALLERGIC_RHINITIS: (RESP_DISORDER,),
    RESP_INFECTION: (RESP_DISORDER, INFECTIOUS_DISEASE),
    URTI: (RESP_INFECTION,),
    PHARYNGITIS: (URTI,),
    STREP: (URTI, INFECTIOUS_DISEASE),
    BRONCHITIS: (RESP_INFECTION,),
    GASTROENTERITIS: (INFECTIOUS_DISEASE,),
    CONJUNCTIVITIS: (INFECTIOUS_DISEASE,),
    ALBUTEROL_MDI: (ALBUTEROL,),
    ALBUTEROL: (SABA_CLASS,),
    SABA_CLASS: (AIRWAY_CLASS,),
    ICS_MDI: (ICS_INGREDIENT,),
    ICS_INGREDIENT: (ICS_CLASS,),
    ICS_CLASS: (AIRWAY_CLASS,),
    AMOXICILLIN_SUSP: (AMOXICILLIN,),
    ACETAMINOPHEN_SUSP: (ACETAMINOPHEN,),
    IBUPROFEN_SUSP: (IBUPROFEN,),
    WEIGHT: (VITAL_SIGNS,),
    HEIGHT: (VITAL_SIGNS,),
    HEART_RATE: (VITAL_SIGNS,),
    SPIROMETRY: (PULMONARY_PROCEDURE,),
    NEBULIZER: (PULMONARY_PROCEDURE,),
}

# Background codes at visits: (concepts, probabilities); per-drug supply and quantity;
# measurement units.
BG_COND = ((PHARYNGITIS, BRONCHITIS, OTITIS, STREP, SPRAIN, GASTROENTERITIS, CONJUNCTIVITIS,
            FEVER, URTI),
           (0.14, 0.08, 0.16, 0.07, 0.04, 0.11, 0.08, 0.12, 0.20))
BG_DRUG = ((AMOXICILLIN_SUSP, ACETAMINOPHEN_SUSP, IBUPROFEN_SUSP), (0.35, 0.4, 0.25))
BG_PROC = ((IMMUNIZATION, STREP_TEST, DEV_SCREENING), (0.5, 0.3, 0.2))
DAYS_SUPPLY = {AMOXICILLIN_SUSP: 10, ACETAMINOPHEN_SUSP: 5, IBUPROFEN_SUSP: 5,
               ALBUTEROL_MDI: 30, ICS_MDI: 30}
QUANTITY = {AMOXICILLIN_SUSP: 100.0, ACETAMINOPHEN_SUSP: 120.0, IBUPROFEN_SUSP: 120.0,
            ALBUTEROL_MDI: 1.0, ICS_MDI: 1.0}
UNITS = {WEIGHT: (KG, "kg"), HEIGHT: (CM, "cm"), HEART_RATE: (PER_MINUTE, "/min"),
         EOSINOPHILS: (THOUSAND_PER_UL, "10*3/uL")}

# OMOP CDM v5.4 table layouts: "column:type", I int64, i int32, d date32, t timestamp[us],
# s string, f float64.
_TYPES = {"I": pa.int64(), "i": pa.int32(), "d": pa.date32(), "t": pa.timestamp("us"),
          "s": pa.string(), "f": pa.float64()}
_COLUMNS = {
    "person": "person_id:I gender_concept_id:I year_of_birth:i month_of_birth:i "
    "day_of_birth:i birth_datetime:t race_concept_id:I ethnicity_concept_id:I location_id:I "
    "provider_id:I care_site_id:I person_source_value:s gender_source_value:s "
    "gender_source_concept_id:I race_source_value:s race_source_concept_id:I "
    "ethnicity_source_value:s ethnicity_source_concept_id:I",
    "observation_period": "observation_period_id:I person_id:I "
    "observation_period_start_date:d observation_period_end_date:d period_type_concept_id:I",
    "visit_occurrence": "visit_occurrence_id:I person_id:I visit_concept_id:I "
    "visit_start_date:d visit_start_datetime:t visit_end_date:d visit_end_datetime:t "
    "visit_type_concept_id:I provider_id:I care_site_id:I visit_source_value:s "
    "visit_source_concept_id:I admitted_from_concept_id:I discharged_to_concept_id:I "
    "preceding_visit_occurrence_id:I",
    "condition_occurrence": "condition_occurrence_id:I person_id:I condition_concept_id:I "
    "condition_start_date:d condition_start_datetime:t condition_end_date:d "
    "condition_end_datetime:t condition_type_concept_id:I condition_status_concept_id:I "
    "stop_reason:s provider_id:I visit_occurrence_id:I visit_detail_id:I "
    "condition_source_value:s condition_source_concept_id:I condition_status_source_value:s",
    "drug_exposure": "drug_exposure_id:I person_id:I drug_concept_id:I "
    "drug_exposure_start_date:d drug_exposure_start_datetime:t drug_exposure_end_date:d "
    "drug_exposure_end_datetime:t verbatim_end_date:d drug_type_concept_id:I stop_reason:s "
    "refills:i quantity:f days_supply:i sig:s route_concept_id:I lot_number:s provider_id:I "
    "visit_occurrence_id:I visit_detail_id:I drug_source_value:s drug_source_concept_id:I "
    "route_source_value:s dose_unit_source_value:s",
    "measurement": "measurement_id:I person_id:I measurement_concept_id:I measurement_date:d "
    "measurement_datetime:t measurement_time:s measurement_type_concept_id:I "
    "operator_concept_id:I value_as_number:f value_as_concept_id:I unit_concept_id:I "
    "range_low:f range_high:f provider_id:I visit_occurrence_id:I visit_detail_id:I "
    "measurement_source_value:s measurement_source_concept_id:I unit_source_value:s "
    "unit_source_concept_id:I value_source_value:s",
    "procedure_occurrence": "procedure_occurrence_id:I person_id:I procedure_concept_id:I "
    "procedure_date:d procedure_datetime:t procedure_end_date:d procedure_end_datetime:t "
    "procedure_type_concept_id:I modifier_concept_id:I quantity:i provider_id:I "
    "visit_occurrence_id:I visit_detail_id:I procedure_source_value:s "
    "procedure_source_concept_id:I modifier_source_value:s",
    "death": "person_id:I death_date:d death_datetime:t death_type_concept_id:I "
    "cause_concept_id:I cause_source_value:s cause_source_concept_id:I",
}
SCHEMAS = {
    table: pa.schema([(c, _TYPES[t]) for c, t in (f.split(":") for f in spec.split())])
    for table, spec in _COLUMNS.items()
}

_VALID_START, _VALID_END = dt.date(1970, 1, 1), dt.date(2099, 12, 31)


def concept_table() -> pa.Table:
    """The ``concept`` table, sorted by concept_id.

    >>> t = concept_table()
    >>> t.num_rows == len(CONCEPTS) and t.column("concept_id").type == pa.int64()
    True
    """
    return concept_rows(sorted(CONCEPTS))


def concept_rows(rows: list[_C], valid_start: dt.date = _VALID_START,
                 valid_end: dt.date = _VALID_END) -> pa.Table:
    """``concept`` rows from tuples laid out as :data:`CONCEPTS`, in their order, valid from
    ``valid_start`` to ``valid_end``."""
    cols = list(zip(*rows, strict=True))
    n = len(rows)
    return pa.table({
        "concept_id": pa.array(cols[0], pa.int64()),
        "concept_name": pa.array(cols[1], pa.string()),
        "domain_id": pa.array(cols[2], pa.string()),
        "vocabulary_id": pa.array(cols[3], pa.string()),
        "concept_class_id": pa.array(cols[4], pa.string()),
        "standard_concept": pa.array(cols[5], pa.string()),
        "concept_code": pa.array(cols[6], pa.string()),
        "valid_start_date": pa.array([valid_start] * n, pa.date32()),
        "valid_end_date": pa.array([valid_end] * n, pa.date32()),
        "invalid_reason": pa.nulls(n, pa.string()),
    })


def ancestor_rows() -> list[tuple[int, int, int, int]]:
    """Transitive closure of ``PARENTS`` as (ancestor, descendant, min_levels, max_levels).

    Standard and classification concepts get a level-0 self row, as in OMOP.

    >>> rows = {(a, d): (lo, hi) for a, d, lo, hi in ancestor_rows()}
    >>> rows[(ASTHMA, ASTHMA)], rows[(RESP_DISORDER, CHILDHOOD_ASTHMA)]
    ((0, 0), (2, 2))
    >>> rows[(RESP_DISORDER, PHARYNGITIS)], rows[(INFECTIOUS_DISEASE, STREP)]
    ((3, 3), (1, 3))
    """
    levels: dict[tuple[int, int], tuple[int, int]] = {}
    for concept, *_rest, standard, _code in CONCEPTS:
        if standard is None:
            continue
        levels[(concept, concept)] = (0, 0)
        frontier = {concept: (0, 0)}
        while frontier:
            step: dict[int, tuple[int, int]] = {}
            for node, (lo, hi) in frontier.items():
                for parent in PARENTS.get(node, ()):
                    old = step.get(parent, levels.get((parent, concept)))
                    new = (lo + 1, hi + 1) if old is None else (min(old[0], lo + 1),
                                                                 max(old[1], hi + 1))
                    step[parent] = new
            for parent, lv in step.items():
                levels[(parent, concept)] = lv
            frontier = step
    return sorted((a, d, lo, hi) for (a, d), (lo, hi) in levels.items())


def ancestor_table() -> pa.Table:
    """The ``concept_ancestor`` table (int64 ids, int32 levels)."""
    a, d, lo, hi = zip(*ancestor_rows(), strict=True)
    return pa.table({
        "ancestor_concept_id": pa.array(a, pa.int64()),
        "descendant_concept_id": pa.array(d, pa.int64()),
        "min_levels_of_separation": pa.array(lo, pa.int32()),
        "max_levels_of_separation": pa.array(hi, pa.int32()),
    })
