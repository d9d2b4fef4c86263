"""What the plan reads and what it says: a stored trial as the plan sees it (:class:`PlanTrial`), the next trial
to run (:class:`Step`, its loss validated when it is made), or :class:`Wait` for points running elsewhere."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from objectives.config import LossConfig
from search.study.loss_params import LOSS_PARAMS, InvalidLoss, validated_loss
from search.study.phases import Phase


@dataclass(frozen=True)
class PlanTrial:
    """What the plan needs to know of one stored trial: a view of its record
    (:class:`~search.study.trial_record.StoredTrial`, which is what is stored) with its state and score, made by
    :func:`search.study.results.record_of`; the plan also makes some for steps taken but not yet asked."""

    number: int
    phase: str
    state: str  # COMPLETE, FAIL, RUNNING, WAITING, PRUNED
    loss: dict[str, float | None]
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
    """The next trial to run: a grid point (``loss`` given) or a TPE draw (``space`` given).

    A point is validated when the step is made, before any worker reserves a budget slot for it:
    ``loss_config`` is its typed loss, or ``invalid`` says why LossConfig refuses it (such a point still becomes
    a trial, failed at once with that reason, so that the plan counts it as done and moves on)."""

    phase_index: int
    phase: Phase
    base: dict[str, float | None]
    loss: dict[str, float | None] | None = None
    space: dict[str, tuple[float, float]] | None = None
    attempt: int = 0
    cv: dict | None = None  # CV settings replacing the study's for this trial (a confirm trial's fresh seed)
    loss_config: LossConfig | None = field(default=None, init=False, compare=False)
    invalid: str | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.loss is None:
            return  # a TPE draw is validated when it is drawn: resolved_loss
        try:  # the usual way to set a derived field of a frozen dataclass
            object.__setattr__(self, "loss_config", validated_loss(self.loss))
        except InvalidLoss as exc:
            object.__setattr__(self, "invalid", str(exc))

    def resolved_loss(self, drawn: dict[str, float | None]) -> LossConfig:
        """The trial's typed loss: the point's, validated when the step was made, or the TPE draw's (``drawn``,
        what Optuna sampled), validated now; :class:`InvalidLoss` for a configuration LossConfig refuses."""
        if self.loss is None:
            return validated_loss(drawn)
        if self.loss_config is None:
            raise InvalidLoss(self.invalid)
        return self.loss_config

    @property
    def claim(self) -> str | None:
        """The key a worker claims before running a grid point, so that two workers never run it twice."""
        if self.loss is None:
            return None
        return f"{self.phase.name}:{config_key(self.loss)}#{self.attempt}"

    @property
    def fixed(self) -> dict[str, float | None]:
        """Every loss parameter not sampled: all of them for a grid point."""
        if self.loss is not None:
            return dict(self.loss)
        return {k: v for k, v in self.base.items() if k not in (self.space or {})}


@dataclass(frozen=True)
class Wait:
    """Every pending point of the current phase is running elsewhere; the next phase needs their results."""

    phase: Phase
    running: list[int] = field(default_factory=list)


def pairing_key(cv_seed: int | None, folds: int | None, repeats: int | None, fingerprint: str | None) -> str:
    """The splits a trial's scores and OOF predictions belong to (see :attr:`PlanTrial.cv_key`)."""
    return json.dumps({"seed": cv_seed, "folds": folds, "repeats": repeats, "data": fingerprint}, sort_keys=True)


def config_key(loss: dict[str, float | None]) -> str:
    return json.dumps({k: (None if (v := loss.get(k)) is None else round(float(v), 10)) for k in LOSS_PARAMS})
