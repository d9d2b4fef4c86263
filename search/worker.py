"""One worker's loop, top to bottom: find where the plan stands from the stored trials; reserve a budget slot
(and, for a grid point, claim it); ask Optuna for a trial with the step's parameters fixed or sampled; evaluate
it while beating a heartbeat; log it to MLflow; tell Optuna.

A trial never stays RUNNING for good: a diverging loss, Ctrl-C (or SIGTERM) and errors mark it FAIL with the
reason (see :meth:`Worker.run_trial`); a worker killed outright stops beating its heartbeat, and every worker
fails such stale trials before each trial (:meth:`~search.session.StudySession.reconcile_stale`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import optuna
from optuna.samplers import PartialFixedSampler, RandomSampler, TPESampler
from optuna.trial import TrialState
from pydantic import ValidationError

from objectives.config import LossConfig
from objectives.errors import TrainingDiverged
from objectives.evaluate import EvaluationResult, evaluate
from search.budget import worker_id
from search.plan import Step, Wait, next_step
from search.results import results_table, trial_records
from search.storage import (
    heartbeat, quiet_optuna,
)  # fmt: skip
from search.study_file import LOSS_PARAMS

from search.session import StudySession

log = logging.getLogger(__name__)

TPE_STARTUP_TRIALS = 2  # TPE's default of 10 random trials would spend a whole week's budget at random
WAIT_POLL_SECONDS = 2.0  # a worker waiting for another's trial (the next phase needs it) looks again this often
CLAIM_RETRY_SECONDS = 0.2


@dataclass(frozen=True)
class SearchOptions:
    budget: int | None = None  # this week's budget, instead of budget.trials_per_week
    workers: int = 1
    timeout: float | None = None  # seconds; no new trial starts after it
    allow_data_change: bool = False
    progress: bool = True


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
                    with sigint_ignored():  # a second Ctrl-C must not leave the trial half-marked
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
def sigint_ignored():
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
    params = " ".join(f"{k}={'none' if v is None else f'{v:.3g}'}" for k, v in o.loss.items())  # as run names
    if o.result is None:
        return f"t{o.number:03d} {o.phase:<8} {params}  FAILED: {o.reason}"
    r = o.result
    return (
        f"t{o.number:03d} {o.phase:<8} {params}  {metric} {r.oof_score:.4f} "
        f"(honest {r.honest_score_mean:.4f})  threshold {r.threshold:.3f}  {r.seconds:.1f}s"
    )
