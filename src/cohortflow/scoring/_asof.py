"""Who is eligible for scoring as of a date D, from what was known on D.

**The extract as known on D** (:func:`known_on`): every event dated on or before D (static
rows too); nothing dated after D.  Intervals still open on D end on D: an observation
period that began on or before D ends on D at the latest, and so does an event with an
end date (a drug exposure, a condition era) that began on or before D.  A death after D is
not known.  So the cohort engine sees each person as a warehouse frozen at the end of D
would have shown them.

**Eligible as of D** (:func:`eligible`): the packaged target cohort's episodes, built by the
cohort engine from the extract as known on D, that are *open on D*: the episode began on or
before D (its index date) and has not ended before D (its exit, which is at most the end
of observation, falls on D or later), and the person is not known dead before D.  Under the
default exit (end of observation) that is "indexed on or before D and still observed on
D".  A person with several open episodes counts once.  Every eligible person is scored with
index time D (midnight), so the features look back from D.  A definition's look-ahead
criteria read the extract as known on D: ``post_observation_days: 30`` means indexed at
least 30 days before D.

**New entrants** (``entered_within``, ``cohortflow score --entered-within DAYS``): only the
open episodes whose index date falls in (D - DAYS, D], each person scored at the index time
of that episode (its entry, as the study indexes it; the latest, if several), not at D.  A
weekly or monthly scoring with DAYS = 7 or 31 then scores each child once, soon after cohort
entry, with the features the study's model was trained on: the look-back windows end at the
entry, so a 30-day count means what it meant in training (scored at D, a child who entered
20 days earlier would have a 30-day window holding the entry visit a third of the time
only: a shift of the model's inputs that the scoring itself made, which drift monitoring
would then flag), and the score is the model's risk for the time at risk after entry, which
is what it learnt and what the labels of :func:`cohortflow.scoring.outcomes` measure.
Nothing after D is read (the entry is on or before D, the windows end there), and on the
study's own extract each score is the study's prediction.  The cost: the first days of the
time at risk, up to DAYS, have passed when the score is made; keep DAYS short.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl

from cohortflow import events
from cohortflow.cohorts import END_PREFIX, CohortPlan, make_episodes, observation_periods

ELIGIBLE_SCHEMA = pl.Schema([("subject_id", pl.Int64()), ("index_time", pl.Datetime("us"))])


def as_of_time(as_of: date) -> datetime:
    """The index time of a scoring as of ``as_of``: that day at midnight.

    >>> as_of_time(date(2024, 3, 1))
    datetime.datetime(2024, 3, 1, 0, 0)
    """
    return datetime(as_of.year, as_of.month, as_of.day)


def known_on(ev: pl.LazyFrame, as_of: date) -> pl.LazyFrame:
    """The events of ``ev`` as known at the end of day ``as_of`` (see the module).

    >>> ev = pl.LazyFrame({"subject_id": [1] * 5,
    ...     "time": [datetime(2020, 1, 1), datetime(2020, 1, 5), datetime(2020, 3, 1),
    ...              datetime(2020, 2, 1), datetime(2020, 2, 10)],
    ...     "code": ["OBSERVATION_PERIOD//START", "C//1", "OBSERVATION_PERIOD//END",
    ...              "C//2", "END//C//1"], "numeric_value": [None, None, None, None, 36.0],
    ...     "unit": [None] * 5}, schema=events.POLARS_EVENT_SCHEMA)
    >>> [(r[1].date().isoformat(), r[2], r[3]) for r in
    ...  known_on(ev, date(2020, 1, 20)).collect().rows()]  # doctest: +NORMALIZE_WHITESPACE
    [('2020-01-01', 'OBSERVATION_PERIOD//START', None), ('2020-01-05', 'C//1', None),
     ('2020-01-20', 'END//C//1', 15.0), ('2020-01-20', 'OBSERVATION_PERIOD//END', None)]
    """
    cutoff = as_of_time(as_of) + timedelta(days=1)
    day = pl.lit(as_of_time(as_of))
    time, code = pl.col("time"), pl.col("code")
    period = code.is_in([events.OBSERVATION_START, events.OBSERVATION_END])
    ends = code.str.starts_with(END_PREFIX)
    plain = ev.filter((time.is_null() | (time < cutoff)) & ~period & ~ends)
    # an end after D whose interval began on or before D: the interval ends on D
    start = time.dt.date() - pl.duration(days=pl.col("numeric_value").cast(pl.Int64))
    open_ends = ev.filter(ends & (time >= cutoff) & (start <= as_of)).with_columns(
        numeric_value=(day.dt.date() - start).dt.total_days().cast(pl.Float32), time=day)
    closed_ends = ev.filter(ends & (time < cutoff))
    periods = observation_periods(ev).filter(pl.col("obs_start") <= as_of).with_columns(
        pl.min_horizontal("obs_end", pl.lit(as_of)).alias("obs_end"))
    schema = ev.collect_schema()
    period_events = pl.concat([
        periods.select("subject_id", time=pl.col(edge).cast(pl.Datetime("us")),
                       code=pl.lit(code_name))
        for edge, code_name in (("obs_start", events.OBSERVATION_START),
                                ("obs_end", events.OBSERVATION_END))
    ]).with_columns([pl.lit(None, schema[c]).alias(c) for c in schema.names()
                     if c not in ("subject_id", "time", "code")])
    parts = [plain, closed_ends, open_ends.select(schema.names()),
             period_events.select(schema.names())]
    return pl.concat(parts).sort("subject_id", "time", "code", nulls_last=False)


def eligible_steps(plan: CohortPlan, ev: pl.LazyFrame, as_of: date,
                   entered_within: int | None = None) -> list[tuple[str, pl.LazyFrame]]:
    """The cohort's steps on one shard's events as known on ``as_of``, then the episodes
    open on that day, then (``entered_within`` days given) those whose index date falls in
    the last ``entered_within`` days up to D (D - days, D], then one row per person
    (``ELIGIBLE_SCHEMA``, index time D)."""
    known = known_on(ev, as_of).collect().lazy()
    steps = make_episodes(plan)(known)
    episodes = steps[-1][1]
    dead = known.filter((pl.col("code") == events.DEATH)
                        & (pl.col("time").dt.date() < as_of)).select("subject_id").unique()
    open_on = (episodes.filter((pl.col("start") <= as_of) & (pl.col("end") >= as_of))
               .join(dead, on="subject_id", how="anti"))
    chosen = [(f"Episode open on {as_of.isoformat()}", open_on)]
    if entered_within is not None:
        open_on = open_on.filter(pl.col("start") > as_of - timedelta(days=entered_within))
        chosen.append((f"Entered within {entered_within} days", open_on))
    if entered_within is None:
        persons = (open_on.select("subject_id").unique().sort("subject_id")
                   .with_columns(index_time=pl.lit(as_of_time(as_of), pl.Datetime("us")))
                   .cast(ELIGIBLE_SCHEMA))
    else:  # a new entrant is scored at its entry (the latest one), as the study indexes it
        persons = (open_on.group_by("subject_id").agg(pl.col("index_time").max())
                   .sort("subject_id").cast(ELIGIBLE_SCHEMA))
    return [*steps, *chosen, ("One row per person", persons)]


def eligible(plan: CohortPlan, ev: pl.LazyFrame, as_of: date,
             entered_within: int | None = None) -> pl.DataFrame:
    """The persons eligible as of ``as_of`` on one shard (see the module), sorted by id;
    with ``entered_within``, only those whose open episode began in the last that many
    days (index date in (D - days, D]), at that episode's index time.

    >>> from cohortflow.study import Cohort, ConceptSet
    >>> ev = pl.LazyFrame({"subject_id": [1, 1, 1, 2, 2, 2],
    ...     "time": [datetime(2019, 1, 1), datetime(2019, 6, 1), datetime(2025, 1, 1),
    ...              datetime(2019, 1, 1), datetime(2019, 6, 1), datetime(2019, 12, 31)],
    ...     "code": ["OBSERVATION_PERIOD//START", "CONDITION//1", "OBSERVATION_PERIOD//END"] * 2,
    ...     "numeric_value": [None] * 6, "unit": [None] * 6}, schema=events.POLARS_EVENT_SCHEMA)
    >>> codes = pl.DataFrame({"code": ["CONDITION//1"], "parent_codes": [[]]})
    >>> cohort = Cohort.model_validate({"entry": {"concept_set": "a"},
    ...                                 "prior_observation_days": 0})
    >>> plan = CohortPlan(cohort, {"a": ConceptSet(include=[{"concept_id": 1}])}, codes)
    >>> eligible(plan, ev, date(2020, 3, 1)).rows()  # 2 left observation on 2019-12-31
    [(1, datetime.datetime(2020, 3, 1, 0, 0))]
    >>> eligible(plan, ev, date(2019, 5, 31)).height  # not yet indexed
    0
    >>> eligible(plan, ev, date(2020, 3, 1), entered_within=90).height  # entered 2019-06-01
    0
    >>> eligible(plan, ev, date(2019, 6, 30), entered_within=30)["index_time"].to_list()
    [datetime.datetime(2019, 6, 1, 0, 0), datetime.datetime(2019, 6, 1, 0, 0)]
    """
    return eligible_steps(plan, ev, as_of, entered_within)[-1][1].collect()
