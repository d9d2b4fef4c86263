"""One worker's loop, top to bottom: find where the plan stands from the stored trials; take the current phase's
pending steps as a batch (every pending grid point, or a TPE phase's ``batch`` draws); for each, reserve a budget
slot, claim the grid point and ask Optuna for a trial; train the batch as one job (``evaluate_batch``) while every
trial beats its heartbeat; then hand each trial to the background recorder (:mod:`search.run.background`), which
logs it to MLflow and tells Optuna, while this thread plans and trains the next batch.

Every trial of a batch keeps its own Optuna trial, budget slot, grid claim, heartbeat (beating until it is told)
and MLflow child run. The next batch is planned from the stored trials plus the results handed over and not yet
recorded, so the plan does not wait for the recording.

A trial never stays RUNNING for good: a diverging loss fails that trial only, Ctrl-C (or SIGTERM) and errors
mark the batch's trials FAIL with the reason (see :meth:`Worker._train_batch`); a worker killed outright stops
beating its heartbeats, and every worker fails such stale trials before each batch
(:meth:`~search.run.session.StudySession.reconcile_stale`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from objectives.config import TrialConfig
from objectives.errors import TrainingDiverged
from objectives.evaluate import EvaluationResult, evaluate_batch
from search.run.background import Recorder
from search.run.heartbeats import grace_seconds, heartbeat
from search.run.interrupts import raise_if_stop_requested
from search.run.options import SearchOptions
from search.run.session import StudySession
from search.run.storage import quiet_optuna
from search.run.trial_ask import sampler_for, suggest_loss, trial_attrs
from search.run.trial_failures import fail_trial, fail_untold, stop_signals_ignored
from search.run.trial_outcome import TrialOutcome, TrialProgress
from search.study.choices import phase_choices
from search.study.loss_params import InvalidLoss
from search.study.noise import stats_metrics, trial_stats
from search.study.oof_store import oof_dir, write_trial_oof
from search.study.plan import Step, TrialRecord, Wait, pending_steps, trial_cv
from search.study.results import results_table, trial_records
from search.tracking.study_run import TAG_VERDICT, verdict_tag

__all__ = ["Worker", "stop_signals_ignored"]  # stop_signals_ignored: the runner takes it from here too

log = logging.getLogger(__name__)

WAIT_POLL_SECONDS = 2.0  # a worker waiting for another's trial (the next phase needs it) looks again this often
CLAIM_RETRY_SECONDS = 0.2
MAX_BATCH = 16  # configurations trained together at most (memory grows with them: 16 x folds models)


class Worker:
    """Runs trials of one study until the week's budget, the plan or the time is used up."""

    def __init__(
        self, session: StudySession, options: SearchOptions, week: str, parent_run_id: str, echo: Callable[[str], None]
    ) -> None:
        self.s = session
        self.options = options
        self.week = week
        self.budget = session.budget_for_week(options.budget)
        self.parent_run_id = parent_run_id
        self.tracker = session.tracker()
        self.echo = echo
        self.deadline = None if options.timeout is None else time.monotonic() + options.timeout
        self.outcomes: list[TrialOutcome] = []  # this worker's trials so far, also when it is interrupted
        self.recorder: Recorder | None = None
        self._on_trial: Callable[[TrialOutcome], None] | None = None
        session.ledger.check_in()  # as early as possible: workers started together share the first phase

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def run(self, on_trial: Callable[[TrialOutcome], None] | None = None) -> list[TrialOutcome]:
        self._on_trial = on_trial
        self.recorder = Recorder(after_batch=self._log_summary)
        try:
            while not self._out_of_time():
                self.recorder.check()
                raise_if_stop_requested()
                steps = self._next_steps()
                if steps is None:
                    break
                batch = self._start_batch(steps)
                if batch is None:
                    break  # the week's budget is spent
                if batch:
                    self._train_batch(batch)
                else:
                    time.sleep(CLAIM_RETRY_SECONDS)  # other workers hold these points; look again
        finally:
            with stop_signals_ignored():  # every trial that finished training is recorded before we stop
                self.recorder.close()
        self.recorder.check()
        self.s.ledger.check_out()  # only on a clean stop: after a fault, the check-in simply grows old
        return self.outcomes

    def _records(self) -> list:
        """The stored trials, with those handed to the recorder and not yet told as what they will be told."""
        pending = self.recorder.pending() if self.recorder else {}
        stored = trial_records(self.s.study)
        return [pending.get(r.number, r) if r.state == "RUNNING" else r for r in stored]

    def _next_steps(self) -> list[Step] | None:
        while True:
            self.s.ledger.check_in()
            self.s.reconcile_stale(self.tracker)  # a dead worker's trial is failed (and retried) as soon as it is stale
            steps = pending_steps(
                self.s.phases,
                self._records(),
                limit=MAX_BATCH,
                reference=self.s.file.reference_loss,
                study_seed=self.s.file.cv.seed,
            )
            if not isinstance(steps, Wait):
                return steps if steps is None else self._my_share(steps)
            if self._out_of_time():
                return None
            log.info("phase %s: waiting for trial(s) %s running elsewhere", steps.phase.name, steps.running)
            time.sleep(WAIT_POLL_SECONDS)

    def _my_share(self, steps: list[Step]) -> list[Step]:
        """This worker's part of a batch when other workers are looking for work too: one batch per worker
        trains faster in total than one worker training them all while the others wait for the next phase."""
        live = self.s.ledger.live_workers(window_seconds=max(grace_seconds(), 5 * WAIT_POLL_SECONDS))
        share = steps[: -(-len(steps) // live)]
        if live > 1:
            log.info("%d workers looking for work: this one takes %d of %d step(s)", live, len(share), len(steps))
        return share

    def _start_batch(self, steps: list[Step]) -> list[TrialProgress] | None:
        """For each step: a budget slot, the grid claim, an Optuna trial with its heartbeat and MLflow run.
        None when the budget is spent before the first; steps whose point another worker holds are left out.
        One step at a time (slot, claim, ask), so that a worker killed here leaves at most one slot unattached."""
        batch: list[TrialProgress] = []
        asked = 0
        try:
            for step in steps:
                slot = self.s.ledger.reserve(self.week, self.budget)
                if slot is None:
                    if asked == 0:
                        return None
                    break
                if step.claim is not None and not self.s.ledger.claim(step.claim):
                    self.s.ledger.release(self.week, slot)
                    continue
                state = self._ask(step, slot)
                asked += 1
                if state.outcome is not None:  # an invalid configuration: failed at once, nothing to train
                    self._finish(state.outcome, summary=True)
                else:
                    batch.append(state)
        except BaseException as exc:
            self._fail_untold(batch, exc)
            raise
        return batch

    def _ask(self, step: Step, slot: int) -> TrialProgress:
        """An Optuna trial for ``step``, beating its heartbeat, with its attrs (its configuration record among
        them) and its RUNNING MLflow run; a configuration LossConfig refuses is failed at once (``invalid``)."""
        study = self.s.study
        with quiet_optuna():
            study.sampler = sampler_for(step, self.s.file.cv.seed, len(study.get_trials(deepcopy=False)))
            trial = study.ask()
        state = TrialProgress(trial, step)
        state.beat = heartbeat(self.s.storage, self.s.trial_id(trial))
        state.beat.__enter__()
        try:
            self.s.ledger.attach(self.week, slot, trial.number, claim=step.claim)
            with quiet_optuna():
                state.loss = suggest_loss(trial, step, self.s.bounds)
            cv = trial_cv(self.s.file.cv, step)
            invalid = None
            try:
                state.config = self.s.file.trial_config(step.resolved_loss(state.loss), cv=cv)
            except InvalidLoss as exc:
                invalid = f"invalid configuration: {exc}"
            attrs = trial_attrs(step, self.week, slot, self.s.dataset.fingerprint, state.loss, cv, state.config)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            if invalid is not None:
                self._fail(state, "invalid", invalid)
                return state
            config = state.config
            assert config is not None  # set above, or the trial failed as invalid and returned
            state.run_id = self.tracker.start_trial(
                self.parent_run_id,
                trial.number,
                step.phase.name,
                self.week,
                config,
                self.s.dataset.fingerprint,
                extra_tags=self._data_change_tags(),
            )
            trial.set_user_attr("mlflow_run_id", state.run_id)
        except BaseException as exc:
            self._fail_untold([state], exc)
            raise
        return state

    def _train_batch(self, batch: list[TrialProgress]) -> None:
        """Train the batch as one job, then hand each trial to the recorder. Whatever stops the training, no
        trial of the batch stays RUNNING:

        * a configuration's loss diverges (NaN/inf): that trial FAIL with ``failure=diverged`` (the plan does not
          retry it); the others are recorded as usual;
        * Ctrl-C: every trial FAIL with ``failure=interrupted``, MLflow runs KILLED, then the interrupt goes on up;
        * any other error: every trial FAIL with ``failure=error``, MLflow runs FAILED, then the error goes on up;
        * ``kill -9``: nothing can run, but the heartbeats stop; any later run fails the trials once stale.
        """
        try:
            configs = [state.trained()[0] for state in batch]
            # a confirm batch's own seed splits the rows its own way: its folds are prepared for it alone
            prepared = self.s.prepared if configs[0].cv == self.s.file.cv else None
            outcomes = evaluate_batch(self.s.dataset, configs, prepared)
            raise_if_stop_requested()  # a Ctrl-C during training whose own raise was swallowed
        except BaseException as exc:
            self._fail_untold(batch, exc)
            raise
        recorder = self.recorder
        assert recorder is not None  # batches are trained only inside run(), which starts the recorder
        for state, outcome in zip(batch, outcomes):
            state.batch_size = len(batch)
            recorder.submit(state.trial.number, state.record(outcome), partial(self._record, state, outcome))

    def _record(self, state: TrialProgress, outcome: EvaluationResult | TrainingDiverged) -> None:
        """In the recorder's thread: one trial written, in the order that loses nothing (see below)."""
        try:
            if isinstance(outcome, TrainingDiverged):
                self._finish(self._fail(state, "diverged", str(outcome)), summary=False)
                return
            study, trial, result = self.s.study, state.trial, outcome
            for key, value in {
                "honest_score": result.honest_score_mean,
                "threshold": result.threshold,
                "seconds": result.seconds,
                "honest_score_std": result.honest_score_std,
            }.items():
                trial.set_user_attr(key, value)
            me = TrialRecord(trial.number, state.step.phase.name, "RUNNING", state.loss, cv=trial.user_attrs.get("cv"))
            config, run_id = state.trained()
            stats = trial_stats(trial_records(study), me, result, config, self.s.file.reference_loss)
            for key, value in stats.items():
                trial.set_user_attr(key, value)
            self._keep_oof(trial.number, run_id, result, config)
            # MLflow first, then Optuna, then the run's final status: see StudyTracker.log_trial_result
            self.tracker.log_trial_result(
                run_id,
                result,
                self.s.dataset,
                config,
                extra_metrics=stats_metrics(stats),
                extra_tags={TAG_VERDICT: verdict_tag(stats)},
            )
            study.tell(trial, result.oof_score)
            state.told = True
            self.tracker.mark_finished(run_id)
            phase = state.step.phase.name
            done = TrialOutcome(
                trial.number, phase, state.loss, "COMPLETE", result, stats=stats, batch_size=state.batch_size
            )
            self._finish(done)
        except BaseException as exc:
            self._fail_untold([state], exc)
            raise
        finally:
            state.stop_beating()

    def _keep_oof(self, number: int, run_id: str, result: EvaluationResult, config: TrialConfig) -> None:
        """Every repeat's OOF probabilities beside the study and on the trial's run (search.study.oof_store)."""
        f = self.s.file
        by_repeat, folds = result.oof_proba_by_repeat, result.fold_of_row_by_repeat
        path = write_trial_oof(
            oof_dir(f.base_dir, f.name), number, by_repeat, folds, result.y_true, config.cv.seed, result.fingerprint
        )
        self.tracker.log_trial_file(run_id, path, "oof")

    def _finish(self, outcome: TrialOutcome, summary: bool = False) -> None:
        self.outcomes.append(outcome)
        if summary:
            self._log_summary()
        if self._on_trial:
            self._on_trial(outcome)

    def _log_summary(self) -> None:
        study = self.s.study
        notes = phase_choices(self.s.phases, trial_records(study), self.s.file.reference_loss)
        table = results_table(study, self.s.file.reference_loss)
        self.tracker.log_study_summary(self.parent_run_id, table, study, notes=notes)

    def _fail_untold(self, batch: list[TrialProgress], exc: BaseException) -> None:
        fail_untold(self.s.study, self.tracker, batch, exc)

    def _fail(self, state: TrialProgress, kind: str, reason: str) -> TrialOutcome:
        return fail_trial(self.s.study, self.tracker, state, kind, reason)

    def _data_change_tags(self) -> dict[str, str]:
        history = self.s.study.user_attrs.get("data_fingerprint_history")
        return {"losstune.data_changed": "true", "losstune.data_previous": history[-2]} if history else {}
