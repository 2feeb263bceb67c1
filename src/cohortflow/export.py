"""The export meant to leave the compute besides the report, one per analysis: the chosen
model's predictions under keyed pseudonyms, without dates, and the analysis's attrition with
small counts suppressed (and their complements), both written through the disclosure gate."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from cohortflow import privacy
from cohortflow.disclosure import Disclosure


def write(disclosure: Disclosure, attrition: Path, predictions: Path, predictions_out: Path,
          attrition_out: Path) -> None:
    """One analysis's export: its chosen model's ``predictions`` as ``predictions_out``
    (person pseudonym, split, label, prediction; no id, no date) and its ``attrition`` as
    ``attrition_out`` (each step's persons through :meth:`Disclosure.steps`).  Both outputs
    must be shared paths of the gate's study (``export/<analysis>/...``).

    The pseudonym key comes from ``$COHORTFLOW_PSEUDONYM_KEY`` (:func:`privacy.pseudonyms`),
    never from the study file or a Snakemake param: one person has the same pseudonym in
    every analysis of a run, so the exports can be joined outside without the ids."""
    frame = pl.read_parquet(predictions, columns=["subject_id", "split", "label",
                                                  "prediction"])
    exported = pl.DataFrame({
        "person": privacy.pseudonyms(frame["subject_id"].to_list()),
        "split": frame["split"],
        "label": frame["label"],
        "prediction": frame["prediction"],
    })
    # Not in subject-id order, which would hint at the ids; every column in the key, so a
    # person with many episodes comes out in one order too.
    exported = exported.sort("person", "split", "label", "prediction")
    steps = json.loads(Path(attrition).read_text())
    shown = disclosure.steps([s["subjects"] for s in steps])
    disclosure.write_parquet(predictions_out, exported)
    disclosure.write_json(attrition_out,
                          [{"step": s["step"], "persons": int(n) if n.isdigit() else n}
                           for s, n in zip(steps, shown, strict=True)])
