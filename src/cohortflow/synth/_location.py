"""Where the synthetic persons live: an OMOP ``location`` table of 5-digit ZIP codes and
each person's ``location_id``.

A few hundred ZIP codes over three dozen 3-digit ZIP prefixes (ZIP3) in three states, of
heavy-tailed sizes (a few prefixes hold most persons), among them HIPAA's restricted ZIP3
prefixes (45 CFR §164.514(b)(2)(i)(B): under 20,000 residents, so Safe Harbor turns them
into ``000``) with few persons each: what a de-identified export must generalise.

The draws come from their own streams, ``[seed, TAG]`` for the table and
``[seed, TAG, block]`` per block of :data:`BLOCK_PERSONS` persons, never from a chunk's:
every other table, and so the event store, cohorts and tensors, stays as it was, and a
person's location depends on the seed and the person id only (not on ``chunk_persons``).

>>> table = location_table(7)
>>> table.num_rows, table.column_names == SCHEMA.names
(276, True)
>>> ids = location_ids(7, 1, 5)
>>> ids.tolist() == location_ids(7, 1, 3).tolist() + location_ids(7, 4, 2).tolist()
True
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cohortflow.privacy import RESTRICTED_ZIP3

TAG = 0x10CA7  # keeps the location streams apart from every other stream of the generator
BLOCK_PERSONS = 1_000
UNITED_STATES = 42046186  # OMOP Geography concept "United States of America"

SCHEMA = pa.schema([
    ("location_id", pa.int64()), ("address_1", pa.string()), ("address_2", pa.string()),
    ("city", pa.string()), ("state", pa.string()), ("zip", pa.string()),
    ("county", pa.string()), ("location_source_value", pa.string()),
    ("country_concept_id", pa.int64()), ("country_source_value", pa.string()),
    ("latitude", pa.float64()), ("longitude", pa.float64())])
"""The OMOP CDM v5.4 ``location`` table."""

# ZIP3 -> (state, city, county, latitude, longitude): three states, 36 prefixes.
ZIP3S: dict[str, tuple[str, str, str, float, float]] = {
    "100": ("NY", "New York", "New York", 40.78, -73.97),
    "101": ("NY", "New York", "New York", 40.75, -73.98),
    "102": ("NY", "New York", "New York", 40.71, -74.01),  # restricted
    "103": ("NY", "Staten Island", "Richmond", 40.58, -74.15),
    "104": ("NY", "Bronx", "Bronx", 40.85, -73.87),
    "105": ("NY", "White Plains", "Westchester", 41.03, -73.76),
    "112": ("NY", "Brooklyn", "Kings", 40.65, -73.95),
    "113": ("NY", "Flushing", "Queens", 40.74, -73.83),
    "117": ("NY", "Hicksville", "Nassau", 40.77, -73.52),
    "122": ("NY", "Albany", "Albany", 42.65, -73.76),
    "132": ("NY", "Syracuse", "Onondaga", 43.05, -76.15),
    "142": ("NY", "Buffalo", "Erie", 42.89, -78.88),
    "146": ("NY", "Rochester", "Monroe", 43.16, -77.61),
    "750": ("TX", "Dallas", "Dallas", 32.78, -96.80),
    "752": ("TX", "Dallas", "Dallas", 32.80, -96.77),
    "761": ("TX", "Fort Worth", "Tarrant", 32.75, -97.33),
    "770": ("TX", "Houston", "Harris", 29.76, -95.37),
    "773": ("TX", "Conroe", "Montgomery", 30.31, -95.46),
    "775": ("TX", "Pasadena", "Harris", 29.69, -95.21),
    "782": ("TX", "San Antonio", "Bexar", 29.42, -98.49),
    "787": ("TX", "Austin", "Travis", 30.27, -97.74),
    "790": ("TX", "Amarillo", "Potter", 35.22, -101.83),  # restricted
    "791": ("TX", "Amarillo", "Randall", 35.18, -101.88),
    "794": ("TX", "Lubbock", "Lubbock", 33.58, -101.86),
    "799": ("TX", "El Paso", "El Paso", 31.76, -106.49),
    "870": ("NM", "Albuquerque", "Bernalillo", 35.08, -106.65),
    "871": ("NM", "Albuquerque", "Bernalillo", 35.11, -106.61),
    "874": ("NM", "Farmington", "San Juan", 36.73, -108.22),
    "875": ("NM", "Santa Fe", "Santa Fe", 35.69, -105.94),
    "877": ("NM", "Las Vegas", "San Miguel", 35.59, -105.22),
    "878": ("NM", "Socorro", "Socorro", 34.06, -106.89),  # restricted
    "879": ("NM", "Truth or Consequences", "Sierra", 33.13, -107.25),  # restricted
    "880": ("NM", "Las Cruces", "Dona Ana", 32.32, -106.76),
    "881": ("NM", "Clovis", "Curry", 34.40, -103.21),
    "882": ("NM", "Roswell", "Chaves", 33.39, -104.52),
    "884": ("NM", "Tucumcari", "Quay", 35.17, -103.72),  # restricted
}
RESTRICTED_SHARE = 0.0015
"""Each restricted prefix's share of the persons: a handful per ten thousand."""


