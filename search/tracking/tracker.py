"""MLflow logging of one study: an experiment per study, a parent run for the study, a child run per trial.

Everything goes through one explicit :class:`mlflow.MlflowClient` and run ids: no ``mlflow.start_run``, no
active-run globals, so a tracker can be used from any thread and never writes to a store other than its own.
Every trial is one child run with the same params (:func:`search.tracking.run_params.trial_params`: every loss parameter
a number), the same metric keys and the same tags, so the trials of all weeks form one comparable table in the
MLflow UI.

Metrics, params and tags of a step go in one ``log_batch`` call (the client splits it under MLflow's per-request
limits); a trial's report files are uploaded with one ``log_artifacts`` call.

Tags written (all strings):

- experiment: ``mlflow.experimentKind=custom_model_development`` (the UI opens it on its runs table)
- parent run: ``losstune.role=study``, ``losstune.study``, ``losstune.best_trial``, ``losstune.best_run_id`` and
  ``mlflow.note.content`` (its description, linking the best trial's run), the last three after every trial
- trial run: ``mlflow.parentRunId``, ``losstune.role=trial``, ``losstune.phase``, ``losstune.week``,
  ``losstune.trial`` (the Optuna trial number), ``losstune.state`` (RUNNING / COMPLETE / FAIL),
  ``losstune.data_fingerprint``, ``losstune.failure_reason`` (failed trials only), plus any ``extra_tags``.

Optuna is imported only by :meth:`StudyTracker.log_study_summary` (for its plots), MLflow by this module.
"""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from mlflow.entities import Param, Run
from mlflow.exceptions import MlflowException

from search.tracking.experiment import open_experiment
from search.tracking.mlflow_locations import artifact_uri, normalise_tracking_uri, redact_uri
from search.tracking.mlflow_store import TAG_ROLE, TAG_STUDY, store_errors
from search.tracking.study_run import ui_hint
from search.tracking.study_summary import StudySummary
from search.tracking.trial_runs import TrialRuns

log = logging.getLogger(__name__)


class StudyTracker(TrialRuns, StudySummary):
    """MLflow logging of one study: an experiment per study, a parent run for the study, a child run per trial.

    Opening the experiment and the parent run are here; the trials' runs are :class:`TrialRuns`', the parent run's
    summary :class:`StudySummary`'s."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None):
        """Open the tracking store and create the experiment if missing (or reuse it).

        ``artifact_location`` (a path or a URI) is used only when the experiment is created; MLflow cannot
        change it afterwards. When it is not given and the store is a sqlite file, artifacts go to
        ``mlartifacts/<experiment>`` beside the database (MLflow's own default would be ``./mlruns`` under
        whatever directory the process happens to start in).

        Raises :class:`LosstuneError` (one line, naming the URI) when the store cannot be opened or written.
        """
        self.tracking_uri = normalise_tracking_uri(tracking_uri)
        # what messages, logs and the UI command show: the URI without its password, if it has one
        self.display_uri = redact_uri(self.tracking_uri)
        self.experiment_name = experiment
        self.artifact_location = artifact_uri(artifact_location, self.tracking_uri, experiment)
        with store_errors(f"cannot open the MLflow tracking store {self.display_uri}"):
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = open_experiment(
            self.client, experiment, self.artifact_location, artifact_location, self.display_uri
        )

    # ------------------------------------------------------------------------------------------- study run

    def ensure_parent_run(
        self, study_name: str, parent_run_id: str | None, params: dict[str, str] | None = None
    ) -> str:
        """The study's parent run: ``parent_run_id`` re-attached (status RUNNING) if it is a study run of this
        experiment, otherwise a new run named after the study. ``params`` (the study's settings) are logged on
        it (see :meth:`_log_study_params`). Store failures raise :class:`LosstuneError`."""
        with store_errors(f"cannot write to the MLflow tracking store {self.display_uri}"):
            if parent_run_id:
                run = self.find_run(parent_run_id)
                why_not = self._why_not_parent(run, study_name)
                if run is not None and why_not is None:
                    self.client.update_run(parent_run_id, status="RUNNING")
                    self._log_study_params(run, params or {})
                    log.info("re-attached to MLflow parent run %s of study %r", parent_run_id, study_name)
                    return parent_run_id
                log.warning("MLflow parent run %s %s: starting a new parent run", parent_run_id, why_not)
            run = self.client.create_run(
                self.experiment_id,
                run_name=study_name,
                tags={TAG_ROLE: "study", TAG_STUDY: study_name},
            )
            self._log_study_params(run, params or {})
        log.info("started MLflow parent run %s for study %r", run.info.run_id, study_name)
        return run.info.run_id

    def _log_study_params(self, run: Run, params: dict[str, str]) -> None:
        """The params the run lacks. MLflow never changes a logged param, so a setting edited in the study file
        since (``trials_per_week``, say) keeps its first value on the parent run, with a warning; the trials'
        own params always show what each of them ran."""
        logged = run.data.params
        changed = {k: v for k, v in params.items() if k in logged and logged[k] != v}
        for key, value in changed.items():
            log.warning(
                "MLflow parent run %s keeps param %s=%s (the study file now gives %s)",
                run.info.run_id,
                key,
                logged[key],
                value,
            )
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        if new:
            self.client.log_batch(run.info.run_id, params=new)

    def find_run(self, run_id: str) -> Run | None:
        """The run, or None when the store has no run with this id."""
        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _why_not_parent(self, run: Run | None, study_name: str) -> str | None:
        if run is None:
            return "is not in the tracking store"
        if run.info.experiment_id != self.experiment_id:
            return f"belongs to another experiment (id {run.info.experiment_id})"
        if run.info.lifecycle_stage != "active":
            return "was deleted"
        if run.data.tags.get(TAG_ROLE) != "study":
            return "is not a study run"
        if run.data.tags.get(TAG_STUDY) != study_name:
            return f"belongs to study {run.data.tags.get(TAG_STUDY)!r}, not {study_name!r}"
        return None

    def set_parent_finished(self, parent_run_id: str, status: str = "FINISHED") -> None:
        """Status FINISHED on the parent run, at the end of a search run (it is RUNNING again on the next);
        KILLED after Ctrl-C, FAILED after an error."""
        self.client.set_terminated(parent_run_id, status)

    # ------------------------------------------------------------------------------------------ trial runs

    # --------------------------------------------------------------------------------------------- helpers

    def ui_command(self) -> str:
        """The command that opens this store in the MLflow UI (a password in the URI is shown as ***), with the
        path of this environment's ``mlflow`` when there is none on PATH."""
        return ui_hint(self.display_uri, self.experiment_id, redacted=self.display_uri != self.tracking_uri).command

    def runs_url(self) -> str:
        """The experiment's runs table ("Model training" view) in the UI that :meth:`ui_command` starts."""
        return ui_hint(self.display_uri, self.experiment_id).url


__all__ = ["StudyTracker"]
