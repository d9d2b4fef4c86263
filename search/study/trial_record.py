"""What a trial stores, typed at its source: :class:`StoredTrial`, and the one way it is read
(:func:`read_trial`) and written (:func:`write_trial`). No other module of ``search`` touches a trial's Optuna
user attrs (``tests/test_trial_record.py`` greps for it); the study's own attrs are :mod:`search.study.study_record`.

On disk the record stays what Optuna stores: flat JSON user attrs, one per field, named as the fields are (so a
study written before this module, of the same study format, reads the same, and the MLflow view is unchanged).
Written in three steps, each a subset of the fields:

- when the trial is asked (:func:`search.run.trial_ask.trial_attrs`, before it trains, so a killed trial has
  them too): where it stands in the plan and the budget (``phase``, ``phase_index``, ``week``, ``slot``,
  ``worker``), the data (``data_fingerprint``), its ``loss`` and CV seed (a confirm trial's own ``cv`` too) and
  its configuration record ``trial_config`` (:mod:`search.study.stored_config`; none for an invalid
  configuration), then its MLflow run (``mlflow_run_id``);
- when it is told: its scores (``threshold``, ``honest_score``, ``honest_score_std``, ``seconds``) and its noise
  and paired comparisons (:mod:`search.study.noise`: folds, repeats, fold scores, SEs, ``reference``/``best``
  trial, difference, SE and verdict, ``chosen_epochs``, ``study_reference_trial``, ``is_reference``);
- when it fails: ``failure`` (the kind, :data:`FAILURES`) and ``failure_reason`` (its sentence).

Every field is optional: a RUNNING trial has only the first step's, a FAILED one no scores, and a trial killed
between Optuna's ask and its attrs has none. Keys the record does not name are ignored; a value of the wrong type
is one :class:`~objectives.errors.LosstuneError` line naming the trial and the key, raised where it is read.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError, field_serializer, field_validator

from objectives.config import CVConfig, LossConfig, ModelConfig, TrialConfig
from objectives.errors import LosstuneError
from objectives.stats import BETTER, SAME, WORSE
from search.formats.validation import one_line
from search.study.loss_point import LossPoint, RefusedLoss, loss_point, loss_values

CONFIG_ATTR = "trial_config"  # the configuration record's key
CONFIG_VERSION = 1  # its layout: {"version": 1, ...TrialConfig.model_dump(mode="json")}

Verdict = Literal["better", "worse", "not distinguishable"]
if (BETTER, WORSE, SAME) != ("better", "worse", "not distinguishable"):  # a Literal needs the words written out
    raise RuntimeError("objectives.stats renamed its verdicts: update search.study.trial_record.Verdict")
# a failed trial's kind: would it fail the same way again (diverged, invalid: search.study.plan), or was it lost
FAILURES = ("diverged", "invalid", "interrupted", "error", "stale")
Failure = Literal["diverged", "invalid", "interrupted", "error", "stale"]


class OptunaTrial(Protocol):
    """What is read of a trial: Optuna's ``FrozenTrial`` and ``Trial`` both have it."""

    @property
    def number(self) -> int: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...

    @property
    def params(self) -> dict[str, Any]: ...


class WritableTrial(Protocol):
    """What is written to: Optuna's ``Trial`` (a running trial; a finished one takes no more attrs)."""

    def set_user_attr(self, key: str, value: Any) -> None: ...


class StoredComparison(BaseModel):
    """One paired comparison a trial stores (against the reference or the best trial on the same splits)."""

    model_config = ConfigDict(frozen=True)

    trial: int
    diff: float
    se: float | None
    verdict: Verdict | None


