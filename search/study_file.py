"""Study files: the YAML a user copies and edits, validated into one typed :class:`StudyFile`.

Loaded with ``yaml.safe_load``; an unknown key, a wrong type or an out-of-range value is one line naming the
field and what is allowed (see :mod:`search.validation`). Paths inside the file are relative to the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from objectives.config import CVConfig, LossConfig, MetricConfig, ModelConfig, TrainConfig, TrialConfig
from objectives.data_spec import DataSpec
from objectives.errors import LosstuneError
from search.validation import read_yaml, validated

LossParam = Literal["alpha", "gamma", "bce_weight", "focal_weight"]
LOSS_PARAMS: tuple[str, ...] = ("alpha", "gamma", "bce_weight", "focal_weight")
# Every value a plan may give a loss parameter lies in these ranges; Optuna records each parameter with the same
# distribution kind in every phase.
PARAM_LIMITS: dict[str, tuple[float, float]] = {
    "alpha": (0.0, 1.0),
    "gamma": (0.0, 10.0),
    "bce_weight": (0.0, 1.0),
    "focal_weight": (0.0, 1.0),
}
GAMMA_BALANCE_PHASE = 3.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_value(name: str, value: float | None) -> float | None:
    if value is None:
        if name != "alpha":
            raise ValueError(f"{name} cannot be null (only alpha can: no class weighting)")
        return None
    lo, hi = PARAM_LIMITS[name]
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value:g} is outside [{lo:g}, {hi:g}]")
    return float(value)


def _check_weights(where: str, values: dict[str, float | None]) -> None:
    """A point (or fixed values) that sets both loss weights to 0 would make every such trial invalid."""
    if values.get("bce_weight") == 0 and values.get("focal_weight") == 0:
        raise ValueError(f"{where}: bce_weight and focal_weight are both 0: the loss would be identically zero")


class Phase(_Strict):
    """One step of the plan. A grid phase runs each point over the best configuration of the earlier phases;
    a TPE phase samples ``space`` (the others fixed at that best), for ``trials`` trials or, last, for the rest
    of the budget."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
    fixed: dict[LossParam, float | None] = {}
    grid: list[dict[LossParam, float | None]] | None = None
    sampler: Literal["grid", "tpe"] | None = None
    space: dict[LossParam, tuple[float, float]] | None = None
    trials: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _shape(self) -> "Phase":
        for k, v in self.fixed.items():
            _check_value(k, v)
        _check_weights(f"phase {self.name!r} fixed", self.fixed)
        kind = self.sampler or ("tpe" if self.space is not None else "grid")
        if kind == "grid":
            if not self.grid:
                raise ValueError(f"phase {self.name!r}: a grid phase needs a non-empty 'grid' list")
            if self.space is not None or self.trials is not None:
                raise ValueError(f"phase {self.name!r}: 'space' and 'trials' belong to a tpe phase")
            for point in self.grid:
                if not point:
                    raise ValueError(f"phase {self.name!r}: empty grid point")
                for k, v in point.items():
                    _check_value(k, v)
                _check_weights(f"phase {self.name!r} grid point {point}", {**self.fixed, **point})
        else:
            if not self.space:
                raise ValueError(f"phase {self.name!r}: a tpe phase needs a non-empty 'space'")
            if self.grid is not None:
                raise ValueError(f"phase {self.name!r}: 'grid' belongs to a grid phase (sampler: grid)")
            for k, (lo, hi) in self.space.items():
                _check_value(k, lo)
                _check_value(k, hi)
                if not lo < hi:
                    raise ValueError(f"phase {self.name!r}: space.{k} needs low < high, got [{lo:g}, {hi:g}]")
                if k in self.fixed:
                    raise ValueError(f"phase {self.name!r}: {k} is both fixed and in the space")
        return self

    @property
    def kind(self) -> str:
        return self.sampler or ("tpe" if self.space is not None else "grid")


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
    Phase(
        name="refine",
        sampler="tpe",
        space={"alpha": (0.05, 0.95), "gamma": (0.0, 5.0), "bce_weight": (0.0, 1.0), "focal_weight": (0.0, 1.0)},
    ),
)


