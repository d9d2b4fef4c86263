"""A trial's child run: started with its params and tags before training, its metrics and report files logged
after, failed with a reason; stale RUNNING runs failed by a later search. Part of
:class:`~search.tracking.tracker.StudyTracker`."""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from objectives.config import TrialConfig
from search.study.loss_params import loss_text
from search.tracking.mlflow_store import (
    MAX_REASON_CHARS,
    STATE_COMPLETE,
    STATE_FAIL,
    STATE_RUNNING,
    TAG_FAILURE,
    TAG_FINGERPRINT,
    TAG_PHASE,
    TAG_ROLE,
    TAG_STATE,
    TAG_TRIAL,
    TAG_WEEK,
    now_ms,
    truncate,
)
from search.tracking.run_params import trial_params

if TYPE_CHECKING:  # torch and pandas stay unimported until a trial is logged (repairs need none)
    from objectives.data import Dataset
    from objectives.evaluate import EvaluationResult

log = logging.getLogger(__name__)


REPEAT_METRIC = "cv_score_repeat"  # step r: repeat r's OOF score


class TrialRuns:
    """The trial-run methods of :class:`~search.tracking.tracker.StudyTracker` (which opens ``client`` and the
    experiment)."""

    client: MlflowClient
    experiment_id: str

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
        name = f"t{trial_number:03d} {label if label is not None else loss_text(config.loss)} ({phase})"
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
        self,
        run_id: str,
        result: EvaluationResult,
        dataset: Dataset,
        config: TrialConfig,
        extra_metrics: dict[str, float] | None = None,
        extra_tags: dict[str, str] | None = None,
    ) -> None:
        """:meth:`finish_trial` without the final status: the run stays RUNNING until :meth:`mark_finished`.

        A search logs the result, then tells Optuna, then marks the run FINISHED, so that a worker killed in
        between leaves either a FAIL trial (its run is then failed too) or a COMPLETE trial whose run has every
        metric (it is then marked FINISHED); never a COMPLETE trial with an empty run. ``extra_metrics`` (step 0):
        the trial's noise figures (``cv_score_se``, ``diff_vs_reference``..., see :mod:`search.study.noise`)."""
        metrics = trial_metrics(result)
        stamp = metrics[0].timestamp
        metrics += [Metric(k, float(v), stamp, 0) for k, v in (extra_metrics or {}).items()]
        # each repeat's score as a step of one metric: every trial has it (a 1-repeat trial one step), none NaN
        metrics += [Metric(REPEAT_METRIC, float(v), stamp, r) for r, v in enumerate(result.repeat_scores)]
        tags = [RunTag(TAG_STATE, STATE_COMPLETE), *(RunTag(k, v) for k, v in (extra_tags or {}).items())]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        with tempfile.TemporaryDirectory(prefix="losstune-trial-") as tmp:
            from search.tracking.reports import write_trial_reports

            write_trial_reports(Path(tmp), result, dataset, config)
            self.client.log_artifacts(run_id, tmp)

    def log_trial_file(self, run_id: str, path: Path, folder: str) -> None:
        """One file as an artifact of the trial's run, under ``folder`` (the stored OOF predictions: ``oof``)."""
        self.client.log_artifact(run_id, str(path), folder)

    def mark_finished(self, run_id: str) -> None:
        self.client.set_terminated(run_id, "FINISHED")

    def fail_trial(self, run_id: str, reason: str, status: str = "FAILED") -> None:
        """Tags ``losstune.state=FAIL`` and the reason (at most 500 characters); the run ends FAILED or KILLED."""
        if status not in ("FAILED", "KILLED"):
            raise ValueError(f"status must be 'FAILED' or 'KILLED', got {status!r}")
        self.client.log_batch(
            run_id, tags=[RunTag(TAG_STATE, STATE_FAIL), RunTag(TAG_FAILURE, truncate(reason, MAX_REASON_CHARS))]
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
                [self.experiment_id],
                filter_string="attributes.status = 'RUNNING'",
                max_results=1000,
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return


# ------------------------------------------------------------------------------------------------ metrics


def trial_metrics(result: EvaluationResult, timestamp: int | None = None) -> list[Metric]:
    """Every metric of a finished trial: the scores (step 0) and the fold-mean loss curves (step = epoch, from 1)."""
    ts = now_ms() if timestamp is None else timestamp
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
    # the learning curve the trial's epoch count was chosen on (objectives.epochs): mean fold score per checkpoint
    metrics.extend(Metric("epoch_score", float(v), ts, e) for e, v in result.epoch_curve)
    if result.epoch_curve:  # a choice was made (train.checkpoint_every): the epochs it chose
        metrics.append(Metric("chosen_epochs", float(result.chosen_epochs), ts, 0))
    return metrics
