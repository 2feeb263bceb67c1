"""The warehouse preset's vocabulary: the demo's concepts plus about 21,700 generated ones.

Five clinical domains each get a generated tree of five levels (a classification root at
level 0, groupers at levels 1-2, standard codes at levels 3-4); 5% of the level-4 codes get
a second parent two levels up, so min and max levels of separation differ.  The demo's
concepts hang under the trees (asthma under the condition tree, albuterol's classes under
the drug tree, ...), and asthma gains generated subtypes, so descendant expansion and
ancestor roll-up do real work.  Generated ids live in OMOP's local range:
``2_010_000_000 + 1_000_000 * domain + i``.

Everything is drawn from :data:`VOCAB_SEED`, so every warehouse shares one vocabulary
whatever its data seed; :func:`warehouse_vocabulary` builds it once per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import polars as pl
import pyarrow as pa

from cohortflow.synth import vocab as V  # noqa: N812

VOCAB_SEED = 20_240_613
ZIPF_EXPONENT = 1.1
# domain -> (OMOP domain_id, code prefix, nodes at levels 1..4)
DOMAINS = {
    "condition": ("Condition", "C", (24, 240, 1600, 8000)),
    "drug": ("Drug", "D", (20, 150, 1200, 5000)),
    "procedure": ("Procedure", "P", (16, 120, 600, 2400)),
    "measurement": ("Measurement", "M", (12, 60, 200, 1000)),
    "observation": ("Observation", "O", (10, 50, 150, 800)),
}
BASE = 2_010_000_000
UNIT_BASE = BASE + 9_000_000
N_UNITS = 40
SUBTYPE_BASE = BASE + 8_000_000
# Asthma subtypes: 8 under each demo asthma code, and 8 under the first of each eight.
_SUBTYPE_PARENTS = (V.ASTHMA, V.CHILDHOOD_ASTHMA, V.ALLERGIC_ASTHMA)
# Where the demo's top concepts hang in the generated trees: (demo concept, domain, level-1
# node index).
_DEMO_TOPS = (
    (V.RESP_DISORDER, "condition", 0), (V.INFECTIOUS_DISEASE, "condition", 1),
    (V.OTITIS, "condition", 1), (V.SPRAIN, "condition", 2), (V.FEVER, "condition", 3),
    (V.ATOPIC_DERMATITIS, "condition", 4), (V.AIRWAY_CLASS, "drug", 0),
    (V.AMOXICILLIN, "drug", 1), (V.ACETAMINOPHEN, "drug", 2), (V.IBUPROFEN, "drug", 2),
    (V.VITAL_SIGNS, "measurement", 0), (V.EOSINOPHILS, "measurement", 1),
    (V.PULMONARY_PROCEDURE, "procedure", 0), (V.IMMUNIZATION, "procedure", 1),
    (V.STREP_TEST, "procedure", 2), (V.DEV_SCREENING, "procedure", 3),
)


@dataclass(frozen=True)
class Pool:
    """The codes a domain's events draw from (levels 3-4), with Zipf-like probabilities."""

    concept: np.ndarray  # int64
    cdf: np.ndarray  # float64, cumulative probability, last == 1

    def draw(self, u: np.ndarray) -> np.ndarray:
        """Codes for uniform draws ``u``."""
        return self.concept[np.minimum(np.searchsorted(self.cdf, u, side="right"),
                                       self.concept.size - 1)]


@dataclass(frozen=True)
class Vocabulary:
    """The warehouse vocabulary: the two OMOP tables and what the generator draws from."""

    concept: pa.Table
    ancestor: pa.Table
    pools: dict[str, Pool]
    subtypes: np.ndarray  # generated asthma subtypes, used only after asthma onset
    # Per code of the measurement and observation pools (same order as Pool.concept):
    unit: dict[str, np.ndarray]  # unit concept id, 0 when the code has no value
    unit_name: dict[str, np.ndarray]  # UCUM-like unit code strings ("" when none)
    log_mu: dict[str, np.ndarray]  # value ~ exp(log_mu + log_sd * normal)
    log_sd: dict[str, np.ndarray]
    days_supply: np.ndarray  # per drug-pool code
    quantity: np.ndarray  # per drug-pool code


