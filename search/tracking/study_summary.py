"""The study's parent run after every trial: the results table (replaced each time), its best score, Optuna's
plots, the plan's choices, and the best trial named with a link to its run. Part of
:class:`~search.tracking.tracker.StudyTracker`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS, MLFLOW_PARENT_RUN_ID

from search.study.results import for_people as table_for_people
from search.study.study_ensemble import ENSEMBLE_STATE
from search.tracking.mlflow_store import STATE_COMPLETE, TAG_TRIAL, now_ms, truncate
from search.tracking.study_run import (
    TAG_BEST_RULE,
    TAG_BEST_RUN,
    TAG_BEST_TRIAL,
    TAG_REFERENCE_TRIAL,
    best_trial_row,
    parent_note,
    rule_of_memo,
)

if TYPE_CHECKING:
    import optuna
    import pandas

RESULTS_TABLE_JSON = "results_table.json"
RESULTS_TABLE_CSV = "results_table.csv"
PLAN_CHOICES_TXT = "plan_choices.txt"
TAG_PLAN_CHOICES = "losstune.plan_choices"
MAX_NOTES_CHARS = 5000


class StudySummary:
    """The study-summary methods of :class:`~search.tracking.tracker.StudyTracker`."""

    client: MlflowClient
    experiment_id: str

    def log_study_summary(
        self,
        parent_run_id: str,
        table: pandas.DataFrame,
        study: optuna.Study | None = None,
        notes: list[str] | None = None,
    ) -> None:
        """The study's results table on the parent run (replaced each time), its best score, and Optuna's plots.

        ``table`` needs a ``cv_score`` column (NaN for trials without a score); a ``state`` column, when
        present, decides which rows count as complete (``COMPLETE``), otherwise every row with a ``cv_score``
        does. Logged: ``results_table.json`` (the ``mlflow.log_table`` format, so the UI shows it as a table)
        and ``results_table.csv``; metrics ``best_cv_score`` and ``n_complete`` (step = trial rows in the table);
        with ``study``, ``optimization_history.png`` and, when it can be computed, ``param_importances.png``.
        """
        if "cv_score" not in table.columns:
            raise ValueError(f"the results table needs a 'cv_score' column; it has {list(table.columns)}")
        # the rows that are trials: the ensemble's row is uploaded with the table but counted nowhere
        trials = table[table["state"].astype(str).ne(ENSEMBLE_STATE)] if "state" in table.columns else table
        scores = trials["cv_score"].astype("float64")
        complete = trials["state"].astype(str).eq(STATE_COMPLETE) if "state" in trials.columns else scores.notna()
        finite = scores[complete & np.isfinite(scores)]

        now = now_ms()
        step = len(trials)
        metrics = [Metric("n_complete", float(complete.sum()), now, step)]
        if len(finite):
            metrics.append(Metric("best_cv_score", float(finite.max()), now, step))

        self._upload_summary_files(parent_run_id, table, study, notes)

        tags = self._best_trial_tags(parent_run_id, trials, complete)
        logged = json.loads(self.client.get_run(parent_run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        entry = {"path": RESULTS_TABLE_JSON, "type": "table"}
        if entry not in logged:  # what log_table records, so the UI lists the file among the run's tables
            tags.append(RunTag(MLFLOW_LOGGED_ARTIFACTS, json.dumps([*logged, entry])))
        if notes:
            tags.append(RunTag(TAG_PLAN_CHOICES, truncate("\n".join(notes), MAX_NOTES_CHARS)))
        self.client.log_batch(parent_run_id, metrics=metrics, tags=tags)

    def log_ensemble(self, parent_run_id: str, ensemble: dict) -> None:
        """The study's ensemble (:mod:`search.study.study_ensemble`) on the parent run: ``ensemble.json`` and the
        metrics ``ensemble_cv_score``, ``ensemble_cv_score_se``, ``ensemble_honest_score``, ``ensemble_estimate``
        (BBC-CV), ``ensemble_diff_vs_reference`` and ``ensemble_verdict_vs_reference`` (+1, 0, -1) and tag
        ``losstune.ensemble`` (its members and weights). Its row is in the results table (logged by the caller)."""
        self.client.log_dict(parent_run_id, ensemble, "ensemble.json")
        now = now_ms()
        code = {"better": 1.0, "worse": -1.0}
        values = {
            "ensemble_cv_score": ensemble["oof_score"],
            "ensemble_cv_score_se": ensemble["oof_se"],
            "ensemble_honest_score": ensemble["honest_score"],
            "ensemble_estimate": ensemble["estimate"],
            "ensemble_diff_vs_reference": ensemble["diff_vs_reference"],
            "ensemble_verdict_vs_reference": code.get(ensemble["verdict_vs_reference"] or "", 0.0),
        }
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]
        members = " ".join(f"t{t}:{w:.3f}" for t, w in zip(ensemble["trials"], ensemble["weights"]))
        self.client.log_batch(parent_run_id, metrics=metrics, tags=[RunTag("losstune.ensemble", members)])

    def _upload_summary_files(
        self, parent_run_id: str, table: pandas.DataFrame, study: optuna.Study | None, notes: list[str] | None
    ) -> None:
        """The results table (JSON and CSV), Optuna's plots and the plan's choices, uploaded in one call."""
        with tempfile.TemporaryDirectory(prefix="losstune-study-") as tmp:
            directory = Path(tmp)
            # mlflow.log_table / MlflowClient.log_table *append* to an existing table file, which would repeat
            # every trial on each summary; the same JSON (orient="split", as log_table writes it) is written
            # here and uploaded, replacing the previous one
            shown = table_for_people(table)  # an unweighted alpha written "none" in both files, as in run names
            shown.to_json(directory / RESULTS_TABLE_JSON, orient="split", index=False, date_format="iso")
            shown.to_csv(directory / RESULTS_TABLE_CSV, index=False)
            if study is not None:
                from search.tracking.study_plots import write_study_plots

                write_study_plots(study, directory)
            if notes:  # what each phase chose and whether that was within noise (search.study.choices.phase_choices)
                (directory / PLAN_CHOICES_TXT).write_text("\n".join(notes) + "\n", encoding="utf-8")
            self.client.log_artifacts(parent_run_id, tmp)

    def _best_trial_tags(
        self, parent_run_id: str, table: pandas.DataFrame, complete: pandas.Series[bool]
    ) -> list[RunTag]:
        """The best trial named on the parent run: tags ``losstune.best_trial`` and ``losstune.best_run_id``,
        and the run's description (``mlflow.note.content``) with a link to it; rewritten after every trial."""
        best = best_trial_row(table, complete)
        run = None
        if best is not None:
            of_best_trial = (
                f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and tags.`{TAG_TRIAL}` = '{best['trial']}'"
            )
            found = self.client.search_runs([self.experiment_id], max_results=1, filter_string=of_best_trial)
            run = found[0] if found else None
        note = parent_note(self.experiment_id, table, complete, best, run)
        tags = [RunTag("mlflow.note.content", note)]
        if best is not None:
            tags.append(RunTag(TAG_BEST_TRIAL, str(best["trial"])))
            rule = rule_of_memo(best.get("memo"))
            if rule:
                tags.append(RunTag(TAG_BEST_RULE, rule))
            if run is not None:
                tags.append(RunTag(TAG_BEST_RUN, run.info.run_id))
        if "memo" in table.columns:
            ref = table[table["memo"].astype(str).str.contains("reference", regex=False)]
            if len(ref):
                tags.append(RunTag(TAG_REFERENCE_TRIAL, str(int(ref.iloc[0]["trial"]))))
        return tags

    # --------------------------------------------------------------------------------------------- helpers
