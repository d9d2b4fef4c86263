"""``losstune export``: one trial of a study as a self-contained configuration file, logged on its MLflow run.

The trial is chosen by a rule of :mod:`search.study.verdict` (``--by auto|mean|honest|confirmed``; default ``auto``:
the confirmed best when a confirm phase has run, else the best mean), or given by number; the file's provenance
says how sure the choice is (score ± SE, difference from the reference ± SE, verdict, estimate for unseen data).

Its configuration is the one the trial recorded when it was asked (:func:`~search.study.stored_config.stored_config`),
whatever the study file says now. A trial from before that record is rebuilt from the study file instead, and
only there is the result checked against the params its MLflow run recorded: a study file edited since the trial
ran (other epochs, say) would export a configuration that never produced the scores beside it, so that is refused.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from objectives.config import TrialConfig
from objectives.errors import LosstuneError
from search.formats.atomic_write import refuse_input_as_output
from search.model.exported_config import ExportedConfig, Provenance, dump_exported
from search.study.loss_params import loss_words
from search.study.plan import config_key
from search.study.ranking import choose
from search.study.stored_config import stored_config
from search.study.study_file import StudyFile, load_study_file
from search.study.trial_record import read_trial
from search.study.verdict import confidence, format_confidence

if TYPE_CHECKING:
    import optuna
    from mlflow.entities import Run
    from optuna.trial import FrozenTrial

    from search.tracking.tracker import StudyTracker

log = logging.getLogger(__name__)

TAG_EXPORTED = "losstune.exported"
TAG_EXPORTED_AT = "losstune.exported_at"
TAG_EXPORT_FILE = "losstune.export_file"
EXPORT_ARTIFACT_DIR = "export"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("losstune", "torch", "optuna", "scikit-learn", "mlflow", "pandas", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def select_trial(study: optuna.Study, by: str, number: int | None) -> FrozenTrial:
    """The chosen COMPLETE trial (ties: the earliest); one-line errors for an unknown or unfinished one."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if number is not None:
        found = [t for t in trials if t.number == number]
        if not found:
            raise LosstuneError(f"study {study.study_name!r} has no trial {number} (trials 0-{len(trials) - 1})")
        if found[0] not in complete:
            raise LosstuneError(f"trial {number} is {found[0].state.name}, not COMPLETE: it has no scores to export")
        return found[0]
    if not complete:
        raise LosstuneError(f"study {study.study_name!r} has no complete trial yet: run `losstune search` first")
    chosen = choose(trials, by)
    if chosen is None:
        raise LosstuneError(f"study {study.study_name!r} has no complete trial on its own CV seed: use --by confirmed")
    return chosen.trial


def export_trial(
    study_path: Path,
    out: Path,
    by: str = "auto",
    number: int | None = None,
    fmt: Literal["yaml", "json"] = "yaml",
    log_to_mlflow: bool = True,
) -> tuple[ExportedConfig, str | None]:
    """Write the exported configuration of the chosen trial to ``out`` and log it on the trial's MLflow run.

    Returns the configuration and the id of the run it was logged on (None when it was not logged)."""
    from search.run.store_check import check_stores
    from search.tracking.tracker import StudyTracker

    if by == "ensemble" and number is None:
        from search.model.export_ensemble import export_ensemble

        return export_ensemble(study_path, out, fmt, log_to_mlflow)
    file = load_study_file(study_path)
    inputs = export_inputs(Path(study_path), file)
    refuse_input_as_output(out, inputs)  # before any store is read
    check_stores(file.storage_url, file.tracking_uri)
    study = load_study(file)
    trial = select_trial(study, by, number)
    record = read_trial(trial)
    config = trial_epochs(stored_config(trial, record), record.chosen_epochs)
    if record.threshold is None:
        raise LosstuneError(f"trial {trial.number} has no threshold recorded")
    tracker = StudyTracker(file.tracking_uri, file.experiment, artifact_location=file.artifact_location)
    run = _get_run(tracker, record.mlflow_run_id)
    exported = _exported(file, study, trial, config, by, number, tracker.display_uri)
    dump_exported(exported, out, fmt, inputs=inputs)
    if not log_to_mlflow:
        return exported, None
    if run is None:
        log.warning("trial %d has no MLflow run in %s: %s not logged there", trial.number, tracker.display_uri, out)
        return exported, None
    _log_export(tracker, run.info.run_id, out, exported)
    return exported, run.info.run_id


def export_inputs(study_path: Path, file: StudyFile) -> list[Path]:
    """The files an export reads: the study file, its data, and its SQLite stores (when they are files)."""
    from search.run.storage import sqlite_file

    stores = [sqlite_file(file.storage_url), sqlite_file(file.tracking_uri)]
    return [study_path, file.data_spec.path, *(p for p in stores if p is not None)]


