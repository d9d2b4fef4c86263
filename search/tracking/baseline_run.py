"""The study's yardstick on its MLflow parent run (:mod:`search.study.baseline_record`): metrics
``baseline_score``, ``baseline_se`` and, once a trial is scored, ``best_vs_baseline`` / ``best_vs_baseline_se``
(the best trial minus the baseline, paired on the same folds); the tag ``losstune.baseline`` holds the line
people read ("baseline gradient boosting 0.725 ± 0.003; best trial 4 -0.034 ± 0.004 behind"); the param
``baseline_model`` names the model. Metric steps are the number of trials then, so the history shows the gap
closing."""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from search.tracking.mlflow_store import now_ms

TAG_BASELINE = "losstune.baseline"
BASELINE_MODEL = "sklearn HistGradientBoostingClassifier (defaults, native categories)"


def log_baseline(client: MlflowClient, parent_run_id: str, baseline: dict[str, Any], step: int) -> None:
    """The baseline (a :func:`~search.study.baseline_record.baseline_versus_best` record) on the parent run."""
    now = now_ms()
    metrics = [Metric("baseline_score", baseline["score"], now, step), Metric("baseline_se", baseline["se"], now, step)]
    versus = baseline.get("versus_best")
    if versus is not None:
        metrics += [
            Metric("best_vs_baseline", versus["diff"], now, step),
            Metric("best_vs_baseline_se", versus["se"], now, step),
        ]
    logged = client.get_run(parent_run_id).data.params
    params = [] if "baseline_model" in logged else [Param("baseline_model", BASELINE_MODEL)]
    client.log_batch(parent_run_id, metrics=metrics, params=params, tags=[RunTag(TAG_BASELINE, baseline["line"])])
