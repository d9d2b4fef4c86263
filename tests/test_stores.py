"""Stores that cannot be used are one line at once: a tracking URI recorded without its password, a tracking
server or database that does not answer, a database driver that is not installed. MLflow alone would retry for
a minute or two, printing its retries (and a traceback for a missing driver)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from objectives.errors import LosstuneError
from search.tracking.mlflow_locations import check_tracking_reachable
from tests.conftest import synthetic_frame

STUDY = """\
name: stores
data: {{path: data.csv, target: label, positive: "yes"}}
cv: {{folds: 3, seed: 0}}
model: {{hidden: [8], dropout: 0.0}}
train: {{epochs: 1, batch_size: 64, lr: 0.01}}
budget: {{trials_per_week: 1}}
tracking: {{uri: "{uri}", experiment: stores}}
"""
CLOSED_PORT = 9  # discard: nothing listens on it here, so a connection is refused at once


def run_search(tmp_path: Path, uri: str) -> tuple[subprocess.CompletedProcess, float]:
    synthetic_frame(n=90, seed=2, missing=False).to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "s.yaml").write_text(STUDY.format(uri=uri))
    env = {k: v for k, v in os.environ.items() if k not in ("LOSSTUNE_TRACKING_URI", "LOSSTUNE_STORAGE")}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", "search", "s.yaml", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    return proc, time.monotonic() - start


def assert_one_line(proc: subprocess.CompletedProcess, *expected: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("losstune search: error: ")
    for text in expected:
        assert text in lines[0]
    assert "retried" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("secret", ["pw", "pa/ss@w:rd"])
def test_search_with_an_unreachable_tracking_database(tmp_path, secret):
    from urllib.parse import quote

    uri = f"postgresql+psycopg2://losstune:{quote(secret, safe='/:')}@127.0.0.1:{CLOSED_PORT}/mlflow"
    pytest.importorskip("psycopg2")
    proc, seconds = run_search(tmp_path, uri)
    assert_one_line(
        proc, f"cannot open the MLflow tracking store postgresql+psycopg2://losstune:***@127.0.0.1:{CLOSED_PORT}/mlflow"
    )
    assert secret not in proc.stderr and secret not in proc.stdout
    assert seconds < 60  # MLflow's own retries take minutes; the check itself takes well under a second
    assert not list(tmp_path.glob("*.db"))  # refused before anything was written


def test_search_with_a_missing_database_driver(tmp_path):
    pytest.importorskip("sqlalchemy")
    import importlib.util

    if importlib.util.find_spec("pymysql") is not None:
        pytest.skip("pymysql is installed here: the driver is not missing")
    proc, _ = run_search(tmp_path, f"mysql+pymysql://u:secret1@127.0.0.1:{CLOSED_PORT}/mlflow")
    assert_one_line(proc, "mysql+pymysql://u:***@127.0.0.1", "driver is not installed")
    assert "secret1" not in proc.stderr


def test_search_with_an_unreachable_tracking_server(tmp_path):
    proc, seconds = run_search(tmp_path, f"http://127.0.0.1:{CLOSED_PORT}")
    assert_one_line(proc, f"cannot reach the MLflow tracking server http://127.0.0.1:{CLOSED_PORT}")
    assert seconds < 60


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql+psycopg2://losstune:***@db.internal:5432/losstune_mlflow",
        "postgresql://losstune@db.internal/losstune_mlflow?password=***",
        "http://admin:***@mlflow.internal:5000",
    ],
)
def test_a_uri_recorded_without_its_password_is_refused_at_once(uri):
    start = time.monotonic()
    with pytest.raises(LosstuneError, match=r"has no usable password .* set LOSSTUNE_TRACKING_URI"):
        check_tracking_reachable(uri)
    assert time.monotonic() - start < 1  # no connection was even tried


def test_a_uri_without_password_is_tried_not_refused():
    """libpq's ~/.pgpass: a URI with a user and no password is legitimate; only the connection can tell."""
    pytest.importorskip("psycopg2")
    with pytest.raises(LosstuneError, match="cannot open the MLflow tracking store") as err:
        check_tracking_reachable(f"postgresql://losstune@127.0.0.1:{CLOSED_PORT}/mlflow")
    assert "usable password" not in str(err.value)


def test_a_study_is_created_with_its_format_and_one_of_another_format_is_refused(tmp_path):
    """open_study writes the study format on a study it creates (and on an empty one found without it); a study
    with trials and no format (before the record) or another format is refused in one line."""
    import optuna

    from search.run.storage import STUDY_FORMAT, STUDY_FORMAT_ATTR, open_optuna_storage, open_study

    storage = open_optuna_storage(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(LosstuneError, match="is not in its storage yet"):
        open_study("new", storage)
    assert open_study("new", storage, create=True).user_attrs[STUDY_FORMAT_ATTR] == STUDY_FORMAT
    optuna.create_study(study_name="empty", storage=storage)
    assert STUDY_FORMAT_ATTR not in open_study("empty", storage).user_attrs  # read-only: nothing written
    assert open_study("empty", storage, create=True).user_attrs[STUDY_FORMAT_ATTR] == STUDY_FORMAT
    old = optuna.create_study(study_name="old", storage=storage)
    old.enqueue_trial({})
    with pytest.raises(LosstuneError, match=r"^study 'old' was written by losstune before study format 1: .*0\.1\.0"):
        open_study("old", storage, create=True)
    old.set_user_attr(STUDY_FORMAT_ATTR, 99)
    with pytest.raises(LosstuneError, match="has losstune study format 99; this losstune reads format 1"):
        open_study("old", storage)


def test_a_grid_claims_table_from_before_the_study_format_is_refused(tmp_path):
    import sqlalchemy as sa

    from search.run.budget import BudgetLedger

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE losstune_grid_claims (study VARCHAR(256), claim VARCHAR(512), worker VARCHAR(256) NOT NULL,"
            " claimed_at VARCHAR(40) NOT NULL, PRIMARY KEY (study, claim))"
        )
    with pytest.raises(LosstuneError, match="losstune_grid_claims table was written by losstune before study format"):
        BudgetLedger(engine, "s")
    engine.dispose()