def trial_epochs(config: TrialConfig, chosen: int | None) -> TrialConfig:
    """The configuration to train the final model with: with checkpoints, the trial's chosen epoch count (the one
    its scores and threshold are of), the trial's schedule horizon (the same learning rate at every step as the
    checkpointed models) and no checkpoints (the final model has no validation rows)."""
    if not config.train.checkpoint_every or not chosen:
        return config
    horizon = config.train.schedule_epochs or config.train.epochs
    train = config.train.model_copy(update={"epochs": int(chosen), "checkpoint_every": 0, "schedule_epochs": horizon})
    return config.model_copy(update={"train": train})


def load_study(file: StudyFile) -> optuna.Study:
    """The study of ``file``, read-only: one-line errors when its storage or the study does not exist yet, or
    when this losstune cannot read it (:func:`search.run.storage.open_study`)."""
    import optuna

    from search.run.storage import open_optuna_storage, open_study, require_existing_study_file

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    require_existing_study_file(file.storage_url, file.name)
    return open_study(file.name, open_optuna_storage(file.storage_url))


def _exported(
    file: StudyFile,
    study: optuna.Study,
    trial: FrozenTrial,
    config: TrialConfig,
    by: str,
    number: int | None,
    tracking_uri: str,
) -> ExportedConfig:
    """The file's content: the trial's configuration and threshold, the study's data spec, the provenance."""
    trials = study.get_trials(deepcopy=False)
    choice = None if number is not None else choose(trials, by)
    rule = "trial" if choice is None else choice.rule
    attrs = read_trial(trial)
    if trial.value is None or attrs.threshold is None:  # select_trial returns COMPLETE trials only
        raise LosstuneError(f"trial {trial.number} has no score to export")
    provenance = Provenance(
        study=file.name,
        trial=trial.number,
        phase=attrs.phase,
        selected_by=rule,
        mlflow_run_id=attrs.mlflow_run_id,
        tracking_uri=tracking_uri,
        experiment=file.experiment,
        metric=config.metric.label,
        cv_score=trial.value,
        honest_score=attrs.honest_score,
        honest_score_std=attrs.honest_score_std,
        data_fingerprint=attrs.data_fingerprint,
        week=attrs.week,
        exported_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        versions=versions(),
        confidence=confidence(
            trial, rule, trials, config_key(file.reference_loss), None if choice is None else choice.why
        ),
    )
    return ExportedConfig.of_trial(config, attrs.threshold, file.data_spec, provenance, module_dir_of(config, file))


def module_dir_of(config: TrialConfig, file: StudyFile) -> Path | None:
    """Where a user's ``model.module`` was imported from for the study (None: the MLP, or an installed module)."""
    if config.model.module is None:
        return None
    from objectives.user_module import module_root

    return module_root(config.model.module, [file.base_dir])


def _log_export(tracker: StudyTracker, run_id: str, out: Path, exported: ExportedConfig) -> None:
    """The file as an artifact of the trial's run, which is tagged as exported."""
    tracker.client.log_artifact(run_id, str(out), artifact_path=EXPORT_ARTIFACT_DIR)
    tracker.client.set_tag(run_id, TAG_EXPORTED, "true")
    tracker.client.set_tag(run_id, TAG_EXPORTED_AT, exported.provenance.exported_at)
    tracker.client.set_tag(run_id, TAG_EXPORT_FILE, f"{EXPORT_ARTIFACT_DIR}/{Path(out).name}")


def _get_run(tracker: StudyTracker, run_id: str | None) -> Run | None:
    """The trial's MLflow run (:meth:`StudyTracker.find_run`), or None when it has none, the store does not have
    it, or it was deleted (with a warning)."""
    run = tracker.find_run(run_id) if run_id else None
    if run is None:
        return None
    if run.info.lifecycle_stage != "active":
        log.warning("MLflow run %s of the trial was deleted: not logging the export there", run_id)
        return None
    return run


def format_export(exported: ExportedConfig, out: Path, logged_run_id: str | None) -> str:
    if exported.ensemble is not None:
        from search.model.export_ensemble import format_ensemble_export

        return format_ensemble_export(exported, out, logged_run_id)
    p = exported.provenance
    honest = "n/a" if p.honest_score is None else f"{p.honest_score:.4f}"
    loss = loss_words(exported.loss)
    lines = [
        f"exported trial {p.trial} ({p.phase}) of study {p.study!r} to {out}",
        f"{loss}  threshold {exported.threshold:.4f}",
        f"OOF {p.metric} {p.cv_score:.4f}  honest {honest}  data {p.data_fingerprint}",
    ]
    if p.confidence is not None:
        lines += format_confidence(p.confidence, p.metric)
    if logged_run_id:
        lines.append(f"logged on MLflow run {logged_run_id} (tagged {TAG_EXPORTED}=true)")
    return "\n".join(lines)
