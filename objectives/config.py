"""Typed configuration of one trial: the object that travels from the study file to the MLflow run.

``TrialConfig`` is plain data (pydantic, ``extra='forbid'``): every field is validated once, here, with the
bounded types of :mod:`objectives.bounds`, and the rest of the code trusts it. ``TrialConfig.flat_params()`` is
the row that lands in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_serializer, model_validator

from objectives.bounds import (
    BatchSize,
    Beta,
    Dropout,
    EmbeddingBins,
    Epochs,
    Folds,
    Gamma,
    HiddenSize,
    LossWeight,
    NonNegativeFinite,
    PositiveFinite,
    Probability,
    Repeats,
    Seed,
)


class StrictModel(BaseModel):
    """The one strict base: every config here and search's file formats (study file, exported config). A class,
    not an alias of one: pydantic's mypy plugin derives no ``__init__`` for subclasses of an alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LossConfig(StrictModel):
    """``bce_weight * BCE + focal_weight * Focal(alpha, gamma)``; see :mod:`objectives.losses`."""

    alpha: Probability | None = None
    gamma: Gamma = 2.0
    bce_weight: LossWeight = 0.5
    focal_weight: LossWeight = 0.5

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


# the built-in MLP's own settings: meaningless, and refused, next to a user's model (``module``)
MLP_FIELDS = ("hidden", "dropout")


class ModelConfig(StrictModel):
    """The classifier: the built-in MLP (``hidden``, ``dropout``), or a user's own ``nn.Module`` (``module``:
    ``"package.module:ClassName"``, built as ``ClassName(n_features, **kwargs)``; see
    :mod:`objectives.user_module`). The two are exclusive; a dump holds only the fields of the one in use, so a
    user model's stored or exported configuration never shows an MLP it did not train."""

    hidden: tuple[HiddenSize, ...] = (128, 64)
    # dropout 0.15 and the target-aware embedding below are the default because together they raised test F1 on
    # all five benchmark tables (docs/guide/model-options.md); neither alone did
    dropout: Dropout = 0.15
    module: str | None = None
    kwargs: dict[str, JsonValue] = Field(default_factory=dict)
    # how numeric columns are scaled, fitted inside each fold (objectives.preprocess), for any model: standardisation,
    # a quantile transform to a normal distribution, or robust scaling (median, IQR) with smooth clipping
    numeric_scaling: Literal["standard", "quantile", "robust"] = "standard"
    # a numeric embedding, also fitted inside each fold: each numeric column becomes embedding_bins piecewise-linear
    # columns (Gorishniy et al. 2022), so the first layer can bend the response to it; on quantile bins, or on
    # target-aware bins (a decision tree's splits on the fold's training labels) with the scaled value kept
    # (default: piecewise_linear_target for the built-in MLP, none for a user's module, whose input width is its own)
    numeric_embedding: Literal["none", "piecewise_linear", "piecewise_linear_target"] = "piecewise_linear_target"
    embedding_bins: EmbeddingBins = 16

    @model_validator(mode="before")
    @classmethod
    def _one_kind_of_model(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("module") is None:
            if data.get("kwargs"):
                raise ValueError("kwargs are the arguments of a model.module: give the module, or remove kwargs")
            return data
        data = {"numeric_embedding": "none", **data}
        given = [name for name in MLP_FIELDS if name in data]
        if given:
            raise ValueError(
                f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} the built-in MLP's, not used with a "
                f"model.module: remove {'it' if len(given) == 1 else 'them'}, or pass your model's settings in "
                "model.kwargs"
            )
        return data

    @model_validator(mode="after")
    def _module_spec(self) -> ModelConfig:
        if self.module is not None:
            module, sep, name = self.module.partition(":")
            parts = module.split(".")
            if not sep or not name.isidentifier() or not all(p.isidentifier() for p in parts):
                raise ValueError(
                    f"module must be 'package.module:ClassName' (e.g. 'my_model:BinaryClassifier'), got {self.module!r}"
                )
        return self

    @model_serializer(mode="wrap")
    def _only_the_model_in_use(self, handler: Any) -> dict[str, Any]:
        dumped = handler(self)
        for name in ("module", "kwargs") if self.module is None else MLP_FIELDS:
            dumped.pop(name, None)
        if self.numeric_embedding == "none":
            dumped.pop("embedding_bins", None)  # numeric_embedding stays: see from_stored
        return dumped

    @classmethod
    def from_stored(cls, raw: Any) -> Any:
        """A model dump losstune wrote (a trial's stored configuration, an exported configuration), ready to
        validate. A losstune before 0.3.0 wrote no ``numeric_embedding`` when there was none, and its default was
        none; today's default is an embedding, so a stored dump without the key is read as ``none``: the model
        that trial trained. Every dump written now has the key."""
        if isinstance(raw, dict) and "numeric_embedding" not in raw:
            return {**raw, "numeric_embedding": "none"}
        return raw

    @property
    def is_user_module(self) -> bool:
        return self.module is not None

    @property
    def numeric_encoding(self) -> NumericEncoding:
        """What the preprocessing does to numeric columns: the part of the model settings the folds depend on."""
        bins = self.embedding_bins if self.numeric_embedding != "none" else 0
        return NumericEncoding(self.numeric_scaling, bins, self.numeric_embedding == "piecewise_linear_target")


