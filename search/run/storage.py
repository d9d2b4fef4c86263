"""Where studies live: an Optuna RDB storage (SQLite file by default, PostgreSQL for teams), with heartbeats.

The URL may carry a password (PostgreSQL): it is only ever shown through :func:`redact`, and a driver's
message about it through :func:`~search.formats.redaction.redact_text`.

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
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from objectives.errors import LosstuneError
from search.formats.redaction import redact_text, redact_url

log = logging.getLogger(__name__)

# A trial whose process died stops beating; after the grace period the next run marks it FAIL and retries it.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 40
SQLITE_TIMEOUT_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 10
# pg_advisory_lock key taken while a process creates or attaches to a study (any study in that database)
_PG_INIT_LOCK_KEY = 0x10557_0E5


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        raise LosstuneError(f"{name}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise LosstuneError(f"{name} must be more than 0 seconds, got {text}")
    return value


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


def redact(url: str) -> str:
    """The storage URL as shown: see :func:`search.formats.redaction.redact_url` (the one rule for every URL)."""
    return redact_url(url)


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, None for other URLs and in-memory databases."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # Several workers share one file: wait for the lock instead of failing with "database is locked". (The
        # driver begins a transaction only at the first write, so a reading transaction never waits to upgrade
        # its lock, the one case where SQLite answers "locked" without waiting.)
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}}
    kwargs: dict = {"pool_pre_ping": True}
    if make_url(url).drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        # a server that does not answer: a line after seconds, not after the system's TCP time-out (minutes)
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    return kwargs


def check_sqlite_target(url: str, what: str = "storage") -> None:
    """Refuse, before anything is written, a SQLite file that cannot be created or written: a missing or
    read-only directory, a directory or a non-database file in its place. Other URLs pass unchanged."""
    path = sqlite_file(url)
    if path is None:
        return
    shown = redact(url)
    parent = path.parent
    if not parent.is_dir():
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise LosstuneError(f"cannot open {what} {shown}: directory {parent} {problem}")
    if path.is_dir():
        raise LosstuneError(f"cannot open {what} {shown}: {path} is a directory, not a database file")
    if path.exists():
        with path.open("rb") as fh:
            head = fh.read(16)
        if head and head != b"SQLite format 3\x00":
            raise LosstuneError(f"cannot open {what} {shown}: {path} is not a SQLite database")
        if not os.access(path, os.R_OK | os.W_OK):
            raise LosstuneError(f"cannot open {what} {shown}: {path} is not writable")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise LosstuneError(f"cannot open {what} {shown}: directory {parent} is not writable")


def require_existing_study_file(url: str, study: str) -> None:
    """For commands that only read a study (status, export): a SQLite file that does not exist yet means there is
    no study, and opening it would create an empty database."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise LosstuneError(f"study {study!r} has no storage yet ({path} does not exist): run `losstune search` first")


