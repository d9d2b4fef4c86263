"""The configuration a trial ran with, stored with the trial: the one record that ``results``, ``status``,
``export`` (and through the exported file ``train`` and ``evaluate --config``) read back.

The worker writes the resolved :class:`~objectives.config.TrialConfig` (loss, model, training, the trial's own CV
settings, metric) as ONE JSON user attr, :data:`CONFIG_ATTR`, when the trial is asked: a trial killed before it
was told has it too. The value is ``{"version": 1, ...TrialConfig.model_dump(mode="json")}``; the version lets a
later losstune change the layout and still read, or refuse by name, what an earlier one wrote.

Trials written before this record existed carry only their loss (the ``loss`` user attr) and, for a confirm
trial, its ``cv``: :func:`stored_config` rebuilds their configuration from those and the study file as it is now,
which is right only as long as the study file's other settings have not changed since (``export`` checks that
against the trial's MLflow run on that path alone).
"""

from __future__ import annotations

from typing import Any, Protocol

from objectives.config import CVConfig, LossConfig, TrialConfig
from objectives.errors import LosstuneError
from search.formats.validation import validated
from search.study.loss_params import LOSS_PARAMS
from search.study.study_file import StudyFile

CONFIG_ATTR = "trial_config"
CONFIG_VERSION = 1


class StoredTrial(Protocol):
    """What is read of a trial: Optuna's ``FrozenTrial`` and ``Trial`` both have it."""

    @property
    def number(self) -> int: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...

    @property
    def params(self) -> dict[str, Any]: ...


def config_attr(config: TrialConfig) -> dict[str, Any]:
    """The value of :data:`CONFIG_ATTR` for ``config``: plain JSON, versioned."""
    return {"version": CONFIG_VERSION, **config.model_dump(mode="json")}


def has_record(trial: StoredTrial) -> bool:
    """Whether the trial carries its configuration (False: a trial from before the record, or one whose
    configuration was refused as invalid, which has no valid TrialConfig to store)."""
    return CONFIG_ATTR in trial.user_attrs


def stored_config(trial: StoredTrial, file: StudyFile | None = None) -> TrialConfig:
    """The configuration the trial ran with: its record, or for a trial without one, the legacy rebuild from its
    loss (and confirm ``cv``) over ``file``'s settings (one-line :class:`LosstuneError` without ``file``)."""
    raw = trial.user_attrs.get(CONFIG_ATTR)
    if raw is not None:
        return _parsed(raw, trial.number)
    # Studies written before the record existed must keep exporting: their trials are rebuilt as losstune always
    # rebuilt them, from the loss they recorded and the study file as it is now.
    loss = trial.user_attrs.get("loss")
    if not isinstance(loss, dict):
        raise LosstuneError(f"trial {trial.number} has no recorded loss parameters (not a losstune trial?)")
    if file is None:
        raise LosstuneError(f"trial {trial.number} has no recorded configuration ({CONFIG_ATTR}) to read back")
    cv = trial.user_attrs.get("cv")  # a confirm trial's own CV seed and repeats
    return file.trial_config(LossConfig(**loss), cv=CVConfig(**cv) if cv else None)


def stored_loss(trial: StoredTrial) -> dict[str, float | None]:
    """The trial's loss parameters, keyed by :data:`LOSS_PARAMS`: its record's, else (a legacy trial, or an
    invalid configuration, which has no record) the ``loss`` user attr, else Optuna's params."""
    raw = trial.user_attrs.get(CONFIG_ATTR)
    if raw is not None:
        return _parsed(raw, trial.number).loss.model_dump()
    loss = trial.user_attrs.get("loss")
    if isinstance(loss, dict):
        return loss
    return {k: trial.params.get(k) for k in LOSS_PARAMS}


def _parsed(raw: object, number: int) -> TrialConfig:
    where = f"trial {number}'s {CONFIG_ATTR}"
    if not isinstance(raw, dict) or "version" not in raw:
        raise LosstuneError(f"{where} is not a losstune trial configuration (expected a mapping with a version)")
    if raw["version"] != CONFIG_VERSION:
        raise LosstuneError(
            f"{where} has version {raw['version']!r}; this losstune reads version {CONFIG_VERSION}: "
            "use the losstune that ran the trial"
        )
    return validated(TrialConfig, where, {k: v for k, v in raw.items() if k != "version"})
