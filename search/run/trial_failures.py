"""How a trial that will not finish is marked, so that none stays RUNNING for good: FAIL in Optuna with
``failure`` and ``failure_reason`` in its user attrs, its MLflow run FAILED (or KILLED on Ctrl-C), its
heartbeat stopped. Used by the worker for an invalid configuration, a diverging loss, Ctrl-C and any error."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from optuna.trial import TrialState

from search.run.trial_outcome import TrialOutcome, TrialProgress

if TYPE_CHECKING:
    import optuna

    from search.tracking.tracker import StudyTracker

log = logging.getLogger(__name__)


def fail_trial(
    study: optuna.Study, tracker: StudyTracker, state: TrialProgress, kind: str, reason: str, status: str = "FAILED"
) -> TrialOutcome:
    """Tell the trial FAIL with ``failure=kind`` and ``failure_reason=reason``, then close its MLflow run."""
    trial = state.trial
    trial.set_user_attr("failure", kind)
    trial.set_user_attr("failure_reason", reason)
    study.tell(trial, state=TrialState.FAIL)
    state.told = True
    if state.run_id is not None:
        tracker.fail_trial(state.run_id, reason, status=status)
    state.outcome = TrialOutcome(trial.number, state.step.phase.name, state.loss, "FAIL", reason=reason)
    return state.outcome


def fail_untold(study: optuna.Study, tracker: StudyTracker, batch: list[TrialProgress], exc: BaseException) -> None:
    """Mark every trial of ``batch`` not told yet FAIL (interrupted or error) and stop its heartbeat."""
    with stop_signals_ignored():  # a second Ctrl-C or SIGTERM must not leave a trial half-marked
        for state in batch:
            if not state.told:
                try:
                    if isinstance(exc, KeyboardInterrupt):
                        fail_trial(study, tracker, state, "interrupted", "interrupted (Ctrl-C)", status="KILLED")
                    else:
                        fail_trial(study, tracker, state, "error", f"{type(exc).__name__}: {exc}")
                except Exception:
                    if not state.told:  # FAIL in Optuna is what counts; its MLflow run is closed by the next run
                        log.warning(
                            "could not mark trial %d FAILED; it is failed once its heartbeat is stale",
                            state.trial.number,
                        )
            state.stop_beating()


@contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """Ignore Ctrl-C (SIGINT) and ``kill PID`` (SIGTERM) for the block, which must run to its end: a trial being
    marked, the recorder writing the trials that finished training. Both stop a search the same way (SIGTERM
    becomes an interrupt, see :mod:`search.run.interrupts`), so a second one of either must
    not cut the block short. Main thread only: elsewhere signals can be neither changed nor delivered."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
