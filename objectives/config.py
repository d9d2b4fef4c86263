"""Typed configuration of one trial: the object that travels from the study file to the MLflow run.

``TrialConfig`` is plain data (pydantic, ``extra='forbid'``): every field is validated once, here, and the
rest of the code trusts it. ``TrialConfig.flat_params()`` is the row that lands in MLflow.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


class StrictModel(BaseModel):
    """The one strict base: every config here and search's file formats (study file, exported config). A class,
    not an alias of one: pydantic's mypy plugin derives no ``__init__`` for subclasses of an alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LossConfig(StrictModel):
    """``bce_weight * BCE + focal_weight * Focal(alpha, gamma)``; see :mod:`objectives.losses`."""

    alpha: Probability | None = None
    gamma: NonNegative = 2.0
    bce_weight: NonNegative = 0.5
    focal_weight: NonNegative = 0.5

    @model_validator(mode="after")
    def _every_class_contributes(self) -> LossConfig:
        if self.bce_weight == 0 and self.focal_weight == 0:
            raise ValueError("bce_weight and focal_weight are both 0: the loss would be identically zero")
        # Refused rather than warned: with no BCE term, alpha=1 (or 0) gives one class exactly zero loss, so the
        # model learns to call everything positive (or negative) and the trial would only waste the budget.
        if self.bce_weight == 0 and self.alpha in (0.0, 1.0):
            silent = "negatives" if self.alpha == 1.0 else "positives"
            raise ValueError(
                f"alpha={self.alpha:g} with bce_weight=0 gives the {silent} no loss at all: "
                "use 0 < alpha < 1, or a bce_weight above 0"
            )
        return self


class ModelConfig(StrictModel):
    hidden: tuple[Annotated[int, Field(ge=1, le=65536)], ...] = (128, 64)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    # how numeric columns are scaled, fitted inside each fold (objectives.preprocess): standardisation, a
    # quantile transform to a normal distribution, or robust scaling (median, IQR) with smooth clipping
    numeric_scaling: Literal["standard", "quantile", "robust"] = "standard"


class TrainConfig(StrictModel):
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 20
    batch_size: Annotated[int, Field(ge=1)] = 256
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    weight_decay: NonNegative = 0.0
    # adam: weight_decay is an L2 term added to the gradient; adamw: decoupled weight decay (Loshchilov & Hutter)
    optimizer: Literal["adam", "adamw"] = "adam"
    # the learning rate over the steps of training (torch.optim.lr_scheduler semantics, stepped every batch):
    # constant; cosine annealing from lr to 0; one-cycle (warm-up to lr over 30 % of the steps, then annealing)
    lr_schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    # score every model on its validation rows every this many epochs (and at the last); the trial then keeps
    # the ONE epoch count whose mean fold score is best (objectives.epochs). 0: no checkpoints, all epochs
    checkpoint_every: Annotated[int, Field(ge=0, le=100_000)] = 0
    # the epochs the lr schedule spans (default: epochs). A final model trained for a trial's chosen epoch count
    # keeps the trial's horizon, so it follows the very learning rates the checkpointed models had
    schedule_epochs: Annotated[int, Field(ge=1, le=100_000)] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 runs the hidden layers' matmuls in bfloat16 (parameters, gradients, Adam and the loss stay fp32):
    # faster on CPUs with bf16 instructions (AVX512-BF16, AMX) and on GPUs; fp32 is the default because it is
    # exact (and on other CPUs bf16 is emulated: about 10x slower, and the engine says so).
    precision: Literal["fp32", "bf16"] = "fp32"


class CVConfig(StrictModel):
    folds: Annotated[int, Field(ge=2, le=100)] = 5
    seed: Annotated[int, Field(ge=0)] = 0
    # repeated stratified K-fold: repeat r has its own split and init seeds (objectives.evaluate.repeat_seed);
    # repeat 0 is the split of `seed` itself, so repeats: 1 is plain K-fold
    repeats: Annotated[int, Field(ge=1, le=100)] = 1


class MetricConfig(StrictModel):
    """The score the threshold maximises: binary F1, macro F1 or F-beta (``beta`` only for ``fbeta``)."""

    name: Literal["f1", "macro_f1", "fbeta"] = "f1"
    beta: Annotated[float, Field(gt=0.0)] = 1.0

    @model_validator(mode="after")
    def _beta_only_for_fbeta(self) -> MetricConfig:
        if self.name != "fbeta" and self.beta != 1.0:
            raise ValueError(f"beta is only used with metric 'fbeta', not '{self.name}'")
        return self

    @property
    def label(self) -> str:
        return f"f{self.beta:g}" if self.name == "fbeta" else self.name


class TrialConfig(StrictModel):
    loss: LossConfig = LossConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    cv: CVConfig = CVConfig()
    metric: MetricConfig = MetricConfig()

    def with_loss(self, **changes: float | None) -> TrialConfig:
        """A copy with some loss parameters replaced, validated again."""
        loss = LossConfig(**{**self.loss.model_dump(), **changes})
        return self.model_copy(update={"loss": loss})

    def flat_params(self) -> dict[str, str | int | float | None]:
        """One flat, comparable row: the params of an MLflow run."""
        return {
            **self.loss.model_dump(),
            "hidden": "-".join(str(h) for h in self.model.hidden),
            "dropout": self.model.dropout,
            "numeric_scaling": self.model.numeric_scaling,
            **{k: v for k, v in self.train.model_dump().items()},
            "folds": self.cv.folds,
            "repeats": self.cv.repeats,
            "seed": self.cv.seed,
            "metric": self.metric.label,
        }
