"""The loss parameters, named once: their names (LossConfig's fields), the ranges a plan may give them, and how
a loss configuration and an unweighted alpha are written as text. A loss itself travels as a
:data:`~search.study.loss_point.LossPoint` (:mod:`search.study.loss_point`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

from objectives.config import LossConfig

if TYPE_CHECKING:
    from search.study.loss_point import LossPoint

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
    values = ((k, getattr(loss, k)) for k in LOSS_PARAMS)
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
