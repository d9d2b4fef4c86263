"""``losstune train``: fit an exported configuration on all rows and save it as an MLflow model directory.

The data is the exported config's data file, or ``--data`` (typically the full set, of which the study may have
searched a part): a fingerprint other than the trial's is a warning, not an error, since that is the normal
case; the output says which file was used. The model directory is saved locally and, unless ``track=False``,
also logged, in the study's final-models experiment ``<experiment>-final``, as a run named ``final <study>``
with a logged model (and registered under ``register`` when given). MLflow is driven through an explicit client
and run id: the logged model is created with ``MlflowClient.create_logged_model``, the directory saved with its
ids and uploaded with ``log_model_artifacts`` (what ``mlflow.pyfunc.log_model`` does, without its global
active run and tracking URI).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from objectives.data import load_dataset
from objectives.errors import LosstuneError
from objectives.final import fit_final_model
from search.formats.atomic_write import check_output
from search.model.exported_config import ExportedConfig, Provenance, load_exported

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from objectives.data import Dataset
    from objectives.final import FinalModel
    from search.tracking.tracker import StudyTracker

log = logging.getLogger(__name__)

TAG_ROLE_FINAL = "final"
MODEL_NAME = "model"


@dataclass
class TrainOutcome:
    model_dir: Path
    data_path: Path
    fingerprint: str
    same_data: bool | None  # None: the config records no fingerprint
    n_rows: int
    final_train_loss: float
    seconds: float
    run_id: str | None = None
    model_id: str | None = None
    registered: tuple[str, str] | None = None  # (name, version)


def tracking_target(exported: ExportedConfig) -> tuple[str, str] | None:
    """(tracking URI, experiment) of the study: ``LOSSTUNE_TRACKING_URI`` overrides the recorded URI."""
    uri = os.environ.get("LOSSTUNE_TRACKING_URI") or exported.provenance.tracking_uri
    if not uri:
        return None
    return uri, final_experiment(exported.provenance.experiment or exported.provenance.study)


def final_experiment(study_experiment: str) -> str:
    """The experiment of a study's final models: apart from its trials', so that the trials' runs table (and
    "select all, compare") holds trials only."""
    return f"{study_experiment}-final"


def _checked_tracker(
    exported: ExportedConfig, out: Path, register: str | None, track: bool, inputs: list[Path]
) -> StudyTracker | None:
    """The final-models tracker (None with ``track=False``), after the checks that must fail before training."""
    check_output(out, inputs, directory=True)
    if register and not track:
        raise LosstuneError("--register needs MLflow tracking: drop --no-track")
    target = tracking_target(exported) if track else None
    if track and target is None:
        raise LosstuneError("the config records no MLflow tracking URI: set LOSSTUNE_TRACKING_URI or use --no-track")
    tracker = None
    if target is not None:
        from search.run.store_check import check_stores
        from search.tracking.tracker import StudyTracker

        check_stores(None, target[0])  # a password left out, a dead server, a damaged file: one line at once
        tracker = StudyTracker(*target)  # opened before training: a bad store fails in seconds, not after it
    return tracker


def _check_model(exported: ExportedConfig, dataset: Dataset) -> None:
    """A user's model (``model.module``): imported from the config's ``module_dir``, built and run on two rows,
    its size checked against the memory, and its source file readable for the model directory to bundle."""
    if exported.model.module is None:
        return
    from objectives.memory import check_trial_memory
    from objectives.user_module import user_source

    exported.load_model_class()
    check_trial_memory(dataset, exported.trial_config, final=True)
    user_source(exported.model.module)


def train_model(
    config_path: Path, out: Path, data: Path | None = None, register: str | None = None, track: bool = True
) -> TrainOutcome:
    exported = load_exported(config_path)
    out = Path(out)
    spec = exported.data if data is None else exported.data.model_copy(update={"path": Path(data).resolve()})
    dataset = load_dataset(spec)
    _check_model(exported, dataset)  # a user's model: validated before any store is opened
    tracker = _checked_tracker(exported, out, register, track, [Path(config_path), spec.path])
    recorded = exported.provenance.data_fingerprint
    same = None if recorded is None else recorded == dataset.fingerprint
    if same is False:
        log.warning(
            "training on %s (fingerprint %s), not on the data trial %d was scored on (%s): expected when this is "
            "the full set; the CV scores in the config describe the other data",
            spec.path,
            dataset.fingerprint,
            exported.provenance.trial,
            recorded,
        )
    start = time.perf_counter()
    final = _fit(dataset, exported)
    seconds = time.perf_counter() - start
    outcome = TrainOutcome(
        model_dir=out,
        data_path=spec.path,
        fingerprint=dataset.fingerprint,
        same_data=same,
        n_rows=dataset.n_rows,
        final_train_loss=float(final.train_loss[-1]),
        seconds=seconds,
    )
    trained_on = {
        "path": str(spec.path),
        "fingerprint": dataset.fingerprint,
        "n_rows": dataset.n_rows,
        "positive_rate": dataset.positive_rate,
        "excluded_columns": dataset.excluded_columns,
        "same_data_as_trial": same,
        "seconds": round(seconds, 3),
    }
    if tracker is None:
        from search.model.model_dir_saving import save_model_dir

        save_model_dir(final, exported, out, trained_on)
        return outcome
    _save_and_log(tracker, final, exported, out, trained_on, register, outcome)
    return outcome


def _fit(dataset: Dataset, exported: ExportedConfig) -> FinalModel:
    """The exported trial's final model, or each member of an exported ensemble on all rows (own loss and seed)."""
    if exported.ensemble is None:
        return fit_final_model(dataset, exported.trial_config)
    from objectives.final_ensemble import fit_final_ensemble

    weights = [m.weight for m in exported.ensemble.members]
    return fit_final_ensemble(dataset, exported.member_configs(), weights)


