"""The loss parameters, named once: their names (LossConfig's fields), the ranges a plan may give them, how a
loss configuration and an unweighted alpha are written as text, and the plan's points: a point is a
:class:`~objectives.config.LossConfig`, or a :class:`RefusedLoss` when LossConfig refuses its values (the one
check, :func:`loss_point`; the one merge, :func:`with_values`; the one key that matches a point with the trials
that ran it, :func:`config_key`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal, TypeAlias, TypeVar, get_args

from pydantic import ValidationError

from objectives.config import LossConfig

# the loss parameters, named once: LossConfig's fields, in its order (the tables' and the plan's order)
LOSS_PARAMS: tuple[str, ...] = tuple(LossConfig.model_fields)
LossParam = Literal["alpha", "gamma", "bce_weight", "focal_weight"]  # a type needs the names written out:
if get_args(LossParam) != LOSS_PARAMS:  # so they are checked against LossConfig's on import
    raise RuntimeError(f"LossParam {get_args(LossParam)} does not name LossConfig's fields {LOSS_PARAMS}")
V = TypeVar("V")
UNWEIGHTED = "none"  # an unweighted alpha (alpha: null), wherever it is written as text
# Every value a plan may give a loss parameter lies in these ranges; Optuna records each parameter with the same
# distribution kind in every phase.
PARAM_LIMITS: dict[str, tuple[float, float]] = {
    "alpha": (0.0, 1.0),
    "gamma": (0.0, 10.0),
    "bce_weight": (0.0, 1.0),
    "focal_weight": (0.0, 1.0),
}


def by_name(values: Mapping[LossParam, V]) -> dict[str, V]:
    """A study file's loss mapping (its keys checked against :data:`LossParam`) as the plain ``str``-keyed dict
    the plan and the tables use (mypy holds ``dict[LossParam, ...]`` and ``dict[str, ...]`` apart)."""
    return {name: value for name, value in values.items()}


def loss_text(loss: LossPoint) -> str:
    """A loss configuration in a few characters, ``g=3 a=none w=0.8/0.2`` (weights bce/focal), each value to 3
    significant digits: the one spelling of the trial runs' names and of the plan's choice lines."""
    alpha = UNWEIGHTED if loss.alpha is None else f"{loss.alpha:.3g}"
    return f"g={_g3(loss.gamma)} a={alpha} w={_g3(loss.bce_weight)}/{_g3(loss.focal_weight)}"


def loss_words(loss: LossPoint, spec: str = "g") -> str:
    """A loss configuration by name, ``alpha=none gamma=3 bce_weight=0.5 focal_weight=0.5``, each value formatted
    with ``spec``: the spelling of the console's trial, best trial and export lines."""
    values = loss_values(loss).items()
    return " ".join(f"{k}={UNWEIGHTED if v is None else format(v, spec)}" for k, v in values)


def _g3(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"  # None: a refused point's missing value (never a valid one's)


def check_value(name: str, value: float | None) -> float | None:
    if value is None:
        if name != "alpha":
            raise ValueError(f"{name} cannot be null (only alpha can: no class weighting)")
        return None
    lo, hi = PARAM_LIMITS[name]
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value:g} is outside [{lo:g}, {hi:g}]")
    return float(value)


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