def _zip_codes(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Every ZIP3's 5-digit codes, in ZIP3 then code order, and each code's share of the
    persons: ZIP3 sizes log-normal (heavy-tailed), restricted ZIP3s held to
    :data:`RESTRICTED_SHARE`, codes within a ZIP3 Zipf-like."""
    zips: list[str] = []
    shares: list[np.ndarray] = []
    prefixes = sorted(ZIP3S)
    size = rng.lognormal(0.0, 1.2, len(prefixes))
    open_total = sum(s for p, s in zip(prefixes, size, strict=True)
                     if p not in RESTRICTED_ZIP3)
    open_share = 1.0 - RESTRICTED_SHARE * sum(p in RESTRICTED_ZIP3 for p in prefixes)
    for prefix, weight in zip(prefixes, size, strict=True):
        restricted = prefix in RESTRICTED_ZIP3
        k = int(rng.integers(2, 5)) if restricted else int(rng.integers(4, 15))
        codes = np.sort(rng.choice(100, size=k, replace=False))
        zips += [f"{prefix}{c:02d}" for c in codes]
        within = 1.0 / np.arange(1, k + 1) ** 1.1
        rng.shuffle(within)
        total = RESTRICTED_SHARE if restricted else open_share * weight / open_total
        shares.append(total * within / within.sum())
    return zips, np.concatenate(shares)


def location_table(seed: int) -> pa.Table:
    """The ``location`` table of ``seed``: one row per ZIP code (no street address), with
    the ZIP3's city, county and a point near its centre."""
    rng = np.random.default_rng([seed, TAG])
    zips, _ = _zip_codes(rng)
    places = [ZIP3S[z[:3]] for z in zips]
    n = len(zips)
    jitter = rng.normal(0.0, 0.05, (n, 2))
    return pa.Table.from_arrays([
        pa.array(np.arange(1, n + 1, dtype=np.int64)),
        pa.nulls(n, pa.string()), pa.nulls(n, pa.string()),
        pa.array([p[1] for p in places]), pa.array([p[0] for p in places]),
        pa.array(zips), pa.array([p[2] for p in places]), pa.array(zips),
        pa.array(np.full(n, UNITED_STATES, dtype=np.int64)), pa.array(["US"] * n),
        pa.array(np.round([p[3] for p in places] + jitter[:, 0], 4)),
        pa.array(np.round([p[4] for p in places] + jitter[:, 1], 4)),
    ], schema=SCHEMA)


def location_ids(seed: int, first_id: int, n: int) -> np.ndarray:
    """The ``location_id`` of persons ``first_id`` .. ``first_id + n - 1`` (ids from 1): a
    ZIP code drawn by its share, per block of :data:`BLOCK_PERSONS` person ids."""
    _, shares = _zip_codes(np.random.default_rng([seed, TAG]))
    cumulative = np.cumsum(shares)
    cumulative /= cumulative[-1]
    out = np.empty(n, dtype=np.int64)
    first, last = first_id - 1, first_id - 1 + n  # 0-based, end exclusive
    for b in range(first // BLOCK_PERSONS, -(-last // BLOCK_PERSONS)):
        lo, hi = max(first, b * BLOCK_PERSONS), min(last, (b + 1) * BLOCK_PERSONS)
        draws = np.random.default_rng([seed, TAG, b]).random(BLOCK_PERSONS)
        picked = np.searchsorted(cumulative, draws[lo - b * BLOCK_PERSONS:
                                                   hi - b * BLOCK_PERSONS], side="right")
        out[lo - first:hi - first] = np.minimum(picked, shares.size - 1) + 1
    return out


def with_locations(person: pa.Table, seed: int) -> pa.Table:
    """``person`` with its ``location_id`` column set from :func:`location_ids` (the ids
    must run consecutively from the first row's)."""
    ids = person.column("person_id").to_numpy()
    column = person.schema.get_field_index("location_id")
    if ids.size == 0:
        return person
    return person.set_column(column, person.schema.field(column),
                             pa.array(location_ids(seed, int(ids[0]), ids.size)))
