"""Where MLflow writes: tracking URIs made absolute (so ``mlflow ui`` works from any directory), artifact
locations beside a SQLite store, and URIs shown without their password."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from objectives.errors import LosstuneError
from search.formats.redaction import redact_text

# the artifact folder created beside a sqlite database when no artifact location is given
DEFAULT_ARTIFACT_DIR = "mlartifacts"


def redact_uri(uri: str) -> str:
    """A tracking URI, or a message holding one, without its secrets (:func:`search.formats.redaction.redact_text`)."""
    return redact_text(uri)


def normalise_tracking_uri(uri: str) -> str:
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


def artifact_uri(location: str | None, tracking_uri: str, experiment: str) -> str | None:
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


def make_local_artifact_dir(uri: str) -> None:
    path = _local_path(uri)
    if path is None:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LosstuneError(f"cannot create the MLflow artifact directory {path}: {exc.strerror or exc}") from exc


def same_location(existing: str, wanted: str) -> bool:
    a, b = _local_path(existing), _local_path(wanted)
    if a is not None and b is not None:
        return a.resolve() == b.resolve()
    return existing.rstrip("/") == wanted.rstrip("/")


# how long the one reachability check of a tracking store may take, instead of MLflow's minutes of retries
REACH_TIMEOUT_SECONDS = 5.0
_DB_SCHEMES = ("postgresql", "mysql", "mssql", "oracle")


def check_tracking_reachable(uri: str, timeout: float = REACH_TIMEOUT_SECONDS) -> None:
    """Refuse at once, in one line, a tracking store that cannot be used: a URI whose password was left out
    when it was recorded (``***``), a database driver that is not installed, a server that does not answer
    within ``timeout`` seconds or refuses the login. MLflow itself would retry for a minute or two, printing
    its retries. SQLite files and local paths are checked elsewhere (:func:`search.run.storage.check_sqlite_target`)."""
    from search.formats.redaction import MASK, query_secrets, redact_url, url_password

    shown = redact_url(uri)
    if url_password(uri) == MASK or MASK in query_secrets(uri):
        raise LosstuneError(
            f"the MLflow tracking URI {shown} has no usable password (it was recorded without it, as ***): set "
            "LOSSTUNE_TRACKING_URI to the full URI (or use ~/.pgpass and a URI without a password)"
        )
    scheme = urlparse(uri).scheme.lower()
    if scheme.split("+")[0] in _DB_SCHEMES:
        _check_database(uri, shown, timeout)
    elif scheme in ("http", "https"):
        _check_server(uri, shown, timeout)


def _check_database(uri: str, shown: str, timeout: float) -> None:
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from search.formats.redaction import redact_text

    what = f"cannot open the MLflow tracking store {shown}"
    try:
        url = sa.engine.make_url(uri)
        engine = sa.create_engine(
            url, connect_args=_connect_timeout_args(url.drivername, timeout), poolclass=sa.pool.NullPool
        )
    except (NoSuchModuleError, ImportError, ModuleNotFoundError) as exc:
        raise LosstuneError(
            f"{what}: its database driver is not installed ({type(exc).__name__}: {exc}); "
            "install it, e.g. pip install 'losstune[postgres]'"
        ) from None
    except ArgumentError as exc:
        raise LosstuneError(f"{what}: {redact_text(str(exc), uri)}") from None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (SQLAlchemyError, ImportError, OSError) as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise LosstuneError(f"{what}: {redact_text(lines[0] if lines else type(exc).__name__, uri)}") from None
    finally:
        engine.dispose()


def _connect_timeout_args(drivername: str, timeout: float) -> dict:
    seconds = max(1, round(timeout))
    if drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        return {"connect_timeout": seconds}
    if drivername.startswith("mysql"):
        return {"connect_timeout": seconds}
    return {}


def _check_server(uri: str, shown: str, timeout: float) -> None:
    from search.tracking.server_check import check_server_answers

    check_server_answers(uri, shown, timeout)
