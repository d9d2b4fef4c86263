"""The configuration a trial ran with, stored with the trial: the one record that ``results``, ``status``,
``export`` (and through the exported file ``train`` and ``evaluate --config``) read back.

:func:`check_trained_settings` refuses a study file whose model or training differ from its trials'.

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

from collections.abc import Sequence
from typing import Protocol

from objectives.config import TrialConfig
from objectives.errors import LosstuneError
from search.study.loss_params import LOSS_PARAMS
from search.study.loss_point import LossPoint, loss_point
from search.study.trial_record import CONFIG_ATTR, CONFIG_VERSION, OptunaTrial, StoredTrial, read_trial

__all__ = ["CONFIG_ATTR", "CONFIG_VERSION", "check_trained_settings", "stored_config", "stored_loss"]


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


class StudyLike(Protocol):
    """What :func:`check_trained_settings` reads of an Optuna study."""

    def get_trials(self, deepcopy: bool = True) -> Sequence[OptunaTrial]: ...


def _settings(config: TrialConfig) -> dict[str, dict[str, object]]:
    """The model and training settings as stored (a dump leaves out what its model does not use, such as
    embedding_bins without an embedding), less the device and precision, which change the speed, not the model."""
    train = config.train.model_dump(mode="json", exclude={"device", "precision"})
    return {"model": config.model.model_dump(mode="json"), "train": train}


def check_trained_settings(study: StudyLike, wanted: TrialConfig, name: str) -> None:
    """Refuse (one-line :class:`LosstuneError`) a study file whose model or training settings differ from those
    the study's trials were trained with: the week's trials are compared with one another, so a model changed
    under them (an edited ``model:`` or ``train:``, or a losstune whose default model differs from the one that
    ran the earlier trials) would mix models in one comparison. The first trial with a stored configuration
    stands for all: each was checked against it when its run started."""
    for trial in study.get_trials(deepcopy=False):
        config = read_trial(trial).trial_config
        if config is None:
            continue
        mine, theirs = _settings(wanted), _settings(config)
        if mine != theirs:
            differ = [
                f"{part}.{key}: {key}={value!r}"
                for part in ("model", "train")
                for key, value in theirs[part].items()
                if mine[part].get(key) != value
            ] + [f"{part}.{key}: not set" for part in ("model", "train") for key in mine[part].keys() - theirs[part]]
            raise LosstuneError(
                f"trial {trial.number} of study {name!r} was trained with other settings ({', '.join(differ)}): "
                "trials of different models are not comparable. Start a new study (another name:), or set those "
                "values in the study file (a losstune before 0.3.0 trained numeric_embedding: none, dropout: 0.0)"
            )
        return
