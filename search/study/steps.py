"""What the plan reads and what it says: a stored trial as the plan sees it (:class:`PlanTrial`), the next trial
to run (:class:`Step`, its loss checked when it is made), or :class:`Wait` for points running elsewhere. Losses
are :data:`~search.study.loss_params.LossPoint` values: a LossConfig, or a RefusedLoss that says why not."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from search.study.loss_point import LossPoint, config_key
from search.study.phases import Phase

__all__ = ["PlanTrial", "Step", "Wait", "config_key", "pairing_key"]


@dataclass(frozen=True)
class PlanTrial:
    """What the plan needs to know of one stored trial: a view of its record
    (:class:`~search.study.trial_record.StoredTrial`, which is what is stored) with its state and score, made by
    :func:`search.study.results.plan_trial_of`; the plan also makes some for steps taken but not yet asked, and
    the worker one for a trial it has just trained (:meth:`search.run.trial_outcome.TrialProgress.plan_trial`)."""

    number: int
    phase: str
    state: str  # COMPLETE, FAIL, RUNNING, WAITING, PRUNED
    loss: LossPoint  # a RefusedLoss for a trial failed as invalid (and one killed before its attrs)
    value: float | None = None
    failure: str | None = None
    cv: dict | None = None  # the trial's own CV settings when not the study's (a confirm trial), else None
    cv_seed: int | None = None  # the CV seed it ran with (None: not recorded, a trial from before it was)
    fold_scores: tuple[float, ...] | None = None  # repeats * folds, repeat-major
    folds: int | None = None
    repeats: int | None = None
    fingerprint: str | None = None  # the data it was scored on (``data_fingerprint``)

    @property
    def scored(self) -> bool:
        return self.state == "COMPLETE" and self.value is not None

    @property
    def cv_key(self) -> str:
        """Trials with the same key were evaluated on the same splits and seeds of the same data, so they can be
        paired fold by fold (compared, ensembled, estimated together): the CV seed, the folds, the repeats and
        the data fingerprint. A trial that lacks one of them (recorded before it was) pairs only with trials
        that lack the same ones."""
        return pairing_key(self.cv_seed, self.folds, self.repeats, self.fingerprint)


@dataclass(frozen=True)
class Step:
    """The next trial to run: a grid point (``loss`` given) or a TPE draw (``space`` given, over ``base``).

    A point is checked when the step is made (the plan merges it with :func:`~search.study.loss_params.with_values`),
    before any worker reserves a budget slot for it: ``loss`` is its LossConfig, or a RefusedLoss saying why
    LossConfig refuses it (such a point still becomes a trial, failed at once with that reason, so that the plan
    counts it as done and moves on)."""

    phase_index: int
    phase: Phase
    base: LossPoint
    loss: LossPoint | None = None
    space: dict[str, tuple[float, float]] | None = None
    attempt: int = 0
    cv: dict | None = None  # CV settings replacing the study's for this trial (a confirm trial's fresh seed)

    @property
    def point(self) -> LossPoint:
        """The loss the step's trial is counted under until it is asked: its grid point, or a TPE draw's base."""
        return self.base if self.loss is None else self.loss

    @property
    def claim(self) -> str | None:
        """The key a worker claims before running a grid point, so that two workers never run it twice."""
        if self.loss is None:
            return None
        return f"{self.phase.name}:{config_key(self.loss)}#{self.attempt}"


@dataclass(frozen=True)
class Wait:
    """Every pending point of the current phase is running elsewhere; the next phase needs their results."""

    phase: Phase
    running: list[int] = field(default_factory=list)


def pairing_key(cv_seed: int | None, folds: int | None, repeats: int | None, fingerprint: str | None) -> str:
    """The splits a trial's scores and OOF predictions belong to (see :attr:`PlanTrial.cv_key`)."""
    return json.dumps({"seed": cv_seed, "folds": folds, "repeats": repeats, "data": fingerprint}, sort_keys=True)
