"""``losstune search``: spend this week's budget on the phased plan, every trial in MLflow.

This module starts the work: it opens the study (:mod:`search.run.session`), runs one
:class:`~search.run.worker.Worker` in this process or ``--workers N`` worker processes (:mod:`search.run.processes`)
under :func:`~search.formats.interrupts.stop_signals_as_interrupt` (Ctrl-C and SIGTERM as a clean stop), and prints
the summary. Several workers (processes here, or machines on one PostgreSQL) run the same loop; the budget ledger
and the grid claims keep them from overspending or duplicating.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from search.formats.interrupts import stop_signals_as_interrupt, stop_signals_held
from search.run.budget import iso_week, worker_id
from search.run.heartbeats import grace_seconds
from search.run.options import SearchOptions
from search.run.processes import run_workers
from search.run.session import StudySession
from search.run.storage import init_lock, storage_fault
from search.study.plan import plan_step
from search.study.results import plan_trials
from search.study.study_record import read_study, write_study
from search.study.trial_record import read_trial
from search.tracking.run_params import study_params

if TYPE_CHECKING:
    from search.run.trial_outcome import TrialOutcome
    from search.study.study_ensemble import StudyEnsemble
    from search.tracking.tracker import StudyTracker

# Imported when a trial is about to run, not before: the worker brings torch, the tracker MLflow. A week whose
# budget is spent needs neither (unless a dead worker left runs to repair).

log = logging.getLogger(__name__)

Echo = Callable[[str], None]  # where the run's lines go: print, or a test's list


@dataclass(frozen=True)
class _ThisRun:
    """A search run once the study's MLflow parent run is open for it: what its workers and reports need."""

    session: StudySession
    tracker: StudyTracker
    week: str
    budget: int
    spent: int  # of the week's budget, when this run started
    parent: str  # the MLflow parent run's id


def run_search(study_path: Path, options: SearchOptions, echo: Echo = print) -> int:
    grace_seconds()  # the environment's intervals (and that the grace is the longer) before any store is made
    week = iso_week()
    if _budget_spent(study_path, options, week, echo):
        return 0
    echo("opening the study's data and its MLflow store...")
    session = StudySession(study_path, allow_data_change=options.allow_data_change)
    run = _open_parent_run(session, options, week, echo)
    if run is None:
        return 0
    echo(
        f"study {session.file.name}: {session.dataset.n_rows} rows, week {week}, budget {run.spent}/{run.budget} "
        f"used, storage {session.storage_display}"
    )
    from search.study.baseline_record import report_study_baseline

    echo(report_study_baseline(session, run.tracker, run.parent))  # once per study: no budget slot
    ensemble = _work(study_path, options, run, echo)
    report_study_baseline(session, run.tracker, run.parent)  # beside the best trial on the parent run; its line
    _print_summary(session, run.tracker, week, run.budget, ensemble, echo)  # is in the summary, as status has it
    from search.tracking.study_report import REPORT_HTML, log_report

    log_report(session.file, session.study, run.tracker.client, run.parent)
    echo(f"report: {REPORT_HTML} on the study's parent run (or: losstune report {study_path} -o {REPORT_HTML})")
    return 0


def _open_parent_run(session: StudySession, options: SearchOptions, week: str, echo: Echo) -> _ThisRun | None:
    """The study's MLflow parent run, open (RUNNING) for this run once what dead workers left is repaired; None,
    and said, when there is nothing to run (the budget spent by another machine since the first look, or the plan
    complete)."""
    budget = session.budget_for_week(options.budget)
    with init_lock(session.url):  # one parent run, even when several workers start at once on a new study
        tracker = session.tracker()
        stale = session.reconcile_stale(tracker)
        if stale:
            echo(f"closed {stale} MLflow run(s) left RUNNING by stopped workers")
        spent = session.ledger.spent(week)
        if spent >= budget:  # spent by another machine since the first look
            _close_abandoned_parent(session, tracker, echo)
            echo(f"budget for {week} spent: {spent}/{budget}{_budget_override(session, budget)}")
            return None
        if plan_step(session.file, plan_trials(session.study)) is None:
            _close_abandoned_parent(session, tracker, echo)
            echo("the plan is complete: every phase has run (add a phase, or a tpe phase without 'trials')")
            return None
        parent = tracker.ensure_parent_run(
            session.file.name,
            read_study(session.study).mlflow_parent_run_id,
            params=study_params(session.file, session.storage_display),
        )
        write_study(session.study, mlflow_parent_run_id=parent, mlflow_parent_open=True)
    return _ThisRun(session, tracker, week, budget, spent, parent)


