"""The plan's phases as a study file writes them (grid, tpe, confirm), the default plan, and the reference
configuration a study compares every trial with."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from objectives.bounds import PhaseTrials
from objectives.config import LossConfig, StrictModel
from search.study.loss_params import LossParam, check_value
from search.study.loss_point import check_point, checked, with_values

GAMMA_BALANCE_PHASE = 3.0
# a confirm phase's defaults: the two best configurations (and the reference), three repeats each on fresh seeds
CONFIRM_TOP = 2
CONFIRM_REPEATS = 3


class Phase(StrictModel):
    """One step of the plan. A grid phase runs each point over the best configuration of the earlier phases;
    a TPE phase samples ``space`` (the others fixed at that best), for ``trials`` trials or, last, for the rest
    of the budget; a confirm phase re-evaluates the ``top`` best configurations of the earlier phases (and the
    study's reference) on a CV seed no earlier trial used, with ``repeats`` repeats, one trial each."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
    kind: Literal["grid", "tpe", "confirm"] = "grid"
    fixed: dict[LossParam, float | None] = Field(default_factory=dict)
    grid: list[dict[LossParam, float | None]] | None = None
    space: dict[LossParam, tuple[float, float]] | None = None
    trials: PhaseTrials | None = None
    # tpe phases: trials asked at once and trained together (constant_liar); a grid phase runs its pending
    # points together anyway
    batch: Annotated[int, Field(ge=1, le=64)] = 1
    top: Annotated[int, Field(ge=1, le=20)] | None = None
    repeats: Annotated[int, Field(ge=1, le=100)] | None = None
    with_reference: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _derive_kind(cls, data: Any) -> Any:  # the raw input, whatever YAML gave
        """``kind`` defaults to ``tpe`` for a phase with a ``space``, else ``grid``."""
        if isinstance(data, dict) and "kind" not in data:
            data = {**data, "kind": "tpe" if data.get("space") is not None else "grid"}
        return data

    @model_validator(mode="after")
    def _shape(self) -> Phase:
        for k, v in self.fixed.items():
            check_value(k, v)
        check_point(f"phase {self.name!r} fixed", with_values(LossConfig(), self.fixed))
        confirm_only = {"top": self.top, "repeats": self.repeats, "with_reference": self.with_reference}
        if self.kind != "confirm" and any(v is not None for v in confirm_only.values()):
            raise ValueError(f"phase {self.name!r}: 'top', 'repeats' and 'with_reference' belong to a confirm phase")
        if self.kind == "confirm":
            if self.fixed or self.grid is not None or self.space is not None or self.trials is not None:
                raise ValueError(
                    f"phase {self.name!r}: a confirm phase takes only 'top', 'repeats' and 'with_reference'"
                )
        elif self.kind == "grid":
            if not self.grid:
                raise ValueError(f"phase {self.name!r}: a grid phase needs a non-empty 'grid' list")
            if self.space is not None or self.trials is not None:
                raise ValueError(f"phase {self.name!r}: 'space' and 'trials' belong to a tpe phase")
            for point in self.grid:
                if not point:
                    raise ValueError(f"phase {self.name!r}: empty grid point")
                for k, v in point.items():
                    check_value(k, v)
                over = with_values(with_values(LossConfig(), self.fixed), point)
                check_point(f"phase {self.name!r} grid point {point}", over)
        else:
            if not self.space:
                raise ValueError(f"phase {self.name!r}: a tpe phase needs a non-empty 'space'")
            if self.grid is not None:
                raise ValueError(f"phase {self.name!r}: 'grid' belongs to a grid phase (kind: grid)")
            for k, (lo, hi) in self.space.items():
                check_value(k, lo)
                check_value(k, hi)
                if not lo < hi:
                    raise ValueError(f"phase {self.name!r}: space.{k} needs low < high, got [{lo:g}, {hi:g}]")
                if k in self.fixed:
                    raise ValueError(f"phase {self.name!r}: {k} is both fixed and in the space")
        return self

    @property
    def confirm_top(self) -> int:
        return self.top or CONFIRM_TOP

    @property
    def confirm_repeats(self) -> int:
        return self.repeats or CONFIRM_REPEATS

    @property
    def confirm_reference(self) -> bool:
        return True if self.with_reference is None else self.with_reference


DEFAULT_PLAN: tuple[Phase, ...] = (
    Phase(
        name="balance",
        fixed={"gamma": GAMMA_BALANCE_PHASE, "alpha": None},
        grid=[
            {"bce_weight": 0.5, "focal_weight": 0.5},
            {"bce_weight": 0.2, "focal_weight": 0.8},
            {"bce_weight": 0.8, "focal_weight": 0.2},
            {"bce_weight": 0.0, "focal_weight": 1.0},
        ],
    ),
    Phase(name="gamma", grid=[{"gamma": 1.0}, {"gamma": 2.0}, {"gamma": 4.0}, {"gamma": 5.0}]),
    Phase(name="alpha", grid=[{"alpha": 0.25}, {"alpha": 0.75}]),
    # before the open-ended refine phase, which would otherwise never end: week 2 starts by checking week 1's
    # choice on fresh seeds (3 trials: the two best and the reference)
    Phase(name="confirm", kind="confirm", top=CONFIRM_TOP, repeats=CONFIRM_REPEATS),
    Phase(
        name="refine",
        kind="tpe",
        space={"alpha": (0.05, 0.95), "gamma": (0.0, 5.0), "bce_weight": (0.0, 1.0), "focal_weight": (0.0, 1.0)},
    ),
)


def default_reference(phases: tuple[Phase, ...]) -> LossConfig:
    """The plan's first trial: the first point of the first phase over the defaults (the seed's starting
    configuration in the default plan: gamma 3, no alpha, 0.5/0.5). Valid: a phase's points are checked over
    the defaults when the phase is read (:func:`~search.study.loss_params.check_point`)."""
    first = phases[0]
    base = with_values(LossConfig(), first.fixed)
    if first.kind == "grid" and first.grid:
        base = with_values(base, first.grid[0])
    return checked(base)
