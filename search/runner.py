"""``losstune search``: spend this week's budget on the phased plan, one trial at a time, every trial in MLflow.

One worker's loop, top to bottom: find where the plan stands from the stored trials; reserve a budget slot (and,
for a grid point, claim it); ask Optuna for a trial with the step's parameters fixed or sampled; evaluate it
while beating a heartbeat; log it to MLflow; tell Optuna. Several workers (processes here, or machines on one
PostgreSQL) run the same loop; the ledger and the claims keep them from overspending or duplicating.

A trial never stays RUNNING for good: a diverging loss, Ctrl-C (or SIGTERM) and errors mark it FAIL with the reason
(see :meth:`Worker.run_trial`); a worker killed outright stops beating its heartbeat, and every run (and every
worker before each trial) fails such stale trials and closes their MLflow runs (:meth:`StudySession.reconcile_stale`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import optuna
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.samplers import PartialFixedSampler, RandomSampler, TPESampler
from optuna.trial import TrialState
from pydantic import ValidationError

from objectives.config import LossConfig, TrialConfig
from objectives.data import Dataset, check_folds, load_dataset
from objectives.errors import LosstuneError, TrainingDiverged
from objectives.evaluate import EvaluationResult, PreparedFolds, evaluate, prepare_folds
from search.budget import BudgetLedger, iso_week, worker_id
from search.plan import Step, Wait, distribution_bounds, next_step
from search.results import results_table, trial_records
from search.storage import (
    adopt_silent_trials, check_directory_target, check_sqlite_target, heartbeat, init_lock, open_engine,
    open_optuna_storage, quiet_optuna, redact, require_existing_study_file,
)  # fmt: skip
from search.study_file import LOSS_PARAMS, StudyFile, load_study_file
from search.tracking import TAG_TRIAL, StudyTracker

log = logging.getLogger(__name__)

TPE_STARTUP_TRIALS = 2  # TPE's default of 10 random trials would spend a whole week's budget at random
WAIT_POLL_SECONDS = 2.0  # a worker waiting for another's trial (the next phase needs it) looks again this often
CLAIM_RETRY_SECONDS = 0.2
WORKER_STOP_SECONDS = 120.0  # after Ctrl-C, how long a worker process may take to mark its trial
STALE_REASON = "worker stopped without finishing the trial (no heartbeat): retried"
EXIT_INTERRUPTED = 130
EXIT_ERROR = 2


@dataclass(frozen=True)
class SearchOptions:
    budget: int | None = None  # this week's budget, instead of budget.trials_per_week
    workers: int = 1
    timeout: float | None = None  # seconds; no new trial starts after it
    allow_data_change: bool = False
    progress: bool = True


class StudySession:
    """A study file opened for work: its data, Optuna study, budget ledger and MLflow tracker.

    Everything that can be checked without writing is checked first: the study file, the data and its folds, that
    the storage (and, for a search, the MLflow store and artifact directory) can be reached or created. Bad input
    therefore fails before anything is written; only then are the study and the ledger created or opened, under
    :func:`~search.storage.init_lock` so that workers started at once do not create them twice."""

    def __init__(
        self, study_path: Path, *, allow_data_change: bool = False, with_data: bool = True, create: bool = True
    ) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.path = Path(study_path)
        self.file: StudyFile = load_study_file(self.path)
        self.dataset: Dataset | None = None
        if with_data:
            self.dataset = load_dataset(self.file.data_spec)
            check_folds(self.dataset, self.file.cv.folds)
        self.url = self.file.storage_url  # may hold a password: never shown, see storage_display
        self.storage_display = redact(self.url)
        check_sqlite_target(self.url, "storage")
        if not create:
            require_existing_study_file(self.url, self.file.name)
        if with_data:  # a search: it will write to MLflow too
            check_sqlite_target(self.file.tracking_uri, "the MLflow tracking store")
            check_directory_target(Path(unquote(urlparse(self.file.artifact_location).path)), "the MLflow artifact directory")
        with init_lock(self.url):
            self.storage = open_optuna_storage(self.url)
            self.study = _load_or_create_study(self.file.name, self.storage, create)
            self.ledger = BudgetLedger(open_engine(self.url), self.file.name)
            if self.dataset is not None:
                self._check_fingerprint(allow_data_change)
        self.phases = self.file.phases
        self.bounds = distribution_bounds(self.phases)
        self._prepared: PreparedFolds | None = None

    @property
    def prepared(self) -> PreparedFolds:
        """Folds and their preprocessing, made once per process: every trial of the study shares them."""
        if self._prepared is None:
            self._prepared = prepare_folds(self.dataset, self.file.cv)
        return self._prepared

    def _check_fingerprint(self, allow_change: bool) -> None:
        recorded = self.study.user_attrs.get("data_fingerprint")
        current = self.dataset.fingerprint
        if recorded is None:
            self.study.set_user_attr("data_fingerprint", current)
        elif recorded != current:
            if not allow_change:
                raise LosstuneError(
                    f"{self.file.data_spec.path.name} changed since this study started (fingerprint {current}, "
                    f"study has {recorded}): trials on different data are not comparable. Start a new study "
                    "(another name:), or pass --allow-data-change to continue and tag the following trials"
                )
            log.warning("data changed (%s -> %s): continuing, following trials are tagged", recorded, current)
            history = list(self.study.user_attrs.get("data_fingerprint_history", [recorded]))
            self.study.set_user_attr("data_fingerprint_history", [*history, current])
            self.study.set_user_attr("data_fingerprint", current)

    def tracker(self) -> StudyTracker:
        return StudyTracker(self.file.tracking_uri, self.file.experiment, artifact_location=self.file.artifact_location)

    def budget_for_week(self, override: int | None) -> int:
        return self.file.budget.trials_per_week if override is None else override

    def reconcile_stale(self, tracker: StudyTracker | None) -> int:
        """Trials of dead workers: FAIL them in Optuna (no heartbeat for the grace period) and close their
        MLflow runs. Returns how many MLflow runs were closed."""
        with quiet_optuna():
            adopt_silent_trials(self.storage, self.study._study_id)
            optuna.storages.fail_stale_trials(self.study)
        if tracker is None:
            return 0
        return close_orphan_runs(self.study, tracker)


def _load_or_create_study(name: str, storage, create: bool = True) -> optuna.Study:
    """Load the study; create it only when it does not exist yet (loading first writes nothing)."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        if not create:
            raise LosstuneError(f"study {name!r} is not in its storage yet: run `losstune search` first") from None
        return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)