@dataclass(frozen=True)
class NumericEncoding:
    """How numeric columns reach the model, fitted inside each fold (:mod:`objectives.preprocess`): imputed, scaled
    (``scaling``) and, when ``bins`` > 0, encoded piecewise-linearly into ``bins`` columns each."""

    scaling: str = "standard"
    bins: int = 0
    target_bins: bool = False  # bins fitted to the labels, plus the scaled value (PiecewiseLinearEncoder)

    @property
    def width(self) -> int:
        """Columns per numeric column in the preprocessed matrix; with target-aware bins, the most (the bins a
        column's tree did not use are left out)."""
        return self.bins + self.target_bins if self.bins else 1


STANDARD_NUMERIC = NumericEncoding()  # standardised, no embedding


class TrainConfig(StrictModel):
    epochs: Epochs = 20
    batch_size: BatchSize = 256
    lr: PositiveFinite = 1e-3
    weight_decay: NonNegativeFinite = 0.0
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
    schedule_epochs: Epochs | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 runs the hidden layers' matmuls in bfloat16 (parameters, gradients, Adam and the loss stay fp32):
    # faster on CPUs with bf16 instructions (AVX512-BF16, AMX) and on GPUs; fp32 is the default because it is
    # exact (and on other CPUs bf16 is emulated: about 10x slower, and the engine says so).
    precision: Literal["fp32", "bf16"] = "fp32"


class CVConfig(StrictModel):
    folds: Folds = 5
    seed: Seed = 0
    # repeated stratified K-fold: repeat r has its own split and init seeds (objectives.evaluate.repeat_seed);
    # repeat 0 is the split of `seed` itself, so repeats: 1 is plain K-fold
    repeats: Repeats = 1


class MetricConfig(StrictModel):
    """The score the threshold maximises: binary F1, macro F1 or F-beta (``beta`` only for ``fbeta``)."""

    name: Literal["f1", "macro_f1", "fbeta"] = "f1"
    beta: Beta = 1.0

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
            **self._model_params(),
            "numeric_scaling": self.model.numeric_scaling,
            "numeric_embedding": self.model.numeric_embedding,
            "embedding_bins": self.model.numeric_encoding.bins or None,
            **{k: v for k, v in self.train.model_dump().items()},
            "folds": self.cv.folds,
            "repeats": self.cv.repeats,
            "seed": self.cv.seed,
            "metric": self.metric.label,
        }

    def _model_params(self) -> dict[str, str | float]:
        """The model's params: the MLP's shape, or a user model's class and its kwargs (as JSON)."""
        if self.model.module is not None:
            import json

            return {"model_module": self.model.module, "model_kwargs": json.dumps(self.model.kwargs, sort_keys=True)}
        return {"hidden": "-".join(str(h) for h in self.model.hidden), "dropout": self.model.dropout}