class StoredTrial(BaseModel):
    """Everything losstune stores with one trial, as Optuna user attrs of the same names (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # asked: where the trial stands in the plan and the budget, what it runs
    phase: str | None = None
    phase_index: int | None = None
    week: str | None = None
    slot: int | None = None
    worker: str | None = None
    data_fingerprint: str | None = None
    # the point as asked, also when LossConfig refused it (a RefusedLoss); stored as its values by name
    loss: LossPoint | None = None
    cv_seed: int | None = None
    cv: CVConfig | None = None  # a confirm trial's own CV settings; None: the study's
    trial_config: TrialConfig | None = None  # stored versioned (search.study.stored_config); None when invalid
    mlflow_run_id: str | None = None
    # told: its scores
    threshold: float | None = None
    honest_score: float | None = None
    honest_score_std: float | None = None
    seconds: float | None = None
    chosen_epochs: int | None = None
    # told: its noise (search.study.noise); fold lists are repeat-major, index r * folds + k
    folds: int | None = None
    repeats: int | None = None
    fold_scores: tuple[float, ...] | None = None
    honest_fold_scores: tuple[float, ...] | None = None
    repeat_scores: tuple[float, ...] | None = None
    cv_score_se: float | None = None
    honest_score_se: float | None = None
    # told: the study's reference and the paired comparisons (this trial's score minus the other's)
    study_reference_trial: int | None = None
    is_reference: bool | None = None
    reference_trial: int | None = None
    diff_vs_reference: float | None = None
    diff_vs_reference_se: float | None = None
    verdict_vs_reference: Verdict | None = None
    best_trial: int | None = None
    diff_vs_best: float | None = None
    diff_vs_best_se: float | None = None
    verdict_vs_best: Verdict | None = None
    # failed
    failure: Failure | None = None
    failure_reason: str | None = None

    @field_validator("trial_config", mode="before")
    @classmethod
    def _versioned(cls, raw: object) -> object:
        """The stored layout, ``{"version": 1, ...}``, checked and its version taken off (or already a config)."""
        if raw is None or isinstance(raw, TrialConfig):
            return raw
        if not isinstance(raw, dict) or "version" not in raw:
            raise ValueError("not a losstune trial configuration (expected a mapping with a version)")
        if raw["version"] != CONFIG_VERSION:
            raise ValueError(
                f"version {raw['version']!r}; this losstune reads version {CONFIG_VERSION}: "
                "use the losstune that ran the trial"
            )
        config = {k: v for k, v in raw.items() if k != "version"}
        if "model" in config:  # the model the trial trained, as an earlier losstune wrote it
            config["model"] = ModelConfig.from_stored(config["model"])
        return config

    @field_validator("loss", mode="plain")
    @classmethod
    def _point(cls, raw: object) -> LossPoint | None:
        """The stored values by name (``{"alpha": null, "gamma": 3.0, ...}``) as the point they are, valid or
        refused (or already a point)."""
        if raw is None or isinstance(raw, (LossConfig, RefusedLoss)):
            return raw
        if not isinstance(raw, dict):
            raise ValueError(f"expected the loss parameters by name, got {type(raw).__name__}")
        return loss_point(raw)

    @field_serializer("loss")
    def _values(self, point: LossPoint | None) -> dict[str, float | None] | None:
        return None if point is None else loss_values(point)

    @field_serializer("trial_config")
    def _with_version(self, config: TrialConfig | None) -> dict[str, Any] | None:
        return None if config is None else {"version": CONFIG_VERSION, **config.model_dump(mode="json")}

    def comparison(self, name: Literal["reference", "best"]) -> StoredComparison | None:
        """The stored comparison against the ``reference`` or the ``best`` trial, None when there was none."""
        other, diff = getattr(self, f"{name}_trial"), getattr(self, f"diff_vs_{name}")
        if other is None or diff is None:
            return None
        return StoredComparison(
            trial=other, diff=diff, se=getattr(self, f"diff_vs_{name}_se"), verdict=getattr(self, f"verdict_vs_{name}")
        )

    @property
    def phase_name(self) -> str:
        """The phase as the views show it (``?``: a trial killed before its attrs)."""
        return "?" if self.phase is None else self.phase


FIELDS: tuple[str, ...] = tuple(StoredTrial.model_fields)


def read_trial(trial: OptunaTrial) -> StoredTrial:
    """The trial's record, validated: one :class:`LosstuneError` line for a value of the wrong type, naming the
    trial and the key (``trial 3's stored fold_scores[1]: Input should be a valid number (got 'x')``)."""
    try:
        return StoredTrial.model_validate(trial.user_attrs)
    except ValidationError as exc:
        raise LosstuneError(f"trial {trial.number}'s stored {one_line(exc, '').removeprefix('.')}") from None


def stored_attrs(**fields: Any) -> dict[str, Any]:
    """``fields`` (names of :class:`StoredTrial`) as the JSON user attrs they are stored as, validated first (a
    value of the wrong type is a bug here, not a user's error: it raises pydantic's error)."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise TypeError(f"StoredTrial has no field(s) {unknown}")
    record = StoredTrial.model_validate(fields)
    return record.model_dump(mode="json", include=set(fields))


def write_trial(trial: WritableTrial, record: StoredTrial | None = None, **fields: Any) -> None:
    """Store ``fields`` (names of :class:`StoredTrial`), or the fields set in ``record`` (a part of a record, as
    :func:`search.study.noise.trial_stats` makes), on a running trial, each as its user attr."""
    attrs = stored_attrs(**fields)
    if record is not None:
        attrs = {**record.model_dump(mode="json", exclude_unset=True), **attrs}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
