"""The one rule that names the best trial: the highest score, and among equal scores the lowest trial number
(the configuration that got there first). Every choice of a best trial (the plan's base, the confirm phase's
candidates, the noise comparisons, the results table's ``best_trial``, ``export --by``, ``status``, the parent
run in MLflow) goes through :func:`best` or :func:`ranked`, so they can never disagree on a tie.

Works on anything with a score and a number: Optuna trials and :class:`~search.study.plan.TrialRecord` (``value``
and ``number``, the default), or rows of the results table (given ``score`` and ``number``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

# The defaults read ``value`` and ``number`` of whatever is ranked (an Optuna trial, a TrialRecord): typed Any so
# that they fit the ``Callable[[T], ...]`` parameters for every T; callers rank scored items only.


def _value(item: Any) -> float:
    return float(item.value)


def _number(item: Any) -> int:
    return int(item.number)


def _rank_key(score: Callable[[T], float], number: Callable[[T], int]) -> Callable[[T], tuple[float, int]]:
    return lambda item: (-score(item), number(item))


def ranked(items: Iterable[T], score: Callable[[T], float] = _value, number: Callable[[T], int] = _number) -> list[T]:
    """``items``, best first."""
    return sorted(items, key=_rank_key(score, number))


def best(items: Iterable[T], score: Callable[[T], float] = _value, number: Callable[[T], int] = _number) -> T | None:
    """The best of ``items``, or None when there is none."""
    return min(items, key=_rank_key(score, number), default=None)
