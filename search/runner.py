"""``losstune search``: spend this week's budget on the phased plan, every trial in MLflow.

This module starts the work: it opens the study (:mod:`search.session`), runs one :class:`~search.worker.Worker`
in this process or ``--workers N`` worker processes, turns Ctrl-C and SIGTERM into a clean stop, and prints the
summary. Several workers (processes here, or machines on one PostgreSQL) run the same loop; the budget ledger and
the grid claims keep them from overspending or duplicating.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from optuna.trial import TrialState

from objectives.errors import LosstuneError
from search.budget import iso_week, worker_id
from search.plan import next_step
from search.results import trial_records
from search.storage import (
    init_lock,
)  # fmt: skip
from search.tracking import StudyTracker
from search.run_params import UNWEIGHTED, study_params

from search.session import StudySession
from search.worker import SearchOptions, TrialOutcome, Worker, format_outcome, sigint_ignored

log = logging.getLogger(__name__)

WORKER_STOP_SECONDS = 120.0  # after Ctrl-C, how long a worker process may take to mark its trial
EXIT_INTERRUPTED = 130
EXIT_ERROR = 2


def _raise_interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _sigterm_as_interrupt():
    """``kill PID`` (SIGTERM) stops a search like Ctrl-C: the current trial is marked, nothing is left RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _share_cores(workers: int) -> None:
    """Give each of ``workers`` processes its share of this machine's cores for torch's intra-op threads: left
    alone, every worker starts one thread per core, and spinning threads on oversubscribed cores slow all workers
    several times over. An explicit ``OMP_NUM_THREADS`` is respected."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _worker_process(study_path: str, options: SearchOptions, week: str, parent_run_id: str) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent forwards it once, as SIGTERM, so that a
    # second signal cannot interrupt a worker while it marks its trial
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _share_cores(options.workers)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        session = StudySession(Path(study_path), allow_data_change=options.allow_data_change)
        worker = Worker(session, options, week, parent_run_id, echo=print)
        metric = session.file.trial_config().metric.label
        worker.run(on_trial=lambda o: print(format_outcome(o, metric), flush=True))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except LosstuneError as exc:
        print(f"losstune search: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_ERROR)


def run_search(study_path: Path, options: SearchOptions, echo=print) -> int:
    session = StudySession(study_path, allow_data_change=options.allow_data_change)
    week = iso_week()
    budget = session.budget_for_week(options.budget)
    with init_lock(session.url):  # one parent run, even when several workers start at once on a new study
        tracker = session.tracker()
        stale = session.reconcile_stale(tracker)
        if stale:
            echo(f"closed {stale} MLflow run(s) left RUNNING by stopped workers")
        spent = session.ledger.spent(week)
        if spent >= budget:
            echo(f"budget for {week} spent: {spent}/{budget}")
            return 0
        if next_step(session.phases, trial_records(session.study)) is None:
            echo("the plan is complete: every phase has run (add a phase, or a tpe phase without 'trials')")
            return 0
        parent = tracker.ensure_parent_run(session.file.name, session.study.user_attrs.get("mlflow_parent_run_id"),
                                           params=study_params(session.file, session.storage_display))
        session.study.set_user_attr("mlflow_parent_run_id", parent)
    metric = session.file.trial_config().metric.label
    echo(f"study {session.file.name}: {session.dataset.n_rows} rows, week {week}, budget {spent}/{budget} used, "
         f"storage {session.storage_display}")  # fmt: skip
    first_trial = len(session.study.get_trials(deepcopy=False))
    workers: set[str] = set()  # the worker ids of this run, for the report after an interrupt
    status = "FAILED"
    try:
        with _sigterm_as_interrupt():
            if options.workers <= 1:
                workers.add(worker_id())
                _run_in_process(session, options, week, parent, budget - spent, metric, echo)
            else:
                _run_workers(study_path, options, week, parent, workers)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        with sigint_ignored():
            _print_interrupted(session, week, budget, first_trial, workers, echo)
        raise
    finally:
        try:
            tracker.set_parent_finished(parent, status)
        except Exception:  # noqa: BLE001 - do not hide the error that got us here
            log.warning("could not set the MLflow parent run %s to %s", parent, status)
    _print_summary(session, tracker, week, budget, echo)
    return 0


def _run_in_process(session, options, week, parent, remaining, metric, echo) -> None:
    from tqdm import tqdm

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


def _run_workers(study_path: Path, options: SearchOptions, week: str, parent: str, worker_ids: set[str]) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_process, args=(str(study_path), options, week, parent), name=f"losstune-worker-{i}")
        for i in range(options.workers)
    ]
    for p in procs:
        p.start()
        worker_ids.add(f"{socket.gethostname()}:{p.pid}")
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        with sigint_ignored():
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)  # each marks its current trial, then stops
            for p in procs:
                p.join(WORKER_STOP_SECONDS)
                if p.is_alive():  # stuck: its trial goes stale and is failed by the next run
                    p.kill()
        raise
    codes = {p.name: p.exitcode for p in procs}
    if any(code == EXIT_INTERRUPTED for code in codes.values()):
        raise KeyboardInterrupt  # a worker was stopped (kill -TERM): report like Ctrl-C
    failed = [name for name, code in codes.items() if code != 0]
    if failed:
        raise LosstuneError(f"worker process(es) {', '.join(failed)} stopped with an error (see their output above)")


def _print_interrupted(session, week: str, budget: int, first_trial: int, workers: set[str], echo) -> None:
    """What an interrupted run did: its trials (complete, failed, interrupted) and the budget used."""
    try:
        mine = [
            t for t in session.study.get_trials(deepcopy=False)
            if t.number >= first_trial and t.user_attrs.get("worker") in workers
        ]  # fmt: skip
        complete = sum(1 for t in mine if t.state == TrialState.COMPLETE)
        stopped = [t.number for t in mine if t.user_attrs.get("failure") == "interrupted"]
        failed = sum(1 for t in mine if t.state == TrialState.FAIL) - len(stopped)
        where = f"budget {session.ledger.spent(week)}/{budget} used in {week}"
    except Exception:  # noqa: BLE001 - report what we can; the interrupt matters more
        echo("interrupted")
        return
    marked = (
        f"trial(s) {', '.join(map(str, stopped))} marked FAILED (interrupted) and will be retried"
        if stopped else "no trial was running"
    )  # fmt: skip
    echo(f"interrupted: {complete} trial(s) complete and {failed} failed in this run; {marked}; {where}")


def _print_summary(session: StudySession, tracker: StudyTracker, week: str, budget: int, echo) -> None:
    records = trial_records(session.study)
    complete = [r for r in records if r.state == "COMPLETE"]
    if complete:
        best = max(complete, key=lambda r: (r.value, -r.number))
        echo(f"best: trial {best.number} ({best.phase}) "
             + " ".join(f"{k}={UNWEIGHTED if v is None else v}" for k, v in best.loss.items())
             + f"  score {best.value:.4f}")  # fmt: skip
    step = next_step(session.phases, records)
    phase = "complete" if step is None else step.phase.name
    echo(f"budget {session.ledger.spent(week)}/{budget} used in {week}; plan phase: {phase}")
    echo(f"compare trials: {tracker.ui_command()}")
    echo(f"  then open {tracker.runs_url()} (the runs table: select the trials, press Compare)")

