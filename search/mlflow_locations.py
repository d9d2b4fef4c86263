"""Where MLflow writes: tracking URIs made absolute (so ``mlflow ui`` works from any directory), artifact
locations beside a SQLite store, and URIs shown without their password."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from objectives.errors import LosstuneError
from search.redaction import redact_text

# the artifact folder created beside a sqlite database when no artifact location is given
DEFAULT_ARTIFACT_DIR = "mlartifacts"


def redact_uri(uri: str) -> str:
    """A tracking URI, or a message holding one, without its secrets (:func:`search.redaction.redact_text`)."""
    return redact_text(uri)


def _normalise_tracking_uri(uri: str) -> str:
    """A sqlite URI with a relative path made absolute (so the UI command works from any directory)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path, sep, query = uri[len(prefix) :].partition("?")
        if path and path != ":memory:":
            return f"{prefix}{Path(path).expanduser().resolve()}{sep}{query}"
    return uri


def _sqlite_path(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    path = tracking_uri[len(prefix) :].partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


def _artifact_uri(location: str | None, tracking_uri: str, experiment: str) -> str | None:
    """A URI for MLflow: a plain path becomes an absolute ``file://`` URI; None becomes
    ``mlartifacts/<experiment>`` beside a sqlite database (None for other stores: the store's own default)."""
    if location is None:
        db = _sqlite_path(tracking_uri)
        if db is None:
            return None
        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
        return (db.parent / DEFAULT_ARTIFACT_DIR / folder).as_uri()
    location = str(location)
    if "://" in location or location.startswith("file:"):
        return location
    return Path(location).expanduser().resolve().as_uri()


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))  # file URIs percent-encode non-ASCII names (a directory named 日本)
    return None


def _make_local_artifact_dir(uri: str) -> None:
    path = _local_path(uri)
    if path is None:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LosstuneError(f"cannot create the MLflow artifact directory {path}: {exc.strerror or exc}") from exc


def _same_location(existing: str, wanted: str) -> bool:
    a, b = _local_path(existing), _local_path(wanted)
    if a is not None and b is not None:
        return a.resolve() == b.resolve()
    return existing.rstrip("/") == wanted.rstrip("/")
