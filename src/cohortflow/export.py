"""The export meant to leave the compute besides the report: the chosen model's predictions
under keyed pseudonyms, without dates, and the cohort's attrition with small counts
suppressed (and their complements), both written through the disclosure gate."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from cohortflow import privacy
from cohortflow.disclosure import Disclosure


def write(disclosure: Disclosure, attrition: Path, predictions: Path) -> None:
    """``predictions.parquet`` and ``attrition.json`` in ``export/`` of the study's results.

    The pseudonym key comes from ``$COHORTFLOW_PSEUDONYM_KEY`` (:func:`privacy.pseudonyms`),
    never from the study file or a Snakemake param."""
    frame = pl.read_parquet(predictions)
    exported = pl.DataFrame({
        "person": privacy.pseudonyms(frame["subject_id"].to_list()),
        "split": frame["split"],
        "label": frame["label"],
        "prediction": frame["prediction"],
    }).sort("person")  # not in subject-id order, which would hint at the ids
    steps = json.loads(Path(attrition).read_text())
    shown = disclosure.steps([s["subjects"] for s in steps])
    disclosure.write_parquet(disclosure.layout.export_predictions, exported)
    disclosure.write_json(disclosure.layout.export_attrition,
                          [{"step": s["step"], "persons": int(n) if n.isdigit() else n}
                           for s, n in zip(steps, shown, strict=True)])