def close_orphan_runs(study: optuna.Study, tracker: StudyTracker) -> int:
    """Close the MLflow runs left RUNNING by workers that died: the run of a FAIL trial ends FAILED (with the
    trial's reason, or that its worker stopped), the run of a COMPLETE trial (killed after telling Optuna, its
    metrics already logged) ends FINISHED. A run is matched to its trial by the trial's ``mlflow_run_id``, or,
    for a worker killed before recording that, by the run's trial number under this study's parent run."""
    trials = study.get_trials(deepcopy=False)
    linked = {t.user_attrs["mlflow_run_id"]: t for t in trials if "mlflow_run_id" in t.user_attrs}
    by_number = {t.number: t for t in trials}
    parent = study.user_attrs.get("mlflow_parent_run_id")
    closed = 0
    for run in tracker.running_runs():
        tags = run.data.tags
        trial = linked.get(run.info.run_id)
        if trial is None and parent and tags.get(MLFLOW_PARENT_RUN_ID) == parent and tags.get(TAG_TRIAL, "").isdigit():
            trial = by_number.get(int(tags[TAG_TRIAL]))
        if trial is None or trial.state not in (TrialState.FAIL, TrialState.COMPLETE):
            continue
        if trial.state == TrialState.FAIL:
            tracker.fail_trial(run.info.run_id, trial.user_attrs.get("failure_reason") or STALE_REASON)
        else:
            tracker.mark_finished(run.info.run_id)
        closed += 1
    if closed:
        log.info("closed %d MLflow run(s) left RUNNING by stopped workers", closed)
    return closed


@dataclass
class TrialOutcome:
    number: int
    phase: str
    loss: dict
    state: str
    result: EvaluationResult | None = None
    reason: str | None = None