def _work(study_path: Path, options: SearchOptions, run: _ThisRun, echo: Echo) -> StudyEnsemble | None:
    """The week's trials, in this process or in ``--workers`` processes, then the week's ensemble (returned);
    the parent run then ends FINISHED, KILLED (Ctrl-C, SIGTERM: what was done is reported) or FAILED."""
    session = run.session
    metric = session.file.trial_config().metric.label
    first_trial = len(session.study.get_trials(deepcopy=False))
    workers: set[str] = set()  # the worker ids of this run, for the report after an interrupt
    status = "FAILED"
    ensemble = None
    try:
        with stop_signals_as_interrupt():
            if options.workers <= 1:
                workers.add(worker_id())
                _run_in_process(session, options, run.week, run.parent, run.budget - run.spent, metric, echo)
            else:
                run_workers(study_path, options, run.week, run.parent, workers)
            ensemble = _log_ensemble(run)
        status = "FINISHED"
    except Exception as exc:  # a full disk, a read-only directory: one line, not a traceback
        fault = storage_fault(exc)
        if fault is None:
            raise
        raise fault from exc
    except KeyboardInterrupt:
        status = "KILLED"
        with stop_signals_held():
            _print_interrupted(session, run.week, run.budget, first_trial, workers, echo)
        raise
    finally:
        try:
            run.tracker.set_parent_finished(run.parent, status)
            write_study(session.study, mlflow_parent_open=False)
        except Exception:
            # the study still records its parent run as open: the next search closes it
            log.info("could not set the MLflow parent run %s to %s", run.parent, status)
    return ensemble


def _log_ensemble(run: _ThisRun) -> StudyEnsemble | None:
    """The week's trials as one model, once the trials are trained (never during training): selected from their
    stored OOF probabilities, kept beside the study, shown as a row of the parent run's results table; returned
    for the closing summary, which shows this one (not one kept later by another machine, nor none when it could
    not be kept)."""
    import pandas as pd

    from search.study.choices import phase_choices
    from search.study.results import results_table
    from search.study.study_ensemble import ensemble_row, study_ensemble

    study, file = run.session.study, run.session.file
    records = plan_trials(study)
    found = study_ensemble(records, file)  # the kept one while no trial was added since
    if found is None:
        return None
    table = pd.concat([results_table(study), pd.DataFrame([ensemble_row(found)])], ignore_index=True)
    notes = phase_choices(run.session.phases, records, file.reference_loss)
    run.tracker.log_study_summary(run.parent, table, study, notes=notes)
    run.tracker.log_ensemble(run.parent, found.to_dict())
    return found


def _budget_spent(study_path: Path, options: SearchOptions, week: str, echo: Echo) -> bool:
    """True (and said) when the study exists and this week's budget is spent. Only the study file and the study's
    database are read: no data, no torch, and MLflow only to repair what a dead worker left (its trial's run and
    the study's parent run, left RUNNING when a worker is killed during the week's last trial)."""
    session = StudySession.existing(study_path)
    if session is None:
        from search.study.study_file import load_study_file

        file = load_study_file(study_path)
        budget = file.budget.trials_per_week if options.budget is None else options.budget
        if budget == 0:  # nothing to run: no study, no database, no MLflow store is created for it
            echo(f"budget for {week} is 0: nothing to run (study {file.name!r} not created)")
            return True
        return False
    try:
        budget = session.budget_for_week(options.budget)
        spent = session.ledger.spent(week)
        if spent < budget:
            return False
        with init_lock(session.url):
            closed = session.reconcile_stale(None)
            if closed:
                echo(f"closed {closed} MLflow run(s) left RUNNING by stopped workers")
            _close_abandoned_parent(session, None, echo)
        echo(f"budget for {week} spent: {spent}/{budget}{_budget_override(session, budget)}")
        return True
    finally:
        session.close()