def check_directory_target(path: Path, what: str) -> None:
    """Refuse, before anything is written, a directory that does not exist and cannot be created, or that
    cannot be written."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise LosstuneError(f"cannot use {what} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LosstuneError(f"cannot use {what} {path}: {probe} is not writable")


def open_engine(url: str) -> sa.Engine:
    check_sqlite_target(url)
    try:
        engine = sa.create_engine(url, **_engine_kwargs(url))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (ArgumentError, SQLAlchemyError, ImportError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        raise LosstuneError(f"cannot open storage {redact(url)}: {redact_text(reason, url)}") from None
    return engine


@contextmanager
def init_lock(url: str) -> Iterator[None]:
    """Serialise the set-up of studies on one storage across processes and machines: creating tables, the
    study, the MLflow experiment and the study's parent run. Two workers started at once on a new study would
    otherwise both create them. SQLite: an exclusive ``flock`` on the database's directory (same machine only,
    as SQLite itself); PostgreSQL: an advisory lock; other databases: no lock."""
    path = sqlite_file(url)
    if path is not None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
        return
    if not url.startswith("postgresql"):
        yield
        return
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_INIT_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_INIT_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


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
    beat, grace = heartbeat_seconds(), grace_seconds()
    try:
        with quiet_optuna():
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=beat, grace_period=grace
            )
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] or type(exc).__name__
        raise LosstuneError(f"cannot open storage {redact(url)}: {redact_text(reason, url)}") from None
    return storage


def adopt_silent_trials(storage, study_id: int) -> int:
    """Record a first heartbeat for RUNNING trials that have none, so that they can go stale.

    Optuna only ever fails a trial whose heartbeat it has seen; a worker killed between asking for a trial and
    its first heartbeat would leave that trial RUNNING forever (and its grid point waiting forever). A heartbeat
    recorded here starts the grace period from now: a live worker beats over it, a dead one does not."""
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    trials, beats = models.TrialModel, models.TrialHeartbeatModel
    query = (
        sa.select(trials.trial_id)
        .outerjoin(beats, beats.trial_id == trials.trial_id)
        .where(trials.study_id == study_id, trials.state == TrialState.RUNNING, beats.trial_heartbeat_id.is_(None))
    )
    with orm.Session(storage.engine) as session:
        silent = list(session.scalars(query))
    adopted = 0
    for trial_id in silent:
        try:
            storage.record_heartbeat(trial_id)
            adopted += 1
        except SQLAlchemyError:  # its worker recorded one at the same moment
            continue
    return adopted


def storage_fault(exc: BaseException) -> LosstuneError | None:
    """The one line for a write that the disk refused in the middle of a search (full, read-only, gone): an
    OSError, a database error (SQLite's "database or disk is full", "attempt to write a readonly database"),
    also when MLflow or SQLAlchemy wrapped it. None for any other error (a bug keeps its traceback)."""
    import sqlite3

    if isinstance(exc, LosstuneError):  # already one line, and a better one
        return None
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError):
            where = f" {cause.filename}" if cause.filename else ""
            reason = cause.strerror or str(cause) or type(cause).__name__
            return LosstuneError(f"cannot write{where}: {reason}{_RERUN}")
        if isinstance(cause, (SQLAlchemyError, sqlite3.Error)):
            first = str(getattr(cause, "orig", None) or cause).strip().splitlines()
            return LosstuneError(f"cannot write to a database: {redact_text(first[0] if first else type(cause).__name__)}{_RERUN}")
        cause = cause.__cause__ or cause.__context__
    return None


_RERUN = "; the search stopped (free some space or make it writable, then run it again: nothing finished is lost)"


def stale_trial_ids(storage, study_id: int) -> list[int]:
    """The RUNNING trials of the study whose heartbeat is older than the grace period (their workers died)."""
    return list(storage._get_stale_trial_ids(study_id))


def fail_stale_trial(storage, trial_id: int, kind: str, reason: str) -> bool:
    """Mark a stale trial FAIL with ``failure``/``failure_reason`` user attrs, as every other failed trial has
    (Optuna's ``fail_stale_trials`` sets the state only). False when another process finished it first."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        storage.set_trial_user_attr(trial_id, "failure", kind)
        storage.set_trial_user_attr(trial_id, "failure_reason", reason)
        return bool(storage.set_trial_state_values(trial_id, state=TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def study_exists(url: str, study: str) -> bool:
    """Whether the storage already holds ``study``, read without creating anything (no file, no table)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return False
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("studies"):
                return False
            found = conn.execute(sa.text("SELECT 1 FROM studies WHERE study_name = :n"), {"n": study}).first()
        return found is not None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] or type(exc).__name__
        raise LosstuneError(f"cannot open storage {redact(url)}: {redact_text(reason, url)}") from None
    finally:
        engine.dispose()


@contextmanager
def heartbeat(storage, trial_id: int) -> Iterator[None]:
    """Beat for ``trial_id`` while the block runs, as ``study.optimize`` does for its own trials (ask/tell
    does not), so that a killed worker's trial is detected as stale. A beat that fails (the database briefly
    unreachable) is logged and retried at the next interval; it does not stop the trial."""
    stop = threading.Event()
    interval = heartbeat_seconds()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception as exc:  # noqa: BLE001 - a lost beat must not kill the trial
                log.warning("heartbeat of trial id %d failed (%s); retrying", trial_id, type(exc).__name__)

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
