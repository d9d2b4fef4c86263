"""Where studies live: an Optuna RDB storage (SQLite file by default, PostgreSQL for teams), with heartbeats.

The URL may carry a password (PostgreSQL): it is only ever shown through :func:`redact`, and a driver's
message about it through :func:`~search.formats.redaction.redact_text`.

Heartbeats and stale trials: :mod:`search.run.heartbeats`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from objectives.errors import LosstuneError
from search.formats.redaction import redact_text, redact_url
from search.run.heartbeats import grace_seconds, heartbeat_seconds
from search.run.optuna_private import study_in_database
from search.study.study_record import STUDY_FORMAT_ATTR as STUDY_FORMAT_ATTR  # where the format is kept
from search.study.study_record import study_format, write_study

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

log = logging.getLogger(__name__)

SQLITE_TIMEOUT_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 10
# pg_advisory_lock key taken while a process creates or attaches to a study (any study in that database)
_PG_INIT_LOCK_KEY = 0x10557_0E5


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


def open_optuna_storage(url: str) -> RDBStorage:
    import optuna

    open_engine(url).dispose()  # a clear error for an unreachable server or an unwritable file
    beat, grace = heartbeat_seconds(), grace_seconds()
    try:
        with quiet_optuna():
            # Optuna's hints say int, but it waits and compares in (fractional) seconds: a float works as given
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=_engine_kwargs(url),
                heartbeat_interval=beat,  # type: ignore[arg-type]
                grace_period=grace,  # type: ignore[arg-type]
            )
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] or type(exc).__name__
        raise LosstuneError(f"cannot open storage {redact(url)}: {redact_text(reason, url)}") from None
    return storage


# The study format: a study user attr written when losstune creates a study. Format 1: every trial carries the
# configuration it ran with (search.study.stored_config.CONFIG_ATTR). A study with trials and no format was
# written before that record; the last losstune that reads it is READS_UNFORMATTED (docs/guide/study-file.md).
STUDY_FORMAT = 1
READS_UNFORMATTED = "0.1.0"


def open_study(name: str, storage: RDBStorage, *, create: bool = False) -> optuna.Study:
    """The study ``name`` of ``storage``, the one way every command opens a study: created (with its format) only
    with ``create`` and when it does not exist yet; loading first writes nothing. One-line
    :class:`LosstuneError` for a study that is not there (without ``create``) or that this losstune cannot read
    (:func:`check_study_format`)."""
    import optuna

    try:
        with quiet_optuna():
            study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        if not create:
            raise LosstuneError(f"study {name!r} is not in its storage yet: run `losstune search` first") from None
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    check_study_format(study, name, mark=create)
    return study


def check_study_format(study: optuna.Study, name: str, *, mark: bool = False) -> None:
    """Refuse, in one line, a study written by another losstune study format; a study without trials and without
    a format is this losstune's own (created, or left empty): ``mark`` writes the format on it."""
    version = study_format(study)
    if version == STUDY_FORMAT:
        return
    if version is None and not study.get_trials(deepcopy=False):
        if mark:
            write_study(study, losstune_study_format=STUDY_FORMAT)
        return
    if version is None:
        raise LosstuneError(
            f"study {name!r} was written by losstune before study format {STUDY_FORMAT}: its trials do not carry "
            f"the configuration they ran with; use losstune {READS_UNFORMATTED} to read it, or start a new "
            "study name"
        )
    raise LosstuneError(
        f"study {name!r} has losstune study format {version!r}; this losstune reads format {STUDY_FORMAT}: use "
        "the losstune that wrote it, or start a new study name"
    )


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
            return LosstuneError(
                f"cannot write to a database: {redact_text(first[0] if first else type(cause).__name__)}{_RERUN}"
            )
        cause = cause.__cause__ or cause.__context__
    return None


_RERUN = "; the search stopped (free some space or make it writable, then run it again: nothing finished is lost)"


def study_exists(url: str, study: str) -> bool:
    """Whether the storage already holds ``study``, read without creating anything (no file, no table)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return False
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return study_in_database(conn, study)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] or type(exc).__name__
        raise LosstuneError(f"cannot open storage {redact(url)}: {redact_text(reason, url)}") from None
    finally:
        engine.dispose()
