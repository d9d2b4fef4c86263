"""Opening a study's MLflow experiment: created when missing (another worker may create it at the same moment),
otherwise reused, with the experiment-kind tags added to experiments made before they existed."""

from __future__ import annotations

import logging
import shlex

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from objectives.errors import LosstuneError
from search.tracking.mlflow_locations import make_local_artifact_dir, same_location
from search.tracking.mlflow_store import store_errors
from search.tracking.study_run import experiment_kind_tags

log = logging.getLogger(__name__)


def open_experiment(
    client: MlflowClient, experiment: str, artifact_location: str | None, requested: str | None, display_uri: str
) -> str:
    """The id of ``experiment``, created with ``artifact_location`` when missing. ``requested`` is the location the
    caller asked for (None: the default), warned about when the existing experiment keeps another one."""
    with store_errors(f"cannot open the MLflow tracking store {display_uri}"):
        found = client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage != "active":
        raise LosstuneError(
            f"MLflow experiment {experiment!r} in {display_uri} was deleted: restore it with "
            f"`MLFLOW_TRACKING_URI={shlex.quote(display_uri)} mlflow experiments restore "
            f"-x {found.experiment_id}` or use another experiment name"
        )
    if found is None:
        return _create(client, experiment, artifact_location, display_uri)
    for key, value in experiment_kind_tags(found.tags).items():  # experiments made before it was set
        with store_errors(f"cannot write to the MLflow tracking store {display_uri}"):
            client.set_experiment_tag(found.experiment_id, key, value)
    # (artifact_location is None only when none was requested: the store's own default)
    moved = artifact_location is not None and not same_location(found.artifact_location, artifact_location)
    if requested is not None and moved:
        log.warning(
            "MLflow experiment %r already exists with artifacts in %s (not %s): keeping its location",
            experiment,
            found.artifact_location,
            artifact_location,
        )
    log.debug("reusing MLflow experiment %r (id %s)", experiment, found.experiment_id)
    return found.experiment_id


def _create(client: MlflowClient, experiment: str, artifact_location: str | None, display_uri: str) -> str:
    if artifact_location is not None:
        make_local_artifact_dir(artifact_location)
    with store_errors(f"cannot write to the MLflow tracking store {display_uri}"):
        try:
            experiment_id = client.create_experiment(
                experiment, artifact_location=artifact_location, tags=experiment_kind_tags({})
            )
        except MlflowException as exc:
            # another worker created it between our look-up and here: use theirs
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
            experiment_id = found.experiment_id
    log.info(
        "MLflow experiment %r (id %s) in %s, artifacts in %s",
        experiment,
        experiment_id,
        display_uri,
        client.get_experiment(experiment_id).artifact_location,
    )
    return experiment_id
