"""``codes.parquet`` from an OMOP source: every code the ingest saw and its ancestors, with
descriptions, parent links and the full ancestor closure from ``concept_ancestor``."""

from __future__ import annotations

import polars as pl

from cohortflow import events
from cohortflow.omop._source_base import OmopSource

_NODE = {"domain": pl.String, "concept_id": pl.Int64}


def _ancestry(source: OmopSource, descendants: pl.Series) -> pl.DataFrame:
    """Rows of concept_ancestor (every level, self rows left out) whose descendant is in
    ``descendants``, as ``concept_id, ancestor, levels``."""
    required = ["ancestor_concept_id", "descendant_concept_id", "min_levels_of_separation"]
    wanted = descendants.unique().sort().implode()
    frames = [pl.DataFrame(schema={"concept_id": pl.Int64, "ancestor": pl.Int64,
                                   "levels": pl.Int64})]
    for frame in source.batches("concept_ancestor", required):
        frames.append(frame.select(
            pl.col("descendant_concept_id").cast(pl.Int64).alias("concept_id"),
            pl.col("ancestor_concept_id").cast(pl.Int64).alias("ancestor"),
            pl.col("min_levels_of_separation").cast(pl.Int64).alias("levels"),
        ).filter(pl.col("concept_id").is_in(wanted), pl.col("concept_id") != pl.col("ancestor")))
    return (pl.concat(frames).group_by("concept_id", "ancestor").agg(pl.col("levels").min())
            .sort("concept_id", "ancestor"))


def parent_links(up: pl.DataFrame) -> pl.DataFrame:
    """Parent links ``domain, concept_id, ancestor`` of each node, from its ancestor rows
    ``domain, concept_id, ancestor, levels`` (``concept_ancestor``, self rows left out).

    The direct parents (``min_levels_of_separation`` 1), plus, for ancestors that no direct
    parent leads to (a vocabulary that skips a level, as Eunomia's clinical drugs reach
    their ingredient only at level 2), the nearest of those: each one that is not an
    ancestor of another of them.  So walking ``parent_codes`` reaches exactly the ancestors.

    >>> up = pl.DataFrame({"domain": ["C"] * 4, "concept_id": [2, 3, 3, 4],
    ...                    "ancestor": [1, 1, 2, 3], "levels": [1, 2, 1, 2]})
    >>> parent_links(up).rows()  # 4 reaches 3 only at level 2: 3 is its nearest
    [('C', 2, 1), ('C', 3, 2), ('C', 4, 3)]
    """
    keys = ["domain", "concept_id", "ancestor"]
    direct = up.filter(pl.col("levels") == 1).select(keys)
    via_direct = direct.join(up.select("domain", pl.col("concept_id").alias("parent"),
                                       "ancestor"),
                             left_on=["domain", "ancestor"], right_on=["domain", "parent"],
                             how="inner", suffix="_above").select(
        "domain", "concept_id", pl.col("ancestor_above").alias("ancestor"))
    skipped = up.select(keys).join(pl.concat([direct, via_direct]), on=keys, how="anti")
    above_skipped = skipped.join(
        up.select("domain", pl.col("concept_id").alias("lower"),
                  pl.col("ancestor").alias("higher")),
        left_on=["domain", "ancestor"], right_on=["domain", "lower"], how="inner",
    ).select("domain", "concept_id", pl.col("higher").alias("ancestor"))
    nearest = skipped.join(above_skipped, on=keys, how="anti")
    return pl.concat([direct, nearest]).unique().sort(keys)


def codes_table(source: OmopSource, seen: set[str]) -> pl.DataFrame:
    """codes.parquet: every seen code and its ancestors, with descriptions, parents and the
    full ancestor closure.

    ``ancestor_codes`` lists every ancestor of the code in ``concept_ancestor`` (all
    levels), so descendant sets are exactly the vocabulary's closure.  ``parent_codes``
    are the direct parents and, where the table skips a level, the nearest ancestors (see
    :func:`parent_links`); walking them reaches the same ancestors.  Ancestors take the domain
    prefix of the code below them: ``CONDITION//317009`` is the parent of
    ``CONDITION//2000000001``, and a concept used in two tables (``DRUG//1125315`` and
    ``DRUG_ERA//1125315``) gets its description, parents and ancestors in each.
    """
    split = [(code, *code.partition(events.CODE_SEPARATOR)[::2]) for code in sorted(seen)]
    seen_nodes = pl.DataFrame(
        [(domain, int(cid)) for _, domain, cid in split if cid.lstrip("-").isdigit()],
        schema=_NODE, orient="row")
    first = _ancestry(source, seen_nodes["concept_id"])
    nodes = pl.concat([
        seen_nodes,
        seen_nodes.join(first, on="concept_id").select(
            "domain", pl.col("ancestor").alias("concept_id")),
    ]).unique().sort("domain", "concept_id")
    up = nodes.join(_ancestry(source, nodes["concept_id"]), on="concept_id", how="inner")
    names: dict[int, str] = {}
    wanted = nodes["concept_id"].unique().sort().implode()
    for frame in source.batches("concept", ["concept_id", "concept_name"]):
        hit = frame.filter(pl.col("concept_id").cast(pl.Int64).is_in(wanted))
        names.update(zip(hit["concept_id"].cast(pl.Int64).to_list(),
                         hit["concept_name"].to_list(), strict=True))

    def code_lists(links: pl.DataFrame, column: str) -> pl.DataFrame:
        return (links.sort("ancestor").group_by("domain", "concept_id", maintain_order=True)
                .agg(pl.format("{}//{}", "domain", "ancestor").alias(column)))

    described = (
        nodes.join(code_lists(parent_links(up), "parent_codes"), on=["domain", "concept_id"],
                   how="left")
        .join(code_lists(up, events.ANCESTOR_CODES), on=["domain", "concept_id"], how="left")
        .select(pl.format("{}//{}", "domain", "concept_id").alias("code"),
                pl.col("concept_id").replace_strict(names, default=None,
                                                    return_dtype=pl.String).alias("name"),
                pl.col("parent_codes").fill_null([]),
                pl.col(events.ANCESTOR_CODES).fill_null([]))
        .select("code", pl.coalesce("name", "code").alias("description"), "parent_codes",
                events.ANCESTOR_CODES)
    )
    others = pl.DataFrame({"code": [c for c, *_ in split]}).join(described, on="code",
                                                                how="anti")
    empty = pl.lit([], pl.List(pl.String))
    return pl.concat([
        described,
        others.select("code", pl.col("code").alias("description"),
                      empty.alias("parent_codes"), empty.alias(events.ANCESTOR_CODES)),
    ]).sort("code")
