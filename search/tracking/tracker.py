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

import json
import logging
import math
import shlex
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS, MLFLOW_PARENT_RUN_ID
from sqlalchemy.exc import SQLAlchemyError

from objectives.config import LossConfig, TrialConfig
from objectives.errors import LosstuneError
from search.tracking.mlflow_locations import (
    _artifact_uri, _make_local_artifact_dir, _normalise_tracking_uri, _same_location, redact_uri,
)
from search.tracking.run_params import UNWEIGHTED, trial_params
from search.study.results import for_people as table_for_people
from search.tracking.study_run import TAG_BEST_RUN, TAG_BEST_TRIAL, best_trial_row, experiment_kind_tags, parent_note, ui_hint

if TYPE_CHECKING:  # torch, pandas and matplotlib stay unimported until a trial is logged (repairs need none)
    import optuna
    import pandas

    from objectives.data import Dataset
    from objectives.evaluate import EvaluationResult

log = logging.getLogger(__name__)

TAG_ROLE = "losstune.role"
TAG_STUDY = "losstune.study"
TAG_PHASE = "losstune.phase"
TAG_WEEK = "losstune.week"
TAG_TRIAL = "losstune.trial"
TAG_STATE = "losstune.state"
TAG_FINGERPRINT = "losstune.data_fingerprint"
TAG_FAILURE = "losstune.failure_reason"

STATE_RUNNING = "RUNNING"
STATE_COMPLETE = "COMPLETE"
STATE_FAIL = "FAIL"

MAX_REASON_CHARS = 500
RESULTS_TABLE_JSON = "results_table.json"
RESULTS_TABLE_CSV = "results_table.csv"
PLAN_CHOICES_TXT = "plan_choices.txt"
TAG_PLAN_CHOICES = "losstune.plan_choices"
MAX_NOTES_CHARS = 5000

# failures of the tracking store itself (cannot open, cannot write), turned into one readable line
_STORE_ERRORS = (MlflowException, SQLAlchemyError, OSError)


