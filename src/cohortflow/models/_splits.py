"""Train/test splits by person and the cross-validation folds inside train.

Every split is a pure function of subject ids, labels (or index dates) and the study seed:
the same persons test on every profile, for every configuration, so the leaderboard
compares like with like.  Folds only ever hold training persons: the test set never picks
a model.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def person_hash(subject_ids: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A fixed, well-mixed 64-bit hash of each subject id (SplitMix64 of id, seed, salt).

    >>> person_hash(np.array([1, 2]), seed=42, salt=0).tolist()
    [6187920328794508980, 15406545844551094397]
    """
    with np.errstate(over="ignore"):
        key = np.uint64((seed * 1_000_003 + salt) & 0xFFFFFFFFFFFFFFFF)
        z = (np.asarray(subject_ids).astype(np.uint64) + key) * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _rank_within(groups: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Rank of each row by ``keys`` inside its group (0 = smallest key)."""
    order = np.lexsort((keys, groups))
    ranks = np.empty(len(keys), dtype=np.int64)
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(keys)])
    ranks[order] = np.arange(len(keys)) - np.repeat(starts, sizes)
    return ranks


def matched_units(subject_ids: np.ndarray, match_set: np.ndarray) -> np.ndarray:
    """Each row's unit of a matched case-control design: the smallest subject id among the
    persons linked to it through shared matched sets (a case and its controls, and every
    set another episode of one of them is in), so that a split by unit keeps each set
    whole and each person on one side.

    >>> matched_units(np.array([5, 9, 7, 3, 9]), np.array([0, 0, 1, 1, 1])).tolist()
    [3, 3, 3, 3, 3]
    >>> matched_units(np.array([5, 9, 7, 3]), np.array([0, 0, 1, 1])).tolist()
    [5, 5, 3, 3]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    persons, person_of = np.unique(subject_ids, return_inverse=True)
    sets, set_of = np.unique(match_set, return_inverse=True)
    n = len(persons) + len(sets)
    links = coo_matrix((np.ones(len(person_of)), (person_of, len(persons) + set_of)),
                       shape=(n, n))
    _, component = connected_components(links, directed=False)
    smallest = np.full(component.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, component[: len(persons)], persons.astype(np.int64))
    return cast(np.ndarray, smallest[component[person_of]])


def stratified_test(subject_ids: np.ndarray, label: np.ndarray, fraction: float,
                    seed: int) -> np.ndarray:
    """Test-set membership: ``round(n * fraction)`` persons of each label value, drawn by
    a hash of the id and seed.

    >>> ids = np.arange(1, 9); y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    >>> test = stratified_test(ids, y, 0.5, seed=42)
    >>> int(test[y == 0].sum()), int(test[y == 1].sum())
    (3, 1)
    """
    label = np.asarray(label).astype(np.int64)
    ranks = _rank_within(label, person_hash(subject_ids, seed, salt=1))
    counts = np.bincount(label, minlength=2)
    quota = np.floor(counts * fraction + 0.5).astype(np.int64)
    return cast(np.ndarray, ranks < quota[label])


def time_test(index_time: np.ndarray, test_from: dt.date) -> np.ndarray:
    """Test-set membership of a temporal validation: index dates on or after ``test_from``.

    >>> t = np.array(["2018-12-31", "2019-01-01"], dtype="datetime64[us]")
    >>> time_test(t, dt.date(2019, 1, 1)).tolist()
    [False, True]
    """
    return np.asarray(index_time) >= np.datetime64(test_from, "us")


def cv_folds(subject_ids: np.ndarray, label: np.ndarray, is_test: np.ndarray, folds: int,
             seed: int) -> np.ndarray:
    """Stratified fold of each training person (0 .. folds-1), -1 for test persons.

    Inside each label value the training persons are ordered by a hash and dealt out in
    turn, so fold sizes and outcome counts differ by at most one.

    >>> ids = np.arange(1, 9); y = np.array([0, 0, 0, 0, 1, 1, 0, 1])
    >>> f = cv_folds(ids, y, np.array([False] * 6 + [True] * 2), 2, seed=42)
    >>> f[6:].tolist(), sorted(f[y == 1][:2].tolist()), sorted(f[:4].tolist())
    ([-1, -1], [0, 1], [0, 0, 1, 1])
    """
    label = np.asarray(label).astype(np.int64)
    is_test = np.asarray(is_test, dtype=bool)
    group = np.where(is_test, 2, label)
    ranks = _rank_within(group, person_hash(subject_ids, seed, salt=2))
    return np.where(is_test, -1, ranks % folds)
