"""``losstune report STUDY.yaml -o report.html``, and the same page logged as ``report.html`` on the study's MLflow
parent run after every search: the record table with the study's choice marked (:func:`search.study.ranking.choose`,
the rule every view uses), what the trials say as ``status`` says it (:mod:`search.study.week_summary`), the plan's
choices and whether each was within noise, each trial's score with its
interval, and the best and reference trials' learning curves, precision-recall / metric-versus-threshold curves
and threshold. Everything is read from what is stored: the trials' Optuna user attrs and the files each trial
logged on its MLflow run (``learning_curves.csv``, ``threshold_curves.png``); nothing is trained again.

What it cannot show: curves a trial did not log (a run deleted, a trial from before the files existed), and
curves recomputed from OOF probabilities, which are not stored per trial (the figure each trial drew when it was
recorded is embedded instead)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from search.study.choices import phase_choices
from search.study.plan import config_key
from search.study.ranking import choose, reference_trial
from search.study.results import plan_trials, results_rows
from search.study.trial_record import read_trial
from search.study.week_summary import summary_lines, week_summary
from search.tracking.report_html import ReportData, TrialCurves, page
from search.tracking.reports import LEARNING_CURVES_CSV, MISCLASSIFIED_CSV, THRESHOLD_CURVES_PNG

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

    from search.study.study_file import StudyFile

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"  # its name on the parent run
_MISCLASSIFIED_KEYS = ("kind", "row", "fold", "y_true", "proba")


def study_report(file: StudyFile, study: optuna.Study, client: MlflowClient | None) -> str:
    """The report's HTML; ``client`` reads the trials' logged files (None: tables and score chart only)."""
    trials = study.get_trials(deepcopy=False)
    reference = file.reference_loss
    choice = choose(trials)
    ref = reference_trial(trials, config_key(reference))
    rows = results_rows(study, reference)
    by_number = {t.number: t for t in trials}
    roles: dict[int, list[str]] = {}
    for number, role in ((None if choice is None else choice.number, "best"), (ref, "reference")):
        if number is not None:
            roles.setdefault(number, []).append(role)
    curves = [_curves(client, by_number[n], " and ".join(r)) for n, r in roles.items()]
    features = _features(client, by_number[choice.number]) if choice is not None else []
    spec = file.data_spec
    data_lines = [
        ("file", str(spec.path.name)),
        ("target", spec.target),
        ("positive label", "minority class" if spec.positive is None else str(spec.positive)),
        ("dropped", ", ".join(spec.drop) or "none"),
        ("features (as the best trial read them)", ", ".join(features) or "not stored"),
    ]
    data = ReportData(
        study=file.name,
        metric=f"metric {file.trial_config().metric.label}, {file.cv.folds} folds, CV seed {file.cv.seed}",
        generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        rows=rows,
        best=None if choice is None else choice.number,
        best_rule=None if choice is None else choice.rule,
        best_why=None if choice is None else choice.why,
        reference=ref,
        choices=phase_choices(file.phases, plan_trials(study), reference),
        curves=curves,
        data_lines=data_lines,
        summary=summary_lines(week_summary(file, study, compute_stale=False)),
    )
    return page(data)


def _download(client: MlflowClient | None, run_id: str | None, name: str) -> bytes | None:
    """A file the trial logged on its run, or None (no client, no run, not logged)."""
    if client is None or not run_id:
        return None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bar per small file
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory(prefix="losstune-report-") as tmp:
            return Path(client.download_artifacts(run_id, name, tmp)).read_bytes()
    except (MlflowException, FileNotFoundError) as exc:
        # a deleted run, or a file the trial never logged: the report says it is not stored
        log.info("no %s on run %s: %s", name, run_id, exc)
        return None


def _curves(client: MlflowClient | None, trial: optuna.trial.FrozenTrial, role: str) -> TrialCurves:
    record = read_trial(trial)
    run_id = record.mlflow_run_id
    out = TrialCurves(number=trial.number, role=role, threshold=record.threshold)
    raw = _download(client, run_id, LEARNING_CURVES_CSV)
    if raw:
        sums: dict[int, list[float]] = {}
        for row in csv.DictReader(io.StringIO(raw.decode("utf-8"))):
            acc = sums.setdefault(int(row["epoch"]), [0.0, 0.0, 0.0])
            acc[0] += float(row["train_loss"])
            acc[1] += float(row["val_loss"])
            acc[2] += 1
        out.epochs = sorted(sums)
        out.train_loss = [sums[e][0] / sums[e][2] for e in out.epochs]
        out.val_loss = [sums[e][1] / sums[e][2] for e in out.epochs]
    out.threshold_png = _download(client, run_id, THRESHOLD_CURVES_PNG)
    return out


def _features(client: MlflowClient | None, trial: optuna.trial.FrozenTrial) -> list[str]:
    """The feature columns, from the header of the file of misclassified rows the trial logged."""
    raw = _download(client, read_trial(trial).mlflow_run_id, MISCLASSIFIED_CSV)
    if not raw:
        return []
    header = next(csv.reader(io.StringIO(raw.decode("utf-8-sig"))), [])
    return [h.removesuffix(" (feature)") for h in header if h not in _MISCLASSIFIED_KEYS]


def write_report(study_path: Path, out: Path) -> Path:
    """``losstune report``: the study opened read-only, the page written to ``out``."""
    from search.model.export_trial import load_study
    from search.study.study_file import load_study_file
    from search.tracking.mlflow_locations import check_tracking_reachable
    from search.tracking.tracker import StudyTracker

    file = load_study_file(study_path)
    study = load_study(file)
    check_tracking_reachable(file.tracking_uri)
    tracker = StudyTracker(file.tracking_uri, file.experiment, artifact_location=file.artifact_location)
    text = study_report(file, study, tracker.client)
    out.write_text(text, encoding="utf-8")
    return out


def log_report(file: StudyFile, study: optuna.Study, client: MlflowClient, parent_run_id: str) -> None:
    """The report as ``report.html`` on the study's parent run (replaced each time)."""
    with tempfile.TemporaryDirectory(prefix="losstune-report-") as tmp:
        path = Path(tmp) / REPORT_HTML
        path.write_text(study_report(file, study, client), encoding="utf-8")
        client.log_artifact(parent_run_id, str(path))