def _save_and_log(
    tracker: StudyTracker,
    final: FinalModel,
    exported: ExportedConfig,
    out: Path,
    trained_on: dict[str, object],
    register: str | None,
    outcome: TrainOutcome,
) -> None:
    from mlflow.entities import LoggedModelOutput, Param, RunTag
    from mlflow.models import Model

    from search.model.model_dir_saving import save_model_dir
    from search.tracking.mlflow_store import STORE_ERRORS, TAG_STUDY
    from search.tracking.run_params import final_params

    client, p = tracker.client, exported.provenance
    run = client.create_run(tracker.experiment_id, run_name=f"final {p.study}", tags=_final_run_tags(p, outcome))
    run_id = run.info.run_id
    model_id = None
    try:
        params = final_params(exported.trial_config, exported.threshold)
        metrics = _final_metrics(final, p, outcome)
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
        logged = client.create_logged_model(
            tracker.experiment_id,
            name=MODEL_NAME,
            source_run_id=run_id,
            model_type="losstune-mlp" if exported.model.module is None else "losstune-user-module",
            params=params,
            tags={TAG_STUDY: p.study, "losstune.source_trial": str(p.trial)},
        )
        model_id = logged.model_id
        # the ids in MLmodel, as mlflow.pyfunc.log_model writes them: the local directory is the logged model
        ids = Model(artifact_path=logged.artifact_location, run_id=run_id, model_uuid=model_id, model_id=model_id)
        save_model_dir(final, exported, out, trained_on, mlflow_model=ids)
        client.log_model_artifacts(model_id, str(out))
        client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
        client.finalize_logged_model(model_id, "READY")
        client.log_artifact(run_id, str(out / "artifacts" / "exported_config.yaml"))
        if register:
            outcome.registered = (register, _register(client, register, model_id, logged.artifact_location, run_id))
        client.log_batch(run_id, tags=[RunTag("losstune.model_id", model_id)])
        client.set_terminated(run_id, "FINISHED")
    except BaseException as exc:
        _mark_failed(client, run_id, model_id)
        if isinstance(exc, STORE_ERRORS):  # a full disk, a read-only store: one line (train is not resumable)
            raise _store_line(exc, out) from exc
        raise
    outcome.run_id, outcome.model_id = run_id, model_id


