"""Heartbeats and stale trials: a running trial beats; one whose worker died stops, and after the grace period any
other run marks it FAIL and the plan retries it.

Timing of the stale-trial detection (a worker killed mid-trial stops beating; after the grace period any other
run marks its trial FAIL and the plan retries it):

* ``LOSSTUNE_HEARTBEAT_SECONDS`` (default 10): how often a running trial records its heartbeat;
* ``LOSSTUNE_GRACE_SECONDS`` (default 40): how long without a heartbeat before a trial counts as stale. It must
  be longer than the heartbeat interval (tests use 1 and 3).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from objectives.errors import LosstuneError
from search.run import optuna_private
from search.study.trial_record import stored_attrs

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

log = logging.getLogger(__name__)

# A trial whose process died stops beating; after the grace period the next run marks it FAIL and retries it.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 40


def _env_seconds(name: str, default: float) -> float:
    """``name`` from the environment as :data:`objectives.bounds.Seconds` (more than 0, at most a week)."""
    from objectives.bounds import Seconds, parse_bounded

    text = os.environ.get(name)
    if not text:
        return float(default)
    return float(parse_bounded(Seconds, text, name))


def heartbeat_seconds() -> float:
    """Seconds between two heartbeats of a running trial (``LOSSTUNE_HEARTBEAT_SECONDS``, default 10)."""
    return _env_seconds("LOSSTUNE_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)


def grace_seconds() -> float:
    """Seconds without a heartbeat after which a running trial is stale (``LOSSTUNE_GRACE_SECONDS``, default 40)."""
    grace = _env_seconds("LOSSTUNE_GRACE_SECONDS", GRACE_SECONDS)
    beat = heartbeat_seconds()
    if grace <= beat:
        raise LosstuneError(
            f"LOSSTUNE_GRACE_SECONDS ({grace:g}) must be longer than the heartbeat interval ({beat:g}): "
            "otherwise trials that are still running would be marked stale"
        )
    return grace


def adopt_silent_trials(storage: RDBStorage, study_id: int) -> int:
    """Record a first heartbeat for RUNNING trials that have none, so that they can go stale.

    Optuna only ever fails a trial whose heartbeat it has seen; a worker killed between asking for a trial and
    its first heartbeat would leave that trial RUNNING forever (and its grid point waiting forever). A heartbeat
    recorded here starts the grace period from now: a live worker beats over it, a dead one does not."""
    adopted = 0
    for trial_id in optuna_private.silent_running_trial_ids(storage, study_id):
        try:
            storage.record_heartbeat(trial_id)
            adopted += 1
        except SQLAlchemyError:  # its worker recorded one at the same moment
            continue
    return adopted


def stale_trial_ids(storage: RDBStorage, study_id: int) -> list[int]:
    """The RUNNING trials of the study whose heartbeat is older than the grace period (their workers died)."""
    return optuna_private.stale_trial_ids(storage, study_id)


def fail_stale_trial(storage: RDBStorage, trial_id: int, kind: str, reason: str) -> bool:
    """Mark a stale trial FAIL with ``failure``/``failure_reason`` user attrs, as every other failed trial has
    (Optuna's ``fail_stale_trials`` sets the state only). False when another process finished it first."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        for key, value in stored_attrs(failure=kind, failure_reason=reason).items():  # the trial's record
            storage.set_trial_user_attr(trial_id, key, value)
        return bool(storage.set_trial_state_values(trial_id, state=TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


@contextmanager
def heartbeats(storage: RDBStorage, trial_ids: Callable[[], list[int]]) -> Iterator[None]:
    """One thread beats, every interval, for each trial ``trial_ids()`` names at that moment (a batch's trials
    not told yet), as ``study.optimize`` does for its own trials (ask/tell does not), so that a killed worker's
    trials are detected as stale. A trial's first beat is its caller's (:func:`first_beat`, when it is asked). A
    beat that fails (the database briefly unreachable) is logged and retried at the next interval."""
    stop = threading.Event()
    interval = heartbeat_seconds()

    def beat() -> None:
        while not stop.wait(interval):
            for trial_id in trial_ids():
                try:
                    storage.record_heartbeat(trial_id)
                except Exception as exc:
                    log.warning("heartbeat of trial id %d failed (%s); retrying", trial_id, type(exc).__name__)

    thread = threading.Thread(target=beat, name="losstune-heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def first_beat(storage: RDBStorage, trial_id: int) -> None:
    """A just-asked trial's first heartbeat: from now on it goes stale if its worker dies."""
    storage.record_heartbeat(trial_id)