class Worker:
    """Runs trials of one study until the week's budget, the plan or the time is used up."""

    def __init__(self, session: StudySession, options: SearchOptions, week: str, parent_run_id: str, echo) -> None:
        self.s = session
        self.options = options
        self.week = week
        self.budget = session.budget_for_week(options.budget)
        self.parent_run_id = parent_run_id
        self.tracker = session.tracker()
        self.echo = echo
        self.deadline = None if options.timeout is None else time.monotonic() + options.timeout
        self.outcomes: list[TrialOutcome] = []  # this worker's trials so far, also when it is interrupted

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def run(self, on_trial=None) -> list[TrialOutcome]:
        while not self._out_of_time():
            step = self._next_step()
            if step is None:
                break
            slot = self.s.ledger.reserve(self.week, self.budget)
            if slot is None:
                break
            if step.claim is not None and not self.s.ledger.claim(step.claim):
                self.s.ledger.release(self.week, slot)  # another worker is on this point; look again
                time.sleep(CLAIM_RETRY_SECONDS)
                continue
            outcome = self.run_trial(step, slot)
            self.outcomes.append(outcome)
            if on_trial:
                on_trial(outcome)
        return self.outcomes

    def _next_step(self) -> Step | None:
        while True:
            self.s.reconcile_stale(self.tracker)  # a dead worker's trial is failed (and retried) as soon as it is stale
            step = next_step(self.s.phases, trial_records(self.s.study))
            if not isinstance(step, Wait):
                return step
            if self._out_of_time():
                return None
            log.info("phase %s: waiting for trial(s) %s running elsewhere", step.phase.name, step.running)
            time.sleep(WAIT_POLL_SECONDS)

    def _sampler(self, step: Step, n_trials: int):
        fixed = {k: v for k, v in step.fixed.items() if v is not None}
        if step.loss is not None:
            return PartialFixedSampler(fixed_params=fixed, base_sampler=RandomSampler(seed=0))
        tpe = TPESampler(
            n_startup_trials=TPE_STARTUP_TRIALS, constant_liar=True, seed=self.s.file.cv.seed * 100_003 + n_trials
        )
        return PartialFixedSampler(fixed_params=fixed, base_sampler=tpe) if fixed else tpe

    def _suggest(self, trial: optuna.Trial, step: Step) -> dict[str, float | None]:
        loss: dict[str, float | None] = {}
        sampled = step.space or {}
        for name in LOSS_PARAMS:
            if name not in sampled and step.fixed.get(name) is None:
                loss[name] = None  # alpha=None: no class weighting, so no alpha parameter at all
                continue
            low, high = sampled.get(name, self.s.bounds[name])
            loss[name] = trial.suggest_float(name, low, high)
        return loss

    def run_trial(self, step: Step, slot: int) -> TrialOutcome:
        """One trial from ``ask`` to ``tell`` and its MLflow run. Whatever stops it, it does not stay RUNNING:

        * the loss diverges (NaN/inf): FAIL with ``failure=diverged`` (the plan does not retry it), the search
          goes on;
        * Ctrl-C: FAIL with ``failure=interrupted``, MLflow run KILLED, then the interrupt goes on up;
        * any other error: FAIL with ``failure=error``, MLflow run FAILED, then the error goes on up;
        * ``kill -9``: nothing can run, but the heartbeat stops; any later run fails the trial once it is stale.
        """
        study = self.s.study
        with quiet_optuna():
            study.sampler = self._sampler(step, len(study.get_trials(deepcopy=False)))
            trial = study.ask()
        state = _TrialProgress(trial, step)
        try:
            with heartbeat(self.s.storage, trial._trial_id):
                return self._run_asked(state, slot)
        except BaseException as exc:
            if not state.told:
                try:
                    with _sigint_ignored():  # a second Ctrl-C must not leave the trial half-marked
                        if isinstance(exc, KeyboardInterrupt):
                            self._fail(state, "interrupted", "interrupted (Ctrl-C)", status="KILLED")
                        else:
                            self._fail(state, "error", f"{type(exc).__name__}: {exc}")
                except Exception:  # noqa: BLE001 - the store itself may be what failed; the trial goes stale
                    log.warning("could not mark trial %d FAILED; it is failed once its heartbeat is stale", trial.number)
            raise

    def _run_asked(self, state: "_TrialProgress", slot: int) -> TrialOutcome:
        study, trial, step = self.s.study, state.trial, state.step
        self.s.ledger.attach(self.week, slot, trial.number, claim=step.claim)
        with quiet_optuna():
            state.loss = self._suggest(trial, step)
        attrs = {
            "phase": step.phase.name, "phase_index": step.phase_index, "week": self.week, "loss": state.loss,
            "slot": slot, "worker": worker_id(), "data_fingerprint": self.s.dataset.fingerprint,
        }  # fmt: skip
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        try:
            config = self.s.file.trial_config(LossConfig(**state.loss))
        except ValidationError as exc:
            reason = f"invalid configuration: {exc.errors()[0]['msg'].removeprefix('Value error, ')}"
            return self._fail(state, "invalid", reason)

        state.run_id = self.tracker.start_trial(
            self.parent_run_id, trial.number, step.phase.name, self.week, config, self.s.dataset.fingerprint,
            extra_tags=self._data_change_tags(),
        )  # fmt: skip
        trial.set_user_attr("mlflow_run_id", state.run_id)
        try:
            result = evaluate(self.s.dataset, config, self.s.prepared)
        except TrainingDiverged as exc:
            return self._fail(state, "diverged", str(exc))
        for key, value in {"honest_score": result.honest_score_mean, "threshold": result.threshold,
                           "seconds": result.seconds, "honest_score_std": result.honest_score_std}.items():
            trial.set_user_attr(key, value)
        # MLflow first, then Optuna, then the run's final status: see StudyTracker.log_trial_result
        self.tracker.log_trial_result(state.run_id, result, self.s.dataset, config)
        study.tell(trial, result.oof_score)
        state.told = True
        self.tracker.mark_finished(state.run_id)
        self.tracker.log_study_summary(self.parent_run_id, results_table(study), study)
        return TrialOutcome(trial.number, step.phase.name, state.loss, "COMPLETE", result=result)

    def _fail(self, state: "_TrialProgress", kind: str, reason: str, status: str = "FAILED") -> TrialOutcome:
        trial = state.trial
        trial.set_user_attr("failure", kind)
        trial.set_user_attr("failure_reason", reason)
        self.s.study.tell(trial, state=TrialState.FAIL)
        state.told = True
        if state.run_id is not None:
            self.tracker.fail_trial(state.run_id, reason, status=status)
        self.tracker.log_study_summary(self.parent_run_id, results_table(self.s.study), self.s.study)
        return TrialOutcome(trial.number, state.step.phase.name, state.loss, "FAIL", reason=reason)

    def _data_change_tags(self) -> dict[str, str]:
        history = self.s.study.user_attrs.get("data_fingerprint_history")
        return {"losstune.data_changed": "true", "losstune.data_previous": history[-2]} if history else {}


