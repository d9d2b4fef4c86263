"""The tracking store's shared vocabulary: the tags and states every losstune run carries, and a store failure
as one line. Used by every part of :class:`~search.tracking.tracker.StudyTracker` and by ``losstune train``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from objectives.errors import LosstuneError
from search.tracking.mlflow_locations import redact_uri

TAG_ROLE = "losstune.role"
TAG_STUDY = "losstune.study"
TAG_PHASE = "losstune.phase"
TAG_WEEK = "losstune.week"
TAG_TRIAL = "losstune.trial"
TAG_STATE = "losstune.state"
TAG_FINGERPRINT = "losstune.data_fingerprint"
TAG_FAILURE = "losstune.failure_reason"

STATE_RUNNING = "RUNNING"
STATE_COMPLETE = "COMPLETE"
STATE_FAIL = "FAIL"

MAX_REASON_CHARS = 500
STORE_ERRORS = (MlflowException, SQLAlchemyError, OSError)


def now_ms() -> int:
    return int(time.time() * 1000)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Turn a failure of the tracking store into one line: ``what: <first line of the cause>``."""
    try:
        yield
    except STORE_ERRORS as exc:
        raise store_error_line(what, exc) from exc


def store_error_line(what: str, exc: BaseException) -> LosstuneError:
    """``what: <the cause's type>: <the first line of the cause>``, without a password."""
    cause = str(getattr(exc, "message", None) or exc).strip().splitlines()
    first = cause[0] if cause else type(exc).__name__
    return LosstuneError(redact_uri(f"{what}: {type(exc).__name__}: {first}")[:1000])
