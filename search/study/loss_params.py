"""The loss parameters, named once: their names (LossConfig's fields), the ranges a plan may give them, how a
loss configuration and an unweighted alpha are written as text, and the one check that turns a point of the plan
into a :class:`~objectives.config.LossConfig` (or the reason it is refused)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar, get_args

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


def loss_text(loss: Mapping[str, float | None] | LossConfig) -> str:
    """A loss configuration in a few characters, ``g=3 a=none w=0.8/0.2`` (weights bce/focal), each value to 3
    significant digits: the one spelling of the trial runs' names and of the plan's choice lines."""
    values = loss.model_dump() if isinstance(loss, LossConfig) else loss
    alpha = UNWEIGHTED if values.get("alpha") is None else f"{values['alpha']:.3g}"
    return f"g={values['gamma']:.3g} a={alpha} w={values['bce_weight']:.3g}/{values['focal_weight']:.3g}"


def check_value(name: str, value: float | None) -> float | None:
    if value is None:
        if name != "alpha":
            raise ValueError(f"{name} cannot be null (only alpha can: no class weighting)")
        return None
    lo, hi = PARAM_LIMITS[name]
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value:g} is outside [{lo:g}, {hi:g}]")
    return float(value)


def check_point(where: str, values: Mapping[str, float | None]) -> None:
    """Refuse a plan's point (or fixed values) that would make every trial with it invalid, by LossConfig's own
    rules: its defaults (alpha unweighted, both weights 0.5) break none of them, so a point that LossConfig
    refuses over its defaults is refused over whatever base an earlier phase chooses."""
    try:
        validated_loss(values)
    except InvalidLoss as exc:
        raise ValueError(f"{where}: {exc}") from None


class InvalidLoss(ValueError):
    """A combination of loss parameters that LossConfig refuses; the message is its first error, one line."""


def validated_loss(values: Mapping[str, float | None]) -> LossConfig:
    """``values`` as a LossConfig, or :class:`InvalidLoss` with LossConfig's reason (``bce_weight and focal_weight
    are both 0: ...``): the same words for a grid point, a TPE draw and the study file's ``reference``."""
    try:
        return LossConfig(**values)
    except ValidationError as exc:
        raise InvalidLoss(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
