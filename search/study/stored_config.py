"""The configuration a trial ran with, stored with the trial: the one record that ``results``, ``status``,
``export`` (and through the exported file ``train`` and ``evaluate --config``) read back.

The worker writes the resolved :class:`~objectives.config.TrialConfig` (loss, model, training, the trial's own CV
settings, metric) as ONE JSON user attr, :data:`CONFIG_ATTR`, when the trial is asked: a trial killed before it
was told has it too. The value is ``{"version": 1, ...TrialConfig.model_dump(mode="json")}``; the version lets a
later losstune change the layout and still read, or refuse by name, what an earlier one wrote.

Studies written before this record existed (trials with only their ``loss`` user attr) are not read: they are
refused when opened, by their study format (:func:`search.run.storage.check_study_format`). A trial whose
configuration was refused as invalid has no record (there is no valid TrialConfig to store): its loss is read from
its ``loss`` user attr (:func:`stored_loss`).
"""

from __future__ import annotations

from typing import Any, Protocol

from objectives.config import TrialConfig
from objectives.errors import LosstuneError
from search.formats.validation import validated
from search.study.loss_params import LOSS_PARAMS

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


def stored_config(trial: StoredTrial) -> TrialConfig:
    """The configuration the trial ran with, from its record (one-line :class:`LosstuneError` without one)."""
    raw = trial.user_attrs.get(CONFIG_ATTR)
    if raw is None:
        raise LosstuneError(f"trial {trial.number} has no recorded configuration ({CONFIG_ATTR}) to read back")
    return _parsed(raw, trial.number)


def stored_loss(trial: StoredTrial) -> dict[str, float | None]:
    """The trial's loss parameters, keyed by :data:`LOSS_PARAMS`: its record's, else (an invalid configuration,
    which has no record) the ``loss`` user attr, else Optuna's params (a trial killed before its attrs)."""
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
