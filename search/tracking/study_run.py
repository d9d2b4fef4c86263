"""What the study's parent run and experiment say in the MLflow UI: the best trial, its link, the experiment's
kind, and how to open the UI. Pure functions: :mod:`search.tracking.tracker` writes what they return."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsFloat

from search.study.loss_params import LOSS_PARAMS, UNWEIGHTED
from search.study.ranking import best

if TYPE_CHECKING:
    import pandas
    from mlflow.entities import Run

    from search.study.trial_record import StoredTrial

TAG_BEST_TRIAL = "losstune.best_trial"  # the Optuna number of the best complete trial so far
TAG_BEST_RUN = "losstune.best_run_id"  # its MLflow run
TAG_BEST_RULE = "losstune.best_rule"  # the rule that chose it (search.study.ranking.choose)
TAG_REFERENCE_TRIAL = "losstune.reference_trial"  # the study's one reference trial
BEST_MEMO = "best"  # how the results table's memo marks the study's choice: "best (by confirmed)"
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI (markdown)

# MLflow 3 opens an experiment on its GenAI overview ("No data available") unless the experiment says it holds
# model-training runs; with this tag it opens on the runs table ("Model training")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` listens unless given --host/--port

# The runs table's columns and order cannot be set by the server: the UI keeps them per browser. What it does
# read from the store is a *shared view*, an experiment tag ``mlflow.sharedViewState.<key>`` holding the view's
# JSON, applied when the page is opened with ``?viewStateShareKey=<key>`` (MLflow's "Share" button writes the
# same). This view sorts by cv_score, best first (which also lists the trials flat rather than folded under the
# parent run: the UI nests runs only when sorted by date) and shows the score, its SE, the verdict and the loss.
TAG_VERDICT = "losstune.verdict"  # on each trial run: its verdict against the study's reference, as text
SHARED_VIEW_KEY = "losstune"
SHARED_VIEW_TAG = f"mlflow.sharedViewState.{SHARED_VIEW_KEY}"
VIEW_COLUMNS = (
    # the UI groups columns as metrics, params, tags: no param here (the run name carries the loss), so that the
    # verdict and phase tags stay in view on a laptop screen
    "metrics.`cv_score`",
    "metrics.`cv_score_se`",
    "metrics.`diff_vs_reference`",
    "metrics.`diff_vs_reference_se`",
    "metrics.`honest_score`",
    "metrics.`threshold`",
    f"tags.`{TAG_VERDICT}`",
    "tags.`losstune.phase`",
)
SHARED_VIEW = json.dumps(
    {
        "searchFilter": "",
        "orderByKey": "metrics.`cv_score`",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": list(VIEW_COLUMNS),
        "runsExpanded": {},
        "viewMaximized": False,
        "runListHidden": False,
    }
)


def experiment_kind_tags(existing: dict[str, str]) -> dict[str, str]:
    """The tags that make the UI open the experiment on its runs table (unless the experiment has a kind) and
    the shared view of the trials that :func:`ui_hint`'s address opens (rewritten when it changed)."""
    tags = {} if existing.get(EXPERIMENT_KIND_TAG) else {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    if existing.get(SHARED_VIEW_TAG) != SHARED_VIEW:
        tags[SHARED_VIEW_TAG] = SHARED_VIEW
    return tags


def verdict_tag(stats: StoredTrial) -> str:
    """A trial's verdict against the study's reference as the text of :data:`TAG_VERDICT`: ``better than t000``,
    ``~same as t000``, ``worse than t000``, ``reference`` for the reference itself, ``no reference`` else."""
    verdict = stats.verdict_vs_reference
    ref = stats.study_reference_trial
    if verdict is None:
        return "reference" if stats.is_reference else "no reference"
    words = {"better": "better than", "worse": "worse than"}.get(verdict, "~same as")
    return f"{words} t{int(ref):03d}" if ref is not None else verdict


def best_trial_row(table: pandas.DataFrame, complete: pandas.Series[bool]) -> dict[str, Any] | None:
    """The study's chosen trial's row of the results table: the row its memo marks (the table is built with
    :func:`search.study.ranking.choose`, as ``losstune status`` and ``export`` choose); for a table without a memo,
    the highest ``cv_score`` (ties to the lower trial number). None before any trial completed."""
    if "trial" not in table.columns:
        return None
    if "memo" in table.columns:
        marked = table[complete & table["memo"].astype(str).str.startswith(BEST_MEMO)]
        if len(marked):
            return {str(k): v for k, v in marked.iloc[0].to_dict().items()}
        return None
    scores = table["cv_score"].astype("float64")
    eligible = complete & scores.notna()
    candidates = [(float(score), row) for score, (_, row) in zip(scores[eligible], table[eligible].iterrows())]
    top = best(candidates, score=lambda c: c[0], number=lambda c: int(c[1]["trial"]))
    return None if top is None else {str(k): v for k, v in top[1].to_dict().items()}


def rule_of_memo(memo: object) -> str | None:
    """``confirmed`` of the memo ``best (by confirmed); reference``, or None."""
    text = str(memo or "")
    head = f"{BEST_MEMO} (by "
    if not text.startswith(head):
        return None
    return text[len(head) :].split(")", 1)[0]


def _number(value: object, digits: int = 4) -> str:
    if not isinstance(value, (SupportsFloat, str)):  # None, or anything else float() refuses
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if number != number else f"{number:.{digits}f}"


def parent_note(
    experiment_id: str,
    table: pandas.DataFrame,
    complete: pandas.Series[bool],
    best: dict[str, Any] | None,
    best_run: Run | None,
) -> str:
    """The parent run's description (markdown): trials so far, the best one with a link to its run."""
    failed = int(table["state"].astype(str).eq("FAIL").sum()) if "state" in table.columns else 0
    lines = [f"**{len(table)} trial(s)**: {int(complete.sum())} complete, {failed} failed.", ""]
    if best is None:
        if not complete.any():
            lines.append("No complete trial yet.")
    else:
        loss = " ".join(
            f"{k}={UNWEIGHTED if v is None or v != v else f'{float(v):g}'}" for k, v in best.items() if k in LOSS_PARAMS
        )
        name = best_run.info.run_name if best_run is not None else f"trial {best['trial']}"
        link = f"[{name}](#/experiments/{experiment_id}/runs/{best_run.info.run_id})" if best_run else name
        rule = rule_of_memo(best.get("memo"))
        chosen = f", chosen by {rule}" if rule else ""
        lines.append(
            f"**Best trial: {link}** (trial {best['trial']}, phase {best.get('phase', '?')}{chosen}): {loss}; "
            f"cv_score {_number(best['cv_score'])}, honest_score {_number(best.get('honest_score'))}, "
            f"threshold {_number(best.get('threshold'))}."
        )
    lines += [
        "",
        f"[All trials in the runs table](#/experiments/{experiment_id}/runs); the study's results "
        "table is the artifact results_table.json of this run. Rewritten after every trial.",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class UiHint:
    command: str  # starts the MLflow UI on the study's store
    url: str  # the experiment's runs table in that UI


def mlflow_executable() -> str:
    """``mlflow`` when the one on PATH is this environment's, else the path of this environment's (e.g.
    ``.venv/bin/mlflow`` when the venv is not activated), else plain ``mlflow``."""
    ours = Path(sys.executable).parent / ("mlflow.exe" if os.name == "nt" else "mlflow")
    if not ours.exists():
        return "mlflow"
    on_path = shutil.which("mlflow")
    if on_path and Path(on_path).absolute() == ours.absolute():
        return "mlflow"
    try:
        return str(ours.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(ours.absolute())


def ui_hint(display_uri: str, experiment_id: str, redacted: bool = False) -> UiHint:
    command = f"{shlex.quote(mlflow_executable())} ui --backend-store-uri {shlex.quote(display_uri)}"
    if redacted:
        command += "  (with the password for ***)"
    # workflowType: the sidebar's "Model training" mode (MLflow 3 keeps the last mode per browser, GenAI at first)
    url = (
        f"{UI_ADDRESS}/#/experiments/{experiment_id}/runs?viewStateShareKey={SHARED_VIEW_KEY}"
        "&workflowType=machine_learning"
    )
    return UiHint(command=command, url=url)
