"""A loss as the plan and the stored trials carry it: a :data:`LossPoint`, a
:class:`~objectives.config.LossConfig`, or a :class:`RefusedLoss` when LossConfig refuses the values (a point of
the plan can be refused over the base an earlier phase chose). The one check, :func:`loss_point`; the one merge,
:func:`with_values`; the one key that matches a point with the trials that ran it, :func:`config_key`; its
values by name only where they are flat by nature (:func:`loss_values`: the stored ``loss`` attr, a table's
row, Optuna's fixed params)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TypeAlias

from pydantic import ValidationError

from objectives.config import LossConfig
from search.study.loss_params import LOSS_PARAMS, LossParam, by_name


def check_point(where: str, point: LossPoint) -> None:
    """Refuse a plan's point (or fixed values) that would make every trial with it invalid, by LossConfig's own
    rules: its defaults (alpha unweighted, both weights 0.5) break none of them, so a point that LossConfig
    refuses over its defaults (``point``: the point over them) is refused over whatever base an earlier phase
    chooses."""
    if isinstance(point, RefusedLoss):
        raise ValueError(f"{where}: {point.reason}")


class InvalidLoss(ValueError):
    """A combination of loss parameters that LossConfig refuses; the message is its first error, one line."""


@dataclass(frozen=True)
class RefusedLoss:
    """A point of the plan that LossConfig refuses: its values as asked (LossConfig's fields, so that it reads like
    one: ``point.gamma``) and LossConfig's ``reason``. It is no LossConfig and trains nothing: its trial fails at
    once as ``invalid``, and is matched to the point by :func:`config_key` so that the plan does not retry it."""

    alpha: float | None
    gamma: float | None
    bce_weight: float | None
    focal_weight: float | None
    reason: str


if tuple(f.name for f in fields(RefusedLoss))[:-1] != LOSS_PARAMS:
    raise RuntimeError(f"RefusedLoss does not hold LossConfig's fields {LOSS_PARAMS}")

LossPoint: TypeAlias = LossConfig | RefusedLoss  # a point of the plan, a trial's loss: valid, or refused and why


def loss_point(values: Mapping[str, float | None]) -> LossPoint:
    """``values`` (over LossConfig's defaults) as a LossConfig, else as a :class:`RefusedLoss` with LossConfig's
    reason; a name that is no loss parameter, or a value that is no number, is a ``ValueError`` (stored values
    are read through here: :class:`~search.study.trial_record.StoredTrial`)."""
    unknown = sorted(set(values) - set(LOSS_PARAMS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a loss parameter (they are {', '.join(LOSS_PARAMS)})")
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{name}: {value!r} is not a number")
    try:
        return LossConfig(**values)
    except ValidationError as exc:
        full = {**_DEFAULTS, **{k: None if v is None else float(v) for k, v in values.items()}}
        return RefusedLoss(**full, reason=exc.errors()[0]["msg"].removeprefix("Value error, "))


_DEFAULTS: dict[str, float | None] = LossConfig().model_dump()


def with_values(point: LossPoint, changes: Mapping[LossParam, float | None]) -> LossPoint:
    """``point`` with some of its values replaced (a phase's fixed values, a grid point), checked again: the one
    way the plan combines a base with a phase's values."""
    return loss_point({**loss_values(point), **by_name(changes)})


def checked(point: LossPoint) -> LossConfig:
    """The point's LossConfig, or :class:`InvalidLoss` with the reason LossConfig refused it (``bce_weight and
    focal_weight are both 0: ...``): the same words for a grid point, a TPE draw and the study file's
    ``reference``."""
    if isinstance(point, RefusedLoss):
        raise InvalidLoss(point.reason)
    return point


def loss_values(point: LossPoint) -> dict[str, float | None]:
    """The point's values by name, for what is flat by nature: the stored ``loss`` attr, a table's row, Optuna's
    fixed params. Between functions a loss travels as a :data:`LossPoint`."""
    return {name: getattr(point, name) for name in LOSS_PARAMS}


def config_key(point: LossPoint) -> str:
    """The point's values, rounded to 10 decimals, as one string: a point and the trials that ran it (valid or
    refused, read back from storage) have the same key. Stored with a study's ensemble (``made_for``): keep it."""
    return json.dumps({k: None if (v := getattr(point, k)) is None else round(float(v), 10) for k in LOSS_PARAMS})
