"""One worker's loop, top to bottom: find where the plan stands from the stored trials; take the current phase's
pending steps as a batch (every pending grid point, or a TPE phase's ``batch`` draws); run the batch in its
lifecycle (:func:`search.run.lifecycle.trial_batch`): for each step, reserve a budget slot, claim the grid point
and ask Optuna for a trial (which beats from then on); train the batch as one job (``evaluate_batch``); then
record each trial (MLflow, then Optuna's ``tell``, then its run FINISHED) and the study's summary.

Every trial of a batch keeps its own Optuna trial, budget slot, grid claim and MLflow child run; the batch has
one heartbeat thread for them all. The recording runs in this thread, after the training: measured on the demo
study, a background recorder overlapping it with the next batch's training saved no time on 2 cores (see
docs/development.md), and the next batch is planned from the stored trials alone.

A trial never stays RUNNING for good: a diverging loss fails that trial only; Ctrl-C (or SIGTERM) during the
asking or the training, and errors, mark the batch's trials FAIL with the reason; a stop during the recording
waits for the batch to be written. A worker killed outright stops beating, and every worker fails such stale
trials before each batch (:meth:`~search.run.session.StudySession.reconcile_stale`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from objectives.config import TrialConfig
from objectives.errors import TrainingDiverged
from objectives.evaluate import EvaluationResult, evaluate_batch
from search.formats.interrupts import raise_if_stop_requested
from search.run.heartbeats import grace_seconds
from search.run.lifecycle import TrialBatch, fail_trial, trial_batch
from search.run.options import SearchOptions
from search.run.session import StudySession
from search.run.storage import quiet_optuna
from search.run.trial_ask import sampler_for, suggest_loss, trial_attrs
from search.run.trial_outcome import TrialOutcome, TrialProgress
from search.study.choices import phase_choices
from search.study.loss_point import InvalidLoss, checked
from search.study.noise import stats_metrics, trial_stats
from search.study.oof_store import oof_dir, write_trial_oof
from search.study.plan import Step, Wait, pending_steps, trial_cv
from search.study.results import plan_trials, results_table
from search.study.study_record import read_study
from search.study.trial_record import write_trial
from search.tracking.study_run import TAG_VERDICT, verdict_tag

__all__ = ["Worker"]

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
        self._on_trial: Callable[[TrialOutcome], None] | None = None
        session.ledger.check_in()  # as early as possible: workers started together share the first phase

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def run(self, on_trial: Callable[[TrialOutcome], None] | None = None) -> list[TrialOutcome]:
        self._on_trial = on_trial
        while not self._out_of_time():
            raise_if_stop_requested()  # also a stop held while the last batch was recorded
            steps = self._next_steps()
            if steps is None:
                break
            asked = self._run_batch(steps)
            if asked is None:
                break  # the week's budget is spent
            if not asked:
                time.sleep(CLAIM_RETRY_SECONDS)  # other workers hold these points; look again
        raise_if_stop_requested()
        self.s.ledger.check_out()  # only on a clean stop: after a fault, the check-in simply grows old
        return self.outcomes

    def _next_steps(self) -> list[Step] | None:
        while True:
            self.s.ledger.check_in()
            self.s.reconcile_stale(self.tracker)  # a dead worker's trial is failed (and retried) as soon as it is stale
            steps = pending_steps(
                self.s.phases,
                plan_trials(self.s.study),
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

    def _run_batch(self, steps: list[Step]) -> int | None:
        """Ask, train and record one batch in its lifecycle (:func:`~search.run.lifecycle.trial_batch`): how many
        trials were asked; None when the week's budget was spent before the first."""
        with trial_batch(self.s.study, self.tracker, self.s.storage) as batch:
            if not self._ask_batch(batch, steps):
                return None
            to_train = batch.to_train()
            if to_train:
                outcomes = self._train(to_train)
                batch.record(list(zip(to_train, outcomes)), self._record)
                self._log_summary()
            return len(batch.trials)

    def _ask_batch(self, batch: TrialBatch, steps: list[Step]) -> bool:
        """For each step: a budget slot, the grid claim, an Optuna trial with its MLflow run; steps whose point
        another worker holds are left out. False when the budget is spent before the first. One step at a time
        (slot, claim, ask), so that a worker killed here leaves at most one slot unattached."""
        for step in steps:
            slot = self.s.ledger.reserve(self.week, self.budget)
            if slot is None:
                return bool(batch.trials)
            if step.claim is not None and not self.s.ledger.claim(step.claim):
                self.s.ledger.release(self.week, slot)
                continue
            self._ask(batch, step, slot)
        return True

    def _ask(self, batch: TrialBatch, step: Step, slot: int) -> None:
        """An Optuna trial for ``step``, beating, with its attrs (its configuration record among them) and its
        RUNNING MLflow run; a configuration LossConfig refuses is failed at once (``invalid``)."""
        study = self.s.study
        with quiet_optuna():
            study.sampler = sampler_for(step, self.s.file.cv.seed, len(study.get_trials(deepcopy=False)))
            trial = study.ask()
        state = batch.add(TrialProgress(trial, step, self.s.trial_id(trial)))
        self.s.ledger.attach(self.week, slot, trial.number, claim=step.claim)
        with quiet_optuna():
            state.loss = loss = suggest_loss(trial, step, self.s.bounds)  # a grid point's values, or TPE's draw
        cv = trial_cv(self.s.file.cv, step)
        invalid = None
        try:
            state.config = self.s.file.trial_config(checked(loss), cv=cv)
        except InvalidLoss as exc:
            invalid = f"invalid configuration: {exc}"
        write_trial(trial, **trial_attrs(step, self.week, slot, self.s.dataset.fingerprint, loss, cv, state.config))
        if invalid is not None or state.config is None:
            self._finish(batch.fail(state, "invalid", str(invalid)), summary=True)
            return
        state.run_id = self.tracker.start_trial(
            self.parent_run_id,
            trial.number,
            step.phase.name,
            self.week,
            state.config,
            self.s.dataset.fingerprint,
            extra_tags=self._data_change_tags(),
        )
        write_trial(trial, mlflow_run_id=state.run_id)

    def _train(self, to_train: list[TrialProgress]) -> list[EvaluationResult | TrainingDiverged]:
        """Train the batch as one job. A configuration whose loss diverges (NaN/inf) comes back as
        ``TrainingDiverged`` (that trial alone fails, ``failure=diverged``, not retried); Ctrl-C or an error
        leaves the batch's lifecycle, which marks every trial FAIL (``interrupted``, runs KILLED; ``error``, runs
        FAILED). ``kill -9``: nothing runs, the heartbeats stop, and a later run fails the trials once stale."""
        configs = [state.trained()[0] for state in to_train]
        # a confirm batch's own seed splits the rows its own way: its folds are prepared for it alone
        prepared = self.s.prepared if configs[0].cv == self.s.file.cv else None
        outcomes = evaluate_batch(self.s.dataset, configs, prepared)
        raise_if_stop_requested()  # a Ctrl-C during training whose own raise was swallowed
        for state in to_train:
            state.batch_size = len(to_train)
        return outcomes

    def _record(self, state: TrialProgress, outcome: EvaluationResult | TrainingDiverged) -> None:
        """One trial written, in the order that loses nothing (see below); a failure is marked by the batch."""
        if isinstance(outcome, TrainingDiverged):
            self._finish(fail_trial(self.s.study, self.tracker, state, "diverged", str(outcome)))
            return
        study, trial, result = self.s.study, state.trial, outcome
        config, run_id = state.trained()
        stats = trial_stats(plan_trials(study), state.plan_trial(result), result, config, self.s.file.reference_loss)
        write_trial(trial, stats)
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
        notes = phase_choices(self.s.phases, plan_trials(study), self.s.file.reference_loss)
        table = results_table(study, self.s.file.reference_loss)
        self.tracker.log_study_summary(self.parent_run_id, table, study, notes=notes)

    def _data_change_tags(self) -> dict[str, str]:
        history = read_study(self.s.study).data_fingerprint_history
        return {"losstune.data_changed": "true", "losstune.data_previous": history[-2]} if history else {}
