"""De-identified data marts: a cohort's OMOP tables, made safe to hand over."""