def _store_line(exc: BaseException, out: Path) -> LosstuneError:
    from search.tracking.mlflow_store import store_error_line

    kept = "saved, complete" if (out / "MLmodel").is_file() else "not written"
    return store_error_line(f"cannot log the final model to MLflow ({out}: {kept})", exc)


def _mark_failed(client: MlflowClient, run_id: str, model_id: str | None) -> None:
    """The run (and logged model) FAILED, as far as the store still takes writes: when it takes none (the very
    fault being reported), the error that stopped the training is the one the user needs, not this one."""
    from search.tracking.mlflow_store import STORE_ERRORS

    try:
        client.set_terminated(run_id, "FAILED")
        if model_id is not None:
            client.finalize_logged_model(model_id, "FAILED")
    except STORE_ERRORS as exc:
        log.debug("could not mark run %s FAILED: %s", run_id, exc)


def _final_run_tags(p: Provenance, outcome: TrainOutcome) -> dict[str, str]:
    """The final run's tags: what it is, which trial and data it came from."""
    from search.tracking.mlflow_store import TAG_FINGERPRINT, TAG_ROLE, TAG_STUDY

    return {
        TAG_ROLE: TAG_ROLE_FINAL,
        TAG_STUDY: p.study,
        TAG_FINGERPRINT: outcome.fingerprint,
        "losstune.source_trial": str(p.trial),
        "losstune.source_run_id": p.mlflow_run_id or "",
        "losstune.data_file": str(outcome.data_path),
        "losstune.same_data_as_trial": str(outcome.same_data).lower(),
    }


def _final_metrics(final: FinalModel, p: Provenance, outcome: TrainOutcome) -> list[Metric]:
    """The training loss per epoch, the rows trained on, and the source trial's scores."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric("train_loss", float(v), now, epoch) for epoch, v in enumerate(final.train_loss, start=1)]
    metrics += [Metric("n_rows", float(outcome.n_rows), now, 0)]  # the threshold is a param: no name twice
    metrics += [
        Metric(f"trial_{k}", float(v), now, 0)
        for k, v in (("cv_score", p.cv_score), ("honest_score", p.honest_score))
        if v is not None
    ]
    return metrics


def _register(client: MlflowClient, name: str, model_id: str, source: str, run_id: str) -> str:
    """A new version of registered model ``name`` (created if missing). ``source`` is the logged model's
    artifact location: a ``models:/<id>`` source would be resolved by the registry store through MLflow's
    *global* tracking URI (mlflow 3.17), i.e. the current directory's store, not this one. The SQL registry
    does not keep ``model_id`` either, so the version is tagged with it."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise LosstuneError(f"cannot register model {name!r}: {str(exc).splitlines()[0]}") from None
    version = client.create_model_version(
        name, source=source, run_id=run_id, model_id=model_id, tags={"losstune.model_id": model_id}
    )
    return str(version.version)


def format_train(o: TrainOutcome) -> str:
    same = {
        True: "the data the trial was scored on",
        False: "NOT the data the trial was scored on",
        None: "no recorded fingerprint to compare",
    }[o.same_data]
    lines = [
        f"trained on {o.data_path} ({o.n_rows} rows, fingerprint {o.fingerprint}: {same}) in {o.seconds:.1f}s, "
        f"final train loss {o.final_train_loss:.4f}",
        f"saved MLflow model (pyfunc) to {o.model_dir}",
    ]
    if o.run_id:
        lines.append(f"logged as model {o.model_id} of MLflow run {o.run_id}")
    if o.registered:
        lines.append(f"registered as {o.registered[0]!r} version {o.registered[1]}")
    return "\n".join(lines)