class DataBlock(_Strict):
    path: Path
    target: str
    positive: str | int | None = None
    sep: str | None = None
    encoding: Literal["utf-8", "utf-8-sig", "cp932", "shift_jis"] | None = None
    drop: list[str] = []
    na_values: list[str] = []

    @field_validator("positive")
    @classmethod
    def _as_text(cls, v: str | int | None) -> str | None:
        return None if v is None else str(v)


class BudgetBlock(_Strict):
    trials_per_week: Annotated[int, Field(ge=0)] = 10


class TrackingBlock(_Strict):
    uri: str | None = None
    experiment: str | None = None


class StudyFile(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    data: DataBlock
    cv: CVConfig = CVConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    metric: Literal["f1", "macro_f1", "fbeta"] = "f1"
    beta: Annotated[float, Field(gt=0)] | None = None
    budget: BudgetBlock = BudgetBlock()
    plan: Literal["default"] | list[Phase] = "default"
    storage: str | None = None
    tracking: TrackingBlock = TrackingBlock()
    # where the file was read from; set by load_study_file, not by the user
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _plan_shape(self) -> "StudyFile":
        if self.metric == "fbeta" and self.beta is None:
            raise ValueError("metric 'fbeta' needs a 'beta' (e.g. beta: 2)")
        if self.metric != "fbeta" and self.beta is not None:
            raise ValueError(f"'beta' is only used with metric 'fbeta', not '{self.metric}'")
        if isinstance(self.plan, list):
            names = [p.name for p in self.plan]
            if len(set(names)) != len(names):
                raise ValueError(f"plan phase names must be unique, got {names}")
            for p in self.plan[:-1]:
                if p.kind == "tpe" and p.trials is None:
                    raise ValueError(f"phase {p.name!r}: only the last phase may run without 'trials'")
        return self

    @property
    def phases(self) -> tuple[Phase, ...]:
        return DEFAULT_PLAN if self.plan == "default" else tuple(self.plan)

    @property
    def data_spec(self) -> DataSpec:
        d = self.data
        path = d.path if d.path.is_absolute() else (self.base_dir / d.path)
        return DataSpec(path=path.resolve(), target=d.target, positive=d.positive, sep=d.sep, encoding=d.encoding,
                        drop=tuple(d.drop), na_values=tuple(d.na_values))  # fmt: skip

    def trial_config(self, loss: LossConfig | None = None) -> TrialConfig:
        metric = MetricConfig(name=self.metric, beta=self.beta or 1.0)
        return TrialConfig(loss=loss or LossConfig(), model=self.model, train=self.train, cv=self.cv, metric=metric)

    @property
    def storage_url(self) -> str:
        """Optuna storage: ``LOSSTUNE_STORAGE`` if set, else the file's ``storage`` (``${VAR}`` expanded), else a
        SQLite file beside the study. Keep passwords in the environment, not in the study file."""
        url = os.environ.get("LOSSTUNE_STORAGE") or (_expand_env(self.storage) if self.storage else None)
        return url or f"sqlite:///{(self.base_dir / f'{self.name}.optuna.db').resolve()}"

    @property
    def tracking_uri(self) -> str:
        url = os.environ.get("LOSSTUNE_TRACKING_URI") or (_expand_env(self.tracking.uri) if self.tracking.uri else None)
        return url or f"sqlite:///{(self.base_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        return (self.base_dir / "mlartifacts").resolve().as_uri()

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


def _expand_env(text: str) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise LosstuneError(f"environment variable {m.group(1)} (used in the study file) is not set")
        return os.environ[m.group(1)]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, text)


def load_study_file(path: Path) -> StudyFile:
    path = Path(path)
    raw = read_yaml(path, "study file")
    if not isinstance(raw, dict):
        raise LosstuneError(f"{path.name} must be a YAML mapping (name:, data:, ...), got {type(raw).__name__}")
    return validated(StudyFile, path.name, {**raw, "base_dir": path.resolve().parent})