def _names(prefix: str, ids: np.ndarray) -> np.ndarray:
    return np.char.add(prefix, (ids % 10_000_000).astype(str))


def _tree(rng: np.random.Generator, d: int, sizes: tuple[int, ...]
          ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Node ids per level (0-4) and each node's primary parent id (levels 1-4)."""
    start = BASE + 1_000_000 * d
    levels = [np.array([start], np.int64)]
    parents = []
    offset = start + 1
    for size in sizes:
        ids = np.arange(offset, offset + size, dtype=np.int64)
        offset += size
        above = levels[-1]
        # Random but complete: every node above gets at least one child.
        slot = np.sort(np.r_[np.arange(above.size), rng.integers(0, above.size,
                                                                 size - above.size)])
        parents.append(above[slot])
        levels.append(ids)
    return levels, parents


def _closure(edges: pl.DataFrame, nodes: np.ndarray) -> pl.DataFrame:
    """concept_ancestor rows (self rows included) from direct ``child, parent`` edges."""
    rows = [pl.DataFrame({"ancestor_concept_id": nodes, "descendant_concept_id": nodes,
                          "levels": np.zeros(nodes.size, np.int32)})]
    step = edges.select(pl.col("parent").alias("ancestor_concept_id"),
                        pl.col("child").alias("descendant_concept_id"),
                        pl.lit(1, pl.Int32).alias("levels"))
    while step.height:
        rows.append(step)
        step = step.join(edges, left_on="ancestor_concept_id", right_on="child").select(
            pl.col("parent").alias("ancestor_concept_id"), "descendant_concept_id",
            (pl.col("levels") + 1).alias("levels"))
    return (pl.concat(rows).group_by("ancestor_concept_id", "descendant_concept_id")
            .agg(pl.col("levels").min().alias("min_levels_of_separation"),
                 pl.col("levels").max().alias("max_levels_of_separation"))
            .sort("ancestor_concept_id", "descendant_concept_id"))


def _zipf(rng: np.random.Generator, codes: np.ndarray) -> Pool:
    ranks = rng.permutation(codes.size) + 1
    weight = ranks.astype(np.float64) ** -ZIPF_EXPONENT
    cdf = np.cumsum(weight)
    return Pool(codes, cdf / cdf[-1])


@cache
def warehouse_vocabulary() -> Vocabulary:
    """Build the warehouse vocabulary (deterministic; cached per process).

    >>> voc = warehouse_vocabulary()
    >>> depth = max(voc.ancestor.column("max_levels_of_separation").to_pylist())
    >>> voc.concept.num_rows, depth, voc.pools["measurement"].concept.size
    (21788, 6, 1200)
    """
    rng = np.random.default_rng(VOCAB_SEED)
    frames, edges, pools = [], [], {}
    unit, unit_name, log_mu, log_sd = {}, {}, {}, {}
    unit_ids = np.arange(UNIT_BASE, UNIT_BASE + N_UNITS, dtype=np.int64)
    unit_codes = np.char.add("u", np.arange(N_UNITS).astype(str))
    frames.append(pl.DataFrame({
        "concept_id": unit_ids, "concept_name": np.char.add("synthetic unit ", unit_codes),
        "domain_id": "Unit", "vocabulary_id": V.LOCAL, "concept_class_id": "Unit",
        "standard_concept": "S", "concept_code": unit_codes}))
    for d, (key, (domain, prefix, sizes)) in enumerate(DOMAINS.items()):
        levels, parents = _tree(rng, d, sizes)
        for lv, ids in enumerate(levels):
            frames.append(pl.DataFrame({
                "concept_id": ids,
                "concept_name": _names(f"Synthetic {key} L{lv} #", ids),
                "domain_id": domain, "vocabulary_id": V.LOCAL,
                "concept_class_id": "Classification" if lv < 3 else "Clinical",
                "standard_concept": "C" if lv < 3 else "S",
                "concept_code": _names(f"CFW-{prefix}", ids)}))
        for ids, up in zip(levels[1:], parents, strict=True):
            edges.append(pl.DataFrame({"child": ids, "parent": up}))
        leaves = levels[4]
        extra = leaves[rng.random(leaves.size) < 0.05]
        edges.append(pl.DataFrame({"child": extra,
                                   "parent": levels[2][rng.integers(0, levels[2].size,
                                                                    extra.size)]}))
        pools[key] = _zipf(rng, np.r_[levels[3], levels[4]])
        n = pools[key].concept.size
        if key in ("measurement", "observation"):
            valued = np.ones(n, bool) if key == "measurement" else rng.random(n) < 0.3
            pick = rng.integers(0, N_UNITS, n)
            unit[key] = np.where(valued, unit_ids[pick], 0)
            unit_name[key] = np.where(valued, unit_codes[pick], "")
            log_mu[key] = np.where(valued, rng.normal(1.5, 1.5, n), np.nan)
            log_sd[key] = np.where(valued, rng.uniform(0.05, 0.5, n), np.nan)
        if key == "drug":
            days_supply = rng.choice(np.array([1, 3, 5, 7, 10, 14, 30, 90]), n)
            quantity = rng.choice(np.array([1.0, 10.0, 30.0, 60.0, 100.0, 120.0]), n)
    for demo, key, node in _DEMO_TOPS:
        d = list(DOMAINS).index(key)
        edges.append(pl.DataFrame({"child": [demo], "parent": [BASE + 1_000_000 * d + 1 + node]}))
    subtypes = np.arange(SUBTYPE_BASE, SUBTYPE_BASE + 32, dtype=np.int64)
    sub_parent = np.r_[np.repeat(_SUBTYPE_PARENTS, 8), np.repeat(subtypes[[0, 8, 16]], 3)[:8]]
    edges.append(pl.DataFrame({"child": subtypes, "parent": sub_parent.astype(np.int64)}))
    frames.append(pl.DataFrame({
        "concept_id": subtypes, "concept_name": _names("Synthetic asthma subtype #", subtypes),
        "domain_id": "Condition", "vocabulary_id": V.LOCAL,
        "concept_class_id": "Clinical Finding", "standard_concept": "S",
        "concept_code": _names("CFW-A", subtypes)}))
    demo = V.concept_table().drop_columns(["valid_start_date", "valid_end_date", "invalid_reason"])
    frames.append(pl.from_arrow(demo))  # type: ignore[arg-type]
    concept = pl.concat(frames, how="vertical_relaxed").sort("concept_id")
    n = concept.height
    concept_arrow = concept.to_arrow().cast(pa.schema([
        ("concept_id", pa.int64()), ("concept_name", pa.string()), ("domain_id", pa.string()),
        ("vocabulary_id", pa.string()), ("concept_class_id", pa.string()),
        ("standard_concept", pa.string()), ("concept_code", pa.string())]))
    concept_arrow = concept_arrow.append_column(
        "valid_start_date", pa.repeat(pa.scalar(V._VALID_START, pa.date32()), n)).append_column(
        "valid_end_date", pa.repeat(pa.scalar(V._VALID_END, pa.date32()), n)).append_column(
        "invalid_reason", pa.nulls(n, pa.string()))
    demo_edges = pl.DataFrame([(c, p) for c, ps in V.PARENTS.items() for p in ps],
                              schema={"child": pl.Int64, "parent": pl.Int64}, orient="row")
    all_edges = pl.concat([demo_edges, *(e.cast(pl.Int64) for e in edges)])
    nodes = concept.filter(pl.col("standard_concept").is_not_null())["concept_id"].to_numpy()
    ancestor = _closure(all_edges, nodes).to_arrow().cast(pa.schema([
        ("ancestor_concept_id", pa.int64()), ("descendant_concept_id", pa.int64()),
        ("min_levels_of_separation", pa.int32()), ("max_levels_of_separation", pa.int32())]))
    return Vocabulary(concept_arrow, ancestor, pools, subtypes, unit, unit_name, log_mu,
                      log_sd, days_supply, quantity)
