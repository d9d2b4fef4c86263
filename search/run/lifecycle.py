"""One batch of trials from ask to tell: :func:`trial_batch` is the context manager a worker runs each batch in.

It owns, for the batch:

* one heartbeat thread for all its trials (:func:`search.run.heartbeats.heartbeats`), beating for every trial
  asked and not told yet, so that a worker killed outright (``kill -9``) leaves trials that go stale;
* the recording (:meth:`TrialBatch.record`): each trained trial written by the worker's ``record`` (MLflow, then
  Optuna's ``tell``, then its run FINISHED), under the one signal guard (:func:`stop_signals_held`), so that a
  Ctrl-C or SIGTERM that arrives meanwhile is acted on once every trial that finished training is written;
* the failure marking on exit: whatever leaves the block early (Ctrl-C, SIGTERM, an error) marks every trial not
  told yet FAIL with the reason (:func:`fail_untold`), under the same guard, and goes on up. No trial of a batch
  stays RUNNING, except after ``kill -9``, where the next run fails it once stale.

A trial that will not finish (an invalid configuration, a diverging loss, an interrupt, an error) is FAIL in
Optuna with ``failure`` and ``failure_reason`` in its user attrs and its MLflow run FAILED (KILLED on Ctrl-C).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from optuna.trial import TrialState

from search.formats.interrupts import stop_signals_held
from search.run.heartbeats import first_beat, heartbeats
from search.run.trial_outcome import TrialOutcome, TrialProgress
from search.study.trial_record import write_trial

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

    from search.tracking.tracker import StudyTracker

log = logging.getLogger(__name__)

R = TypeVar("R")


class TrialBatch:
    """The trials of one batch, in the order asked; those not told yet are the ones that beat."""

    def __init__(self, study: optuna.Study, tracker: StudyTracker, storage: RDBStorage) -> None:
        self.study, self.tracker, self.storage = study, tracker, storage
        self.trials: list[TrialProgress] = []

    def add(self, state: TrialProgress) -> TrialProgress:
        """A trial just asked: it beats from now until it is told."""
        first_beat(self.storage, state.trial_id)
        self.trials.append(state)
        return state

    def untold_ids(self) -> list[int]:
        return [state.trial_id for state in list(self.trials) if not state.told]

    def to_train(self) -> list[TrialProgress]:
        """The trials asked with a configuration and a run (not failed at once as invalid)."""
        return [state for state in self.trials if not state.told]

    def fail(self, state: TrialProgress, kind: str, reason: str) -> TrialOutcome:
        return fail_trial(self.study, self.tracker, state, kind, reason)

    def record(self, trained: Sequence[tuple[TrialProgress, R]], record: Callable[[TrialProgress, R], None]) -> None:
        """``record(state, outcome)`` for each trained trial, in order, held against stop signals (they are
        raised after the batch, by the worker's next look). A trial whose recording fails is marked FAIL and the
        others are still recorded; the first error is then raised (usually the same fault again: a full disk)."""
        error: BaseException | None = None
        with stop_signals_held():
            for state, outcome in trained:
                try:
                    record(state, outcome)
                except Exception as exc:
                    fail_untold(self.study, self.tracker, [state], exc)
                    if error is not None:
                        log.info("recording another trial failed too: %s: %s", type(exc).__name__, exc)
                    error = error or exc
        if error is not None:
            raise error


@contextmanager
def trial_batch(study: optuna.Study, tracker: StudyTracker, storage: RDBStorage) -> Iterator[TrialBatch]:
    """The batch's lifecycle (see the module's doc): its heartbeat while the block runs, its untold trials marked
    FAIL when the block is left by an exception, which then goes on up."""
    batch = TrialBatch(study, tracker, storage)
    with heartbeats(storage, batch.untold_ids):
        try:
            yield batch
        except BaseException as exc:
            fail_untold(study, tracker, batch.trials, exc)
            raise


def fail_trial(
    study: optuna.Study, tracker: StudyTracker, state: TrialProgress, kind: str, reason: str, status: str = "FAILED"
) -> TrialOutcome:
    """Tell the trial FAIL with ``failure=kind`` and ``failure_reason=reason``, then close its MLflow run."""
    trial = state.trial
    write_trial(trial, failure=kind, failure_reason=reason)
    study.tell(trial, state=TrialState.FAIL)
    state.told = True
    if state.run_id is not None:
        tracker.fail_trial(state.run_id, reason, status=status)
    state.outcome = TrialOutcome(trial.number, state.step.phase.name, state.loss, "FAIL", reason=reason)
    return state.outcome


def fail_untold(study: optuna.Study, tracker: StudyTracker, batch: list[TrialProgress], exc: BaseException) -> None:
    """Mark every trial of ``batch`` not told yet FAIL (interrupted or error), held against a second stop
    signal, which must not leave a trial half-marked."""
    with stop_signals_held():
        for state in batch:
            if state.told:
                continue
            try:
                if isinstance(exc, KeyboardInterrupt):
                    fail_trial(study, tracker, state, "interrupted", "interrupted (Ctrl-C)", status="KILLED")
                else:
                    fail_trial(study, tracker, state, "error", f"{type(exc).__name__}: {exc}")
            except Exception:
                if not state.told:  # FAIL in Optuna is what counts; its MLflow run is closed by the next run
                    log.warning(
                        "could not mark trial %d FAILED; it is failed once its heartbeat is stale", state.trial.number
                    )
