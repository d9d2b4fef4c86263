"""Study files: the YAML a user copies and edits, validated into one typed :class:`StudyFile`.

Loaded with ``yaml.safe_load``; an unknown key, a wrong type or an out-of-range value is one line naming the
field and what is allowed (see :mod:`search.formats.validation`). Paths inside the file are relative to the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from objectives.bounds import STUDY_SEED_MAX, Beta, Budget
from objectives.config import CVConfig, LossConfig, MetricConfig, ModelConfig, StrictModel, TrainConfig, TrialConfig
from objectives.data_spec import DataSpec, Separator
from objectives.errors import LosstuneError
from search.formats.validation import read_yaml, validated
from search.study.loss_params import LossParam, check_value
from search.study.loss_point import checked, with_values
from search.study.phases import DEFAULT_PLAN, Phase, default_reference


class DataBlock(StrictModel):
    """The ``data:`` block as a study file spells it; :meth:`StudyFile.data_spec` turns it into
    :class:`~objectives.data_spec.DataSpec`. Not DataSpec itself: a study file may write ``positive: 1`` (read as
    ``"1"``) and only the encodings listed here, and says so in its validation error."""

    path: Path
    target: str
    positive: str | int | None = None
    sep: Separator | None = None
    encoding: Literal["utf-8", "utf-8-sig", "utf-16", "cp932", "shift_jis"] | None = None
    drop: list[str] = Field(default_factory=list)
    na_values: list[str] = Field(default_factory=list)

    @field_validator("positive")
    @classmethod
    def _as_text(cls, v: str | int | None) -> str | None:
        return None if v is None else str(v)


class BudgetBlock(StrictModel):
    trials_per_week: Budget = 10


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
    beta: Beta | None = None
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
    def _plan_shape(self) -> StudyFile:
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

    @field_validator("cv")
    @classmethod
    def _seed_leaves_room(cls, v: CVConfig) -> CVConfig:
        """The study's seed leaves room for the confirm phases' fresh seeds above it (:data:`STUDY_SEED_MAX`)."""
        if v.seed > STUDY_SEED_MAX:
            raise ValueError(
                f"seed {v.seed} is too large: a study's cv.seed is at most {STUDY_SEED_MAX} (2**31 - 1), so that "
                "its confirm phases' fresh seeds stay within what the splitter takes"
            )
        return v

    @field_validator("reference")
    @classmethod
    def _valid_reference(cls, v: dict[LossParam, float | None] | None) -> dict[LossParam, float | None] | None:
        if v is not None:
            for k, value in v.items():
                check_value(k, value)
            checked(with_values(LossConfig(), v))  # InvalidLoss is a ValueError: pydantic's one line
        return v

    @property
    def reference_loss(self) -> LossConfig:
        """The study's reference configuration: ``reference:`` over the defaults, or the plan's first trial."""
        if self.reference is not None:
            return checked(with_values(LossConfig(), self.reference))
        return default_reference(self.phases)

    @property
    def phases(self) -> tuple[Phase, ...]:
        return DEFAULT_PLAN if self.plan == "default" else tuple(self.plan)

    @property
    def data_spec(self) -> DataSpec:
        d = self.data
        path = d.path if d.path.is_absolute() else (self.base_dir / d.path)
        return DataSpec(
            path=path.resolve(),
            target=d.target,
            positive=d.positive,
            sep=d.sep,
            encoding=d.encoding,
            drop=tuple(d.drop),
            na_values=tuple(d.na_values),
        )

    def trial_config(self, loss: LossConfig | None = None, cv: CVConfig | None = None) -> TrialConfig:
        """A trial's configuration; ``cv`` replaces the study's CV settings (a confirm trial's fresh seed)."""
        metric = MetricConfig(name=self.metric, beta=self.beta or 1.0)
        return TrialConfig(
            loss=loss or LossConfig(), model=self.model, train=self.train, cv=cv or self.cv, metric=metric
        )

    @property
    def storage_url(self) -> str:
        """Optuna storage: ``LOSSTUNE_STORAGE`` if set, else the file's ``storage`` (``${VAR}`` expanded), else a
        SQLite file beside the study. Keep passwords in the environment, not in the study file."""
        url = os.environ.get("LOSSTUNE_STORAGE") or (_expand_env(self.storage) if self.storage else None)
        return url or f"sqlite:///{(self.base_dir / f'{self.name}.optuna.db').resolve()}"

    @property
    def storage_shown(self) -> str:
        """The storage as ``status`` and the MLflow params show it: the study file's ``storage`` as written, with
        its ``${VAR}`` references left unexpanded, so that an environment variable (a token) never lands in a
        table or a run param; ``LOSSTUNE_STORAGE`` and the default as they are. (Passwords are masked by the
        caller, :func:`search.run.storage.redact`.)"""
        if os.environ.get("LOSSTUNE_STORAGE") or not self.storage:
            return self.storage_url
        return self.storage

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

    def load_model_class(self) -> None:
        """Import ``model.module``, if any, from this file's directory (then the installed packages) and register
        it for this process (:func:`objectives.user_module.load_user_class`); one line when it cannot be."""
        if self.model.module is not None:
            from objectives.user_module import load_user_class

            load_user_class(self.model.module, [self.base_dir])


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
