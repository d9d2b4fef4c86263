"""The options of one ``losstune search`` run, in a module of their own so that the command line can build them
without importing the worker (and with it torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchOptions:
    budget: int | None = None  # this week's budget, instead of budget.trials_per_week
    workers: int = 1
    timeout: float | None = None  # seconds; no new trial starts after it
    allow_data_change: bool = False
    progress: bool = True
