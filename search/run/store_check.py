"""The one check of every store a command will use, run before any store is created or written.

A command that writes to stores (``search``: the Optuna storage, the MLflow tracking store and its artifact
directory; ``train``: the tracking store) calls :func:`check_stores` first: a store that cannot be used is then
one line with nothing created, instead of a refusal that comes after another store (a new ``study.optuna.db``,
say) was already made.

What is checked, for each store, without writing anything:

- a SQLite file: its directory exists and can be written; the file, when it exists, is a regular file that can be
  read and written, starts with SQLite's header, and passes SQLite's own ``PRAGMA quick_check`` opened read-only
  (a damaged page, a truncated file, junk after a valid header);
- a database server (PostgreSQL, MySQL) or an MLflow tracking server: it answers a real request within a short
  time-out (:func:`search.tracking.mlflow_locations.check_tracking_reachable`);
- the artifact directory: it exists or can be created, and can be written.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

from objectives.errors import LosstuneError
from search.run.storage import check_directory_target, check_sqlite_target, redact, sqlite_file

# SQLite's busy wait when another process holds a write lock: the check reads, so it only waits for a writer
BUSY_SECONDS = 60.0


def check_sqlite_integrity(url: str, what: str) -> None:
    """An existing SQLite file of ``url`` that SQLite itself finds damaged is refused (read-only: nothing is
    created or changed, not even a journal). Other URLs, and a file not yet created, pass."""
    path = sqlite_file(url)
    if path is None or not path.exists() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_SECONDS)
    except sqlite3.Error as exc:
        raise LosstuneError(f"cannot open {what} {redact(url)}: {exc}") from None
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.Error as exc:
        raise LosstuneError(f"cannot open {what} {redact(url)}: {path} is damaged ({exc})") from None
    finally:
        conn.close()
    if rows != [("ok",)]:
        found = rows[0][0] if rows else "no answer"
        raise LosstuneError(f"cannot open {what} {redact(url)}: {path} is damaged (SQLite's check: {found})")


def check_store(url: str, what: str) -> None:
    """One store's URL: a usable SQLite target (:func:`check_sqlite_target`) that is not damaged."""
    check_sqlite_target(url, what)
    check_sqlite_integrity(url, what)


def check_stores(storage_url: str | None, tracking_uri: str | None, artifact_location: str | None = None) -> None:
    """Every store given, checked before any is created: see the module's docstring."""
    from search.tracking.mlflow_locations import check_tracking_reachable

    if storage_url is not None:
        check_store(storage_url, "storage")
    if tracking_uri is not None:
        check_store(tracking_uri, "the MLflow tracking store")
        check_tracking_reachable(tracking_uri)
    if artifact_location is not None:
        check_directory_target(Path(unquote(urlparse(artifact_location).path)), "the MLflow artifact directory")