class StudyTracker:
    """MLflow logging of one study: an experiment per study, a parent run for the study, a child run per trial."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None):
        """Open the tracking store and create the experiment if missing (or reuse it).

        ``artifact_location`` (a path or a URI) is used only when the experiment is created; MLflow cannot
        change it afterwards. When it is not given and the store is a sqlite file, artifacts go to
        ``mlartifacts/<experiment>`` beside the database (MLflow's own default would be ``./mlruns`` under
        whatever directory the process happens to start in).

        Raises :class:`LosstuneError` (one line, naming the URI) when the store cannot be opened or written.
        """
        self.tracking_uri = _normalise_tracking_uri(tracking_uri)
        # what messages, logs and the UI command show: the URI without its password, if it has one
        self.display_uri = redact_uri(self.tracking_uri)
        self.experiment_name = experiment
        self.artifact_location = _artifact_uri(artifact_location, self.tracking_uri, experiment)
        with _store_errors(f"cannot open the MLflow tracking store {self.display_uri}"):
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
        if found is not None and found.lifecycle_stage != "active":
            raise LosstuneError(
                f"MLflow experiment {experiment!r} in {self.display_uri} was deleted: restore it with "
                f"`MLFLOW_TRACKING_URI={shlex.quote(self.display_uri)} mlflow experiments restore "
                f"-x {found.experiment_id}` or use another experiment name"
            )
        if found is None:
            if self.artifact_location is not None:
                _make_local_artifact_dir(self.artifact_location)
            with _store_errors(f"cannot write to the MLflow tracking store {self.display_uri}"):
                try:
                    self.experiment_id: str = self.client.create_experiment(
                        experiment, artifact_location=self.artifact_location, tags=experiment_kind_tags({})
                    )
                except MlflowException as exc:
                    # another worker created it between our look-up and here: use theirs
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    found = self.client.get_experiment_by_name(experiment)
                    if found is None:
                        raise
                    self.experiment_id = found.experiment_id
            log.info(
                "MLflow experiment %r (id %s) in %s, artifacts in %s", experiment, self.experiment_id,
                self.display_uri, self.client.get_experiment(self.experiment_id).artifact_location,
            )  # fmt: skip
        else:
            self.experiment_id = found.experiment_id
            for key, value in experiment_kind_tags(found.tags).items():  # experiments made before it was set
                with _store_errors(f"cannot write to the MLflow tracking store {self.display_uri}"):
                    self.client.set_experiment_tag(self.experiment_id, key, value)
            if artifact_location is not None and not _same_location(found.artifact_location, self.artifact_location):
                log.warning(
                    "MLflow experiment %r already exists with artifacts in %s (not %s): keeping its location",
                    experiment, found.artifact_location, self.artifact_location,
                )  # fmt: skip
            log.debug("reusing MLflow experiment %r (id %s)", experiment, self.experiment_id)

    # ------------------------------------------------------------------------------------------- study run

    def ensure_parent_run(self, study_name: str, parent_run_id: str | None, params: dict[str, str] | None = None) -> str:
        """The study's parent run: ``parent_run_id`` re-attached (status RUNNING) if it is a study run of this
        experiment, otherwise a new run named after the study. ``params`` (the study's settings) are logged on
        it (see :meth:`_log_study_params`). Store failures raise :class:`LosstuneError`."""
        with _store_errors(f"cannot write to the MLflow tracking store {self.display_uri}"):
            if parent_run_id:
                run = self._find_run(parent_run_id)
                why_not = self._why_not_parent(run, study_name)
                if why_not is None:
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

    def _log_study_params(self, run, params: dict[str, str]) -> None:
        """The params the run lacks. MLflow never changes a logged param, so a setting edited in the study file
        since (``trials_per_week``, say) keeps its first value on the parent run, with a warning; the trials'
        own params always show what each of them ran."""
        logged = run.data.params
        changed = {k: v for k, v in params.items() if k in logged and logged[k] != v}
        for key, value in changed.items():
            log.warning("MLflow parent run %s keeps param %s=%s (the study file now gives %s)",
                        run.info.run_id, key, logged[key], value)  # fmt: skip
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        if new:
            self.client.log_batch(run.info.run_id, params=new)

    def _find_run(self, run_id: str):
        """The run, or None when the store has no run with this id."""
        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _why_not_parent(self, run, study_name: str) -> str | None:
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

    def start_trial(
        self,
        parent_run_id: str,
        trial_number: int,
        phase: str,
        week: str,
        config: TrialConfig,
        fingerprint: str,
        extra_tags: dict[str, str] | None = None,
        label: str | None = None,
    ) -> str:
        """A RUNNING child run of the parent for one trial, with its params and tags; returns the run id.

        The run is named ``t{trial_number:03d} {label} ({phase})``, so that the first characters, all that the
        UI's run-name column shows, tell trials apart; ``label`` defaults to a compact summary of the loss
        parameters (``g=2 a=0.25 w=0.5/0.5``). Params: :func:`search.tracking.run_params.trial_params`.
        """
        tags = {
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            TAG_ROLE: "trial",
            TAG_PHASE: phase,
            TAG_WEEK: week,
            TAG_TRIAL: str(trial_number),
            TAG_STATE: STATE_RUNNING,
            TAG_FINGERPRINT: fingerprint,
            **{k: str(v) for k, v in (extra_tags or {}).items()},
        }
        name = f"t{trial_number:03d} {label if label is not None else loss_label(config.loss)} ({phase})"
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        # params right away, so a trial that fails or is killed still shows what it was running
        params = [Param(key, value) for key, value in trial_params(config).items()]
        self.client.log_batch(run_id, params=params)
        log.debug("started MLflow run %s (%s)", run_id, name)
        return run_id

    def finish_trial(self, run_id: str, result: EvaluationResult, dataset: Dataset, config: TrialConfig) -> None:
        """Metrics and the COMPLETE state in one batch, the report files in one upload, then FINISHED."""
        self.log_trial_result(run_id, result, dataset, config)
        self.mark_finished(run_id)

    def log_trial_result(
        self, run_id: str, result: EvaluationResult, dataset: Dataset, config: TrialConfig,
        extra_metrics: dict[str, float] | None = None,
    ) -> None:  # fmt: skip
        """:meth:`finish_trial` without the final status: the run stays RUNNING until :meth:`mark_finished`.

        A search logs the result, then tells Optuna, then marks the run FINISHED, so that a worker killed in
        between leaves either a FAIL trial (its run is then failed too) or a COMPLETE trial whose run has every
        metric (it is then marked FINISHED); never a COMPLETE trial with an empty run. ``extra_metrics`` (step 0):
        the trial's noise figures (``cv_score_se``, ``diff_vs_reference``..., see :mod:`search.study.noise`)."""
        metrics = trial_metrics(result)
        metrics += [Metric(k, float(v), metrics[0].timestamp, 0) for k, v in (extra_metrics or {}).items()]
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(TAG_STATE, STATE_COMPLETE)])
        with tempfile.TemporaryDirectory(prefix="losstune-trial-") as tmp:
            from search.tracking.reports import write_trial_reports

            write_trial_reports(Path(tmp), result, dataset, config)
            self.client.log_artifacts(run_id, tmp)

    def mark_finished(self, run_id: str) -> None:
        self.client.set_terminated(run_id, "FINISHED")

    def fail_trial(self, run_id: str, reason: str, status: str = "FAILED") -> None:
        """Tags ``losstune.state=FAIL`` and the reason (at most 500 characters); the run ends FAILED or KILLED."""
        if status not in ("FAILED", "KILLED"):
            raise ValueError(f"status must be 'FAILED' or 'KILLED', got {status!r}")
        self.client.log_batch(
            run_id, tags=[RunTag(TAG_STATE, STATE_FAIL), RunTag(TAG_FAILURE, _truncate(reason, MAX_REASON_CHARS))]
        )
        self.client.set_terminated(run_id, status)

    def fail_stale_runs(self, run_ids: list[str], reason: str) -> int:
        """Mark FAILED (with ``reason``) those of ``run_ids`` still RUNNING, e.g. left by a killed search.

        Returns how many were changed; runs already terminated, and ids not in this experiment, are left alone.
        """
        wanted = set(run_ids)
        if not wanted:
            return 0
        running = [run_id for run_id in self._running_run_ids() if run_id in wanted]
        for run_id in running:
            self.fail_trial(run_id, reason)
        if running:
            log.info("marked %d stale MLflow run(s) FAILED: %s", len(running), reason)
        return len(running)

    def _running_run_ids(self) -> Iterator[str]:
        yield from (run.info.run_id for run in self.running_runs())

    def running_runs(self) -> Iterator:
        """Every run of the experiment whose status is RUNNING (MLflow ``Run`` objects, with their tags)."""
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000,
                page_token=token,
            )  # fmt: skip
            yield from page
            token = page.token
            if not token:
                return

    # ---------------------------------------------------------------------------------------- study summary

    def log_study_summary(
        self, parent_run_id: str, table: "pandas.DataFrame", study: "optuna.Study | None" = None,
        notes: list[str] | None = None,
    ) -> None:
        """The study's results table on the parent run (replaced each time), its best score, and Optuna's plots.

        ``table`` needs a ``cv_score`` column (NaN for trials without a score); a ``state`` column, when
        present, decides which rows count as complete (``COMPLETE``), otherwise every row with a ``cv_score``
        does. Logged: ``results_table.json`` (the ``mlflow.log_table`` format, so the UI shows it as a table)
        and ``results_table.csv``; metrics ``best_cv_score`` and ``n_complete`` (step = rows in the table);
        with ``study``, ``optimization_history.png`` and, when it can be computed, ``param_importances.png``.
        """
        if "cv_score" not in table.columns:
            raise ValueError(f"the results table needs a 'cv_score' column; it has {list(table.columns)}")
        scores = table["cv_score"].astype("float64")
        complete = table["state"].astype(str).eq(STATE_COMPLETE) if "state" in table.columns else scores.notna()
        finite = scores[complete & np.isfinite(scores)]

        now = _now_ms()
        step = len(table)
        metrics = [Metric("n_complete", float(complete.sum()), now, step)]
        if len(finite):
            metrics.append(Metric("best_cv_score", float(finite.max()), now, step))

        with tempfile.TemporaryDirectory(prefix="losstune-study-") as tmp:
            directory = Path(tmp)
            # mlflow.log_table / MlflowClient.log_table *append* to an existing table file, which would repeat
            # every trial on each summary; the same JSON (orient="split", as log_table writes it) is written
            # here and uploaded, replacing the previous one
            shown = table_for_people(table)  # an unweighted alpha written "none" in both files, as in run names
            shown.to_json(directory / RESULTS_TABLE_JSON, orient="split", index=False, date_format="iso")
            shown.to_csv(directory / RESULTS_TABLE_CSV, index=False)
            if study is not None:
                from search.tracking.reports import write_study_plots

                write_study_plots(study, directory)
            if notes:  # what each phase chose and whether that was within noise (search.study.plan.phase_choices)
                (directory / PLAN_CHOICES_TXT).write_text("\n".join(notes) + "\n", encoding="utf-8")
            self.client.log_artifacts(parent_run_id, tmp)

        tags = self._best_trial_tags(parent_run_id, table, complete)
        logged = json.loads(self.client.get_run(parent_run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        entry = {"path": RESULTS_TABLE_JSON, "type": "table"}
        if entry not in logged:  # what log_table records, so the UI lists the file among the run's tables
            tags.append(RunTag(MLFLOW_LOGGED_ARTIFACTS, json.dumps([*logged, entry])))
        if notes:
            tags.append(RunTag(TAG_PLAN_CHOICES, _truncate("\n".join(notes), MAX_NOTES_CHARS)))
        self.client.log_batch(parent_run_id, metrics=metrics, tags=tags)

    def _best_trial_tags(self, parent_run_id: str, table: "pandas.DataFrame", complete) -> list[RunTag]:
        """The best trial named on the parent run: tags ``losstune.best_trial`` and ``losstune.best_run_id``,
        and the run's description (``mlflow.note.content``) with a link to it; rewritten after every trial."""
        best = best_trial_row(table, complete)
        run = None
        if best is not None:
            found = self.client.search_runs(
                [self.experiment_id], max_results=1,
                filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and tags.`{TAG_TRIAL}` = '{best['trial']}'",
            )  # fmt: skip
            run = found[0] if found else None
        note = parent_note(self.experiment_id, table, complete, best, run)
        tags = [RunTag("mlflow.note.content", note)]
        if best is not None:
            tags.append(RunTag(TAG_BEST_TRIAL, str(best["trial"])))
            if run is not None:
                tags.append(RunTag(TAG_BEST_RUN, run.info.run_id))
        return tags

    # --------------------------------------------------------------------------------------------- helpers

    def ui_command(self) -> str:
        """The command that opens this store in the MLflow UI (a password in the URI is shown as ***), with the
        path of this environment's ``mlflow`` when there is none on PATH."""
        return ui_hint(self.display_uri, self.experiment_id, redacted=self.display_uri != self.tracking_uri).command

    def runs_url(self) -> str:
        """The experiment's runs table ("Model training" view) in the UI that :meth:`ui_command` starts."""
        return ui_hint(self.display_uri, self.experiment_id).url


# ------------------------------------------------------------------------------------------------ metrics


def trial_metrics(result: EvaluationResult, timestamp: int | None = None) -> list[Metric]:
    """Every metric of a finished trial: the scores (step 0) and the fold-mean loss curves (step = epoch, from 1)."""
    ts = _now_ms() if timestamp is None else timestamp
    scalars: dict[str, float] = {
        "cv_score": result.oof_score,
        "honest_score": result.honest_score_mean,
        "honest_score_std": result.honest_score_std,
        "threshold": result.threshold,
        **{f"fold_score_{k}": s for k, s in enumerate(result.fold_scores)},
        **{f"honest_fold_score_{k}": s for k, s in enumerate(result.honest_fold_scores)},
        "f1_at_0_5": result.f1_at_0_5,
        "precision": result.precision,
        "recall": result.recall,
        "roc_auc": result.roc_auc,
        "pr_auc": result.pr_auc,
        "log_loss": result.log_loss,
        "seconds": result.seconds,
    }
    metrics = [Metric(key, float(value), ts, 0) for key, value in scalars.items()]
    for key, curves in (("train_loss", result.train_loss), ("val_loss", result.val_loss)):
        curves = np.atleast_2d(np.asarray(curves, dtype=np.float64))
        if curves.size == 0:
            continue
        with warnings.catch_warnings():  # an all-NaN epoch (no validation rows) is skipped below, not warned about
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(curves, axis=0)
        metrics.extend(Metric(key, float(v), ts, epoch) for epoch, v in enumerate(mean, start=1) if math.isfinite(v))
    return metrics


def loss_label(loss: LossConfig) -> str:
    """A short run-name part for a loss configuration: ``g=2 a=0.25 w=0.5/0.5`` (weights bce/focal), each value
    to 3 significant digits (the params have them exactly)."""
    alpha = UNWEIGHTED if loss.alpha is None else f"{loss.alpha:.3g}"
    return f"g={loss.gamma:.3g} a={alpha} w={loss.bce_weight:.3g}/{loss.focal_weight:.3g}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """Turn a failure of the tracking store into one line: ``what: <first line of the cause>``."""
    try:
        yield
    except _STORE_ERRORS as exc:
        cause = str(getattr(exc, "message", None) or exc).strip().splitlines()
        first = cause[0] if cause else type(exc).__name__
        raise LosstuneError(redact_uri(f"{what}: {type(exc).__name__}: {first}")[:1000]) from exc


__all__ = ["StudyTracker", "trial_metrics", "loss_label"]