@dataclass
class _TrialProgress:
    """How far one trial got: what its failure handler needs to mark it."""

    trial: optuna.Trial
    step: Step
    loss: dict = field(default_factory=dict)
    run_id: str | None = None
    told: bool = False


@contextmanager
def _sigint_ignored():
    """Ignore Ctrl-C for the block (main thread only: elsewhere signals cannot be changed, nor delivered)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def format_outcome(o: TrialOutcome, metric: str) -> str:
    params = " ".join(f"{k}={'None' if v is None else f'{v:.3g}'}" for k, v in o.loss.items())
    if o.result is None:
        return f"t{o.number:03d} {o.phase:<8} {params}  FAILED: {o.reason}"
    r = o.result
    return (
        f"t{o.number:03d} {o.phase:<8} {params}  {metric} {r.oof_score:.4f} "
        f"(honest {r.honest_score_mean:.4f})  threshold {r.threshold:.3f}  {r.seconds:.1f}s"
    )


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
        parent = tracker.ensure_parent_run(session.file.name, session.study.user_attrs.get("mlflow_parent_run_id"))
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
        with _sigint_ignored():
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
        with _sigint_ignored():
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
        echo(f"best: trial {best.number} ({best.phase}) " + " ".join(f"{k}={v}" for k, v in best.loss.items())
             + f"  score {best.value:.4f}")  # fmt: skip
    step = next_step(session.phases, records)
    phase = "complete" if step is None else step.phase.name
    echo(f"budget {session.ledger.spent(week)}/{budget} used in {week}; plan phase: {phase}")
    echo(f"compare trials: {tracker.ui_command()}")
