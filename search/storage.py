"""Where studies live: an Optuna RDB storage (SQLite file by default, PostgreSQL for teams), with heartbeats.

The URL may carry a password (PostgreSQL): it is only ever shown through :func:`redact`.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from objectives.errors import LosstuneError

log = logging.getLogger(__name__)

# A trial whose process died stops beating; after the grace period the next run marks it FAIL and retries it.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 40
SQLITE_TIMEOUT_SECONDS = 60


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable storage URL>"


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # several workers share one file: wait for the lock instead of failing with "database is locked"
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}}
    return {"pool_pre_ping": True}


def open_engine(url: str) -> sa.Engine:
    try:
        engine = sa.create_engine(url, **_engine_kwargs(url))
        with engine.connect():
            pass
    except (ArgumentError, OperationalError, ImportError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        raise LosstuneError(f"cannot open storage {redact(url)}: {reason}") from None
    return engine


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's warnings about features we use on purpose: heartbeats, PartialFixedSampler and
    fail_stale_trials are marked experimental, and heartbeats are 'supposed' to go with ``optimize`` (we beat
    them ourselves, see :func:`heartbeat`)."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def open_optuna_storage(url: str):
    import optuna

    open_engine(url).dispose()  # a clear error for an unreachable server or an unwritable file
    with quiet_optuna():
        return optuna.storages.RDBStorage(
            url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
        )


@contextmanager
def heartbeat(storage, trial_id: int) -> Iterator[None]:
    """Beat for ``trial_id`` while the block runs, as ``study.optimize`` does for its own trials (ask/tell
    does not), so that a killed worker's trial is detected as stale."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            storage.record_heartbeat(trial_id)

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
