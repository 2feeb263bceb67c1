"""The shard writer's sort and code counts: the fast paths give what the plain ones do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cohortflow import events, store_writer
from cohortflow.omop import _ingest


def _frame(rows: int, seed: int, ordered: bool) -> pl.DataFrame:
    """Events with many ties on (subject, time), nulls in every sortable column, negative
    and repeated values; ``ordered``: subject by subject, as a source exported per person."""
    rng = np.random.default_rng(seed)
    subjects = rng.integers(0, 50, rows)
    if ordered:
        subjects = np.sort(subjects)
    times = rng.integers(0, 5, rows).astype("datetime64[D]").astype("datetime64[us]")
    codes = np.array(["C//10", "C//9", "D//1", "END//C//10", "b", "B"])[rng.integers(0, 6, rows)]
    values = rng.choice([-2.5, -1.0, 0.0, 1.0, 3.0, np.nan], rows).astype(np.float32)
    units = np.array(["mg", "kg", "", "x"])[rng.integers(0, 4, rows)]
    frame = pl.DataFrame({"subject_id": subjects, "time": times, "code": codes,
                          "numeric_value": values, "unit": units},
                         schema=events.POLARS_EVENT_SCHEMA)
    return frame.with_columns(
        time=pl.when(rng.random(rows) < 0.1).then(None).otherwise(pl.col("time")),
        numeric_value=pl.col("numeric_value").fill_nan(None),
        unit=pl.when(pl.col("unit") == "").then(None).otherwise(pl.col("unit")),
    )


@pytest.mark.parametrize("ordered", [True, False])
def test_sort_events_equals_a_stable_sort_on_every_column(ordered: bool) -> None:
    frame = _frame(20_000, seed=3, ordered=ordered)
    assert store_writer._nearly_sorted(frame) is ordered
    expected = frame.sort(store_writer.SORT_KEY, nulls_last=False, maintain_order=True)
    codes = frame["code"].unique().sort()
    units = frame["unit"].drop_nulls().unique().sort()
    assert store_writer.sort_events(frame).equals(expected)
    assert store_writer.sort_events(frame, codes, units).equals(expected)
    # the packed key, forced on the ordered frame too, sorts it the same way
    key = store_writer._packed_key(frame, {"code": codes, "unit": units})
    assert key is not None
    packed = (frame.with_columns(pl.Series("_key", key))
              .sort([*store_writer.SORT_KEY[:2], "_key"], nulls_last=False, maintain_order=True)
              .select(store_writer.SORT_KEY))
    assert packed.equals(expected)


def test_counts_given_to_add_are_the_counts_it_would_make(tmp_path: Path) -> None:
    frame = _frame(5_000, seed=4, ordered=False)
    counted = store_writer.ShardWriter(tmp_path / "a", 3)
    counted.add(frame)
    given = store_writer.ShardWriter(tmp_path / "b", 3)
    given.add(frame, dict(frame["code"].value_counts().iter_rows()))
    assert counted.code_counts == given.code_counts
    assert counted.finish(tmp_path / "sa") == given.finish(tmp_path / "sb") == frame.height
    for shard in events.shard_names(3):
        assert (events.shard_path(tmp_path / "sa", shard).read_bytes()
                == events.shard_path(tmp_path / "sb", shard).read_bytes())


def test_clinical_counts_match_the_events_codes() -> None:
    """The ingest counts codes on the concept ids: the same counts as the events' codes,
    end events (only rows with an end date or a days' supply) included."""
    table = next(t for t in _ingest.CLINICAL_TABLES if t.name == "drug_exposure")
    frame = pl.DataFrame({
        "person_id": [1, 1, 2, 3, 3],
        "drug_concept_id": [7, 7, 8, 7, 9],
        "drug_exposure_start_date": ["2020-01-01", "2020-01-02", "2020-02-01", "2020-03-01",
                                     "2020-03-01"],
        "drug_exposure_end_date": ["2020-01-05", None, None, "2020-03-02", None],
        "days_supply": [None, 3, None, None, None],
    })
    found, counts = _ingest._clinical_events(frame, table, {}, "drug_exposure.csv")
    assert counts == dict(found["code"].value_counts().iter_rows())
    assert counts == {"DRUG//7": 3, "DRUG//8": 1, "DRUG//9": 1, "END//DRUG//7": 3}


def test_parts_are_compressed_and_read_back_unchanged(tmp_path: Path) -> None:
    """Every part is on disk at once before the sort: they are compressed (a 10⁹-event
    ingest's parts must fit beside its source), and the shards are what the frame sorts to."""
    frame = _frame(20_000, seed=5, ordered=False)
    writer = store_writer.ShardWriter(tmp_path / "w", 2)
    writer.add(frame)
    writer.flush()
    parts = sorted((tmp_path / "w" / "parts").rglob("*.arrow"))
    plain = tmp_path / "plain.arrow"
    frame.write_ipc(plain, compression="uncompressed")
    assert sum(p.stat().st_size for p in parts) < plain.stat().st_size / 2
    assert writer.finish(tmp_path / "store") == frame.height
    shards = [pl.read_parquet(events.shard_path(tmp_path / "store", s))
              for s in events.shard_names(2)]
    expected = frame.sort(store_writer.SORT_KEY, nulls_last=False, maintain_order=True)
    got = pl.concat(shards).sort(store_writer.SORT_KEY, nulls_last=False, maintain_order=True)
    assert got.equals(expected.select(got.columns))


@pytest.mark.parametrize("background", [False, True])
def test_the_store_does_not_depend_on_how_many_events_are_gathered_per_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: bool) -> None:
    """Frames are gathered up to ``SPILL_ROWS`` events before they become parts: the
    shards, the code counts and the units are the same whether every frame is its own
    part, a few frames share one or all do."""
    frames = [_frame(int(rows), seed, ordered=False)
              for seed, rows in enumerate([700, 1, 2_500, 300, 4_000, 50, 1_200])]
    stores = {}
    for spill in (1, 3_000, 10**9):
        monkeypatch.setattr(store_writer, "SPILL_ROWS", spill)
        writer = store_writer.ShardWriter(tmp_path / f"w{spill}", 4, background=background)
        for frame in frames:
            writer.add(frame)
        before = writer.parts
        total = writer.finish(tmp_path / f"s{spill}")
        assert total == sum(f.height for f in frames)
        stores[spill] = (writer.code_counts, writer.units, [
            events.shard_path(tmp_path / f"s{spill}", s).read_bytes()
            for s in events.shard_names(4)])
        # every frame its own spill; frames of 3,000 events at a time; one spill at the end
        assert before == {1: len(frames), 3_000: 2, 10**9: 0}[spill]
    assert stores[1] == stores[3_000] == stores[10**9]
    assert not (tmp_path / "w3000" / "parts").exists()
