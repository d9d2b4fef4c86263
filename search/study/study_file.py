"""Study files: the YAML a user copies and edits, validated into one typed :class:`StudyFile`.

Loaded with ``yaml.safe_load``; an unknown key, a wrong type or an out-of-range value is one line naming the
field and what is allowed (see :mod:`search.formats.validation`). Paths inside the file are relative to the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator

from objectives.config import CVConfig, LossConfig, MetricConfig, ModelConfig, StrictModel, TrainConfig, TrialConfig
from objectives.data_spec import DataSpec
from objectives.errors import LosstuneError
from search.formats.validation import read_yaml, validated

# the loss parameters, named once: LossConfig's fields, in its order (the tables' and the plan's order)
LOSS_PARAMS: tuple[str, ...] = tuple(LossConfig.model_fields)
LossParam = Literal["alpha", "gamma", "bce_weight", "focal_weight"]  # a type needs the names written out:
if get_args(LossParam) != LOSS_PARAMS:  # so they are checked against LossConfig's on import
    raise RuntimeError(f"LossParam {get_args(LossParam)} does not name LossConfig's fields {LOSS_PARAMS}")
UNWEIGHTED = "none"  # an unweighted alpha (alpha: null), wherever it is written as text
# Every value a plan may give a loss parameter lies in these ranges; Optuna records each parameter with the same
# distribution kind in every phase.
PARAM_LIMITS: dict[str, tuple[float, float]] = {
    "alpha": (0.0, 1.0),
    "gamma": (0.0, 10.0),
    "bce_weight": (0.0, 1.0),
    "focal_weight": (0.0, 1.0),
}
GAMMA_BALANCE_PHASE = 3.0
# a confirm phase's defaults: the two best configurations (and the reference), three repeats each on fresh seeds
CONFIRM_TOP = 2
CONFIRM_REPEATS = 3


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


class Phase(StrictModel):
    """One step of the plan. A grid phase runs each point over the best configuration of the earlier phases;
    a TPE phase samples ``space`` (the others fixed at that best), for ``trials`` trials or, last, for the rest
    of the budget; a confirm phase re-evaluates the ``top`` best configurations of the earlier phases (and the
    study's reference) on a CV seed no earlier trial used, with ``repeats`` repeats, one trial each."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
    kind: Literal["grid", "tpe", "confirm"] = "grid"
    fixed: dict[LossParam, float | None] = {}
    grid: list[dict[LossParam, float | None]] | None = None
    sampler: Literal["grid", "tpe"] | None = None
    space: dict[LossParam, tuple[float, float]] | None = None
    trials: Annotated[int, Field(ge=1)] | None = None
    # tpe phases: trials asked at once and trained together (constant_liar); a grid phase runs its pending
    # points together anyway
    batch: Annotated[int, Field(ge=1, le=64)] = 1
    top: Annotated[int, Field(ge=1, le=20)] | None = None
    repeats: Annotated[int, Field(ge=1, le=100)] | None = None
    with_reference: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _derive_kind(cls, data):
        """``kind`` defaults to what ``sampler`` (or a ``space``) says, so older study files keep working."""
        if isinstance(data, dict) and "kind" not in data:
            sampler = data.get("sampler")
            data = {**data, "kind": sampler or ("tpe" if data.get("space") is not None else "grid")}
        return data

    @model_validator(mode="after")
    def _shape(self) -> "Phase":
        for k, v in self.fixed.items():
            _check_value(k, v)
        _check_weights(f"phase {self.name!r} fixed", self.fixed)
        if self.sampler is not None and self.sampler != self.kind:
            raise ValueError(f"phase {self.name!r}: kind {self.kind!r} and sampler {self.sampler!r} disagree")
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
        sampler="tpe",
        space={"alpha": (0.05, 0.95), "gamma": (0.0, 5.0), "bce_weight": (0.0, 1.0), "focal_weight": (0.0, 1.0)},
    ),
)


def default_reference(phases: tuple[Phase, ...]) -> dict[str, float | None]:
    """The plan's first trial: the first point of the first phase over the defaults (the seed's starting
    configuration in the default plan: gamma 3, no alpha, 0.5/0.5)."""
    first = phases[0]
    base = {**LossConfig().model_dump(), **first.fixed}
    if first.kind == "grid" and first.grid:
        base.update(first.grid[0])
    return LossConfig(**base).model_dump()


class DataBlock(StrictModel):
    """The ``data:`` block as a study file spells it; :meth:`StudyFile.data_spec` turns it into
    :class:`~objectives.data_spec.DataSpec`. Not DataSpec itself: a study file may write ``positive: 1`` (read as
    ``"1"``) and only the encodings listed here, and says so in its validation error."""

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


class BudgetBlock(StrictModel):
    trials_per_week: Annotated[int, Field(ge=0)] = 10


class TrackingBlock(StrictModel):
    uri: str | None = None
    experiment: str | None = None


class StudyFile(StrictModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    data: DataBlock
    cv: CVConfig = CVConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    metric: Literal["f1", "macro_f1", "fbeta"] = "f1"
    beta: Annotated[float, Field(gt=0)] | None = None
    budget: BudgetBlock = BudgetBlock()
    plan: Literal["default"] | list[Phase] = "default"
    # the configuration every trial is compared with (missing keys: LossConfig's defaults); default: the plan's
    # first trial
    reference: dict[LossParam, float | None] | None = None
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
            if self.plan[0].kind == "confirm":
                raise ValueError(f"phase {self.plan[0].name!r}: a confirm phase needs earlier phases to confirm")
            for p in self.plan[:-1]:
                if p.kind == "tpe" and p.trials is None:
                    raise ValueError(f"phase {p.name!r}: only the last phase may run without 'trials'")
        return self

    @field_validator("reference")
    @classmethod
    def _valid_reference(cls, v: dict | None) -> dict | None:
        if v is not None:
            for k, value in v.items():
                _check_value(k, value)
            try:
                LossConfig(**{**LossConfig().model_dump(), **v})
            except ValidationError as exc:
                raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return v

    @property
    def reference_loss(self) -> dict[str, float | None]:
        """The study's reference configuration: ``reference:`` over the defaults, or the plan's first trial."""
        if self.reference is not None:
            return LossConfig(**{**LossConfig().model_dump(), **self.reference}).model_dump()
        return default_reference(self.phases)

    @property
    def phases(self) -> tuple[Phase, ...]:
        return DEFAULT_PLAN if self.plan == "default" else tuple(self.plan)

    @property
    def data_spec(self) -> DataSpec:
        d = self.data
        path = d.path if d.path.is_absolute() else (self.base_dir / d.path)
        return DataSpec(path=path.resolve(), target=d.target, positive=d.positive, sep=d.sep, encoding=d.encoding,
                        drop=tuple(d.drop), na_values=tuple(d.na_values))  # fmt: skip

    def trial_config(self, loss: LossConfig | None = None, cv: CVConfig | None = None) -> TrialConfig:
        """A trial's configuration; ``cv`` replaces the study's CV settings (a confirm trial's fresh seed)."""
        metric = MetricConfig(name=self.metric, beta=self.beta or 1.0)
        return TrialConfig(loss=loss or LossConfig(), model=self.model, train=self.train, cv=cv or self.cv,
                           metric=metric)  # fmt: skip

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