def _close_abandoned_parent(session: StudySession, tracker: StudyTracker | None, echo: Echo) -> None:
    if session.close_abandoned_parent(tracker):
        echo("closed the study's MLflow parent run, left RUNNING by a stopped search")


def _run_in_process(
    session: StudySession, options: SearchOptions, week: str, parent: str, remaining: int, metric: str, echo: Echo
) -> None:
    from tqdm import tqdm

    from search.run.trial_outcome import format_outcome
    from search.run.worker import Worker

    worker = Worker(session, options, week, parent, echo)
    with tqdm(total=remaining, unit="trial", disable=not options.progress, file=sys.stderr, leave=False) as bar:

        def on_trial(o: TrialOutcome) -> None:
            bar.update(1)
            if options.progress:
                bar.write(format_outcome(o, metric))  # above the bar
            else:
                echo(format_outcome(o, metric))

        try:
            worker.run(on_trial=on_trial)
        except KeyboardInterrupt:
            bar.close()
            raise


def _print_interrupted(
    session: StudySession, week: str, budget: int, first_trial: int, workers: set[str], echo: Echo
) -> None:
    """What an interrupted run did: its trials (complete, failed, interrupted) and the budget used."""
    from optuna.trial import TrialState

    try:
        mine = [
            (t, record)
            for t in session.study.get_trials(deepcopy=False)
            if t.number >= first_trial and (record := read_trial(t)).worker in workers
        ]
        complete = sum(1 for t, _ in mine if t.state == TrialState.COMPLETE)
        stopped = [t.number for t, record in mine if record.failure == "interrupted"]
        failed = sum(1 for t, _ in mine if t.state == TrialState.FAIL) - len(stopped)
        where = _budget_used(session, week, budget)
    except Exception:
        echo("interrupted")
        return
    marked = (
        f"trial(s) {', '.join(map(str, stopped))} marked FAILED (interrupted) and will be retried"
        if stopped
        else "no trial was running"
    )
    echo(f"interrupted: {complete} trial(s) complete and {failed} failed in this run; {marked}; {where}")


def _budget_used(session: StudySession, week: str, budget: int) -> str:
    return f"budget {session.ledger.spent(week)}/{budget} used in {week}{_budget_override(session, budget)}"


def _budget_override(session: StudySession, budget: int) -> str:
    """`` (--budget N; ...)`` when ``--budget`` replaced the study file's: ``status`` and the next ``search`` go by
    the study file's again, and would otherwise seem to disagree with this run's lines."""
    own = session.file.budget.trials_per_week
    return "" if budget == own else f" (--budget {budget}; the study file's trials_per_week is {own})"


def _print_summary(
    session: StudySession, tracker: StudyTracker, week: str, budget: int, ensemble: StudyEnsemble | None, echo: Echo
) -> None:
    """What the trials say, in status's own lines (search.study.week_summary), with the ensemble this search made
    and logged, then the plan's phase and the budget."""
    from search.study.week_summary import summary_lines, week_summary

    for line in summary_lines(week_summary(session.file, session.study, compute_stale=False, ensemble=ensemble)):
        echo(line)
    records = plan_trials(session.study)
    step = plan_step(session.file, records)
    phase = "complete" if step is None else step.phase.name
    echo(f"{_budget_used(session, week, budget)}; plan phase: {phase}")
    echo(f"compare trials: {tracker.ui_command()}")
    echo(f"  then open {tracker.runs_url()} (the trials by score, with SE and verdict; select some, press Compare)")
