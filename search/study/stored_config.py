"""The configuration a trial ran with, stored with the trial: the one record that ``results``, ``status``,
``export`` (and through the exported file ``train`` and ``evaluate --config``) read back.

The worker writes the resolved :class:`~objectives.config.TrialConfig` (loss, model, training, the trial's own CV
settings, metric) as ONE JSON user attr, :data:`CONFIG_ATTR`, when the trial is asked: a trial killed before it
was told has it too. The value is ``{"version": 1, ...TrialConfig.model_dump(mode="json")}``; the version lets a
later losstune change the layout and still read, or refuse by name, what an earlier one wrote. It is one field of
the trial's record, :class:`~search.study.trial_record.StoredTrial`, which reads and writes it.

Studies written before this record existed (trials with only their ``loss`` user attr) are not read: they are
refused when opened, by their study format (:func:`search.run.storage.check_study_format`). A trial whose
configuration was refused as invalid has no record (there is no valid TrialConfig to store): its loss is read from
its ``loss`` user attr (:func:`stored_loss`).
"""

from __future__ import annotations

from objectives.config import TrialConfig
from objectives.errors import LosstuneError
from search.study.loss_params import LOSS_PARAMS
from search.study.loss_point import LossPoint, loss_point
from search.study.trial_record import CONFIG_ATTR, CONFIG_VERSION, OptunaTrial, StoredTrial, read_trial

__all__ = ["CONFIG_ATTR", "CONFIG_VERSION", "stored_config", "stored_loss"]


def stored_config(trial: OptunaTrial, record: StoredTrial | None = None) -> TrialConfig:
    """The configuration the trial ran with, from its record (one-line :class:`LosstuneError` without one);
    ``record``: the trial's, when already read."""
    config = (record or read_trial(trial)).trial_config
    if config is None:
        raise LosstuneError(f"trial {trial.number} has no recorded configuration ({CONFIG_ATTR}) to read back")
    return config


def stored_loss(trial: OptunaTrial, record: StoredTrial | None = None) -> LossPoint:
    """The trial's loss: its record's configuration's, else (an invalid configuration, which has no record) its
    ``loss``, a RefusedLoss, else Optuna's params (a trial killed before its attrs: a RefusedLoss when a
    parameter is missing)."""
    stored = record or read_trial(trial)
    if stored.trial_config is not None:
        return stored.trial_config.loss
    if stored.loss is not None:
        return stored.loss
    return loss_point({k: trial.params.get(k) for k in LOSS_PARAMS})
