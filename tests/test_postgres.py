"""One study on a real PostgreSQL server: three ``losstune search`` processes at once (as on three machines), the
Optuna storage and the MLflow backend store both on PostgreSQL (separate databases).

Runs when ``LOSSTUNE_TEST_PG_URL`` is set (``source .ci/postgres.sh`` starts a throw-away server and sets it);
skipped otherwise, except under ``CI=true``, where a missing server is a failure, so CI cannot skip it silently.
The URL's user must be allowed to create databases: each run creates two and drops them afterwards.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from sqlalchemy.engine import make_url

from search.study.loss_point import loss_point
from search.study.plan import config_key
from tests.conftest import synthetic_frame
from tests.test_robustness import WEEK, start_search

PG_URL = os.environ.get("LOSSTUNE_TEST_PG_URL")
BUDGET = 7  # balance (4 points) and three of the gamma phase: the workers also wait for each other

STUDY = """\
name: team
data: {path: data.csv, target: label, positive: "yes"}
cv: {folds: 3, seed: 0}
model: {hidden: [8]}
train: {epochs: 3, batch_size: 64, lr: 0.01, device: cpu}
budget: {trials_per_week: 7}
storage: ${LOSSTUNE_PG_OPTUNA}
tracking: {uri: "${LOSSTUNE_PG_MLFLOW}", experiment: team}
"""


@pytest.fixture(scope="module")
def pg_url() -> str:
    if not PG_URL:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but LOSSTUNE_TEST_PG_URL is not set: .ci/run must start PostgreSQL (.ci/postgres.sh)")
        pytest.skip("LOSSTUNE_TEST_PG_URL is not set (source .ci/postgres.sh to run the PostgreSQL tests)")
    return PG_URL


@pytest.fixture
def databases(pg_url):
    """Two new databases on the server, for Optuna and for MLflow; dropped afterwards."""
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    prefix = f"losstune_test_{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_optuna", f"{prefix}_mlflow"]
    try:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        base = make_url(pg_url)
        yield [base.set(database=name).render_as_string(hide_password=False) for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                _drop_database(conn, name)
        admin.dispose()


def _drop_database(conn: sa.Connection, name: str, tries: int = 20) -> None:
    """DROP DATABASE ... WITH (FORCE), retried while it fails for want of the right to end a session that is not
    ours: an autovacuum worker (the server's own role) that started on the database the test just wrote to. The
    test's role may end its own sessions, not that one; autovacuum leaves within a second or so."""
    for attempt in range(tries):
        try:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except sa.exc.ProgrammingError as exc:
            if "pg_signal_backend" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.5)


def wait_for_lock_waiters(engine: sa.Engine, count: int, procs, timeout: float = 300.0) -> None:
    """Until ``count`` sessions of this database wait for a lock (or fail, should a worker exit first)."""
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.exec_driver_sql(query).scalar_one() >= count:
                return
        exited = [p for p in procs if p.poll() is not None]
        assert not exited, exited[0].communicate()
        time.sleep(0.2)
    pytest.fail(f"{count} workers did not reach their check-in within {timeout:g} s")


def test_three_workers_on_one_postgresql_study(tmp_path: Path, databases, monkeypatch):
    optuna_url, mlflow_url = databases
    password = make_url(optuna_url).password
    assert password, "the test URL needs a password, to check that it never appears"
    synthetic_frame(n=240, seed=3, missing=False).to_csv(tmp_path / "data.csv", index=False)
    study_path = tmp_path / "team.yaml"
    study_path.write_text(STUDY)
    env = {"LOSSTUNE_PG_OPTUNA": optuna_url, "LOSSTUNE_PG_MLFLOW": mlflow_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOSSTUNE_NOW", WEEK)

    from search.run.session import StudySession

    StudySession(study_path, with_data=False)  # creates the study and the ledger's tables
    # Three machines started at once: a process may be up seconds before the others and, alone, would rightly
    # take the whole first phase. The workers' table is locked until all three wait on it, so that each worker
    # checks in before any takes its share, as workers that are up at the same time do.
    optuna_engine = sa.create_engine(optuna_url)
    with optuna_engine.connect() as lock:
        lock.exec_driver_sql("LOCK TABLE losstune_workers IN ACCESS EXCLUSIVE MODE")
        procs = [start_search(study_path, flags=("-v",) if i == 0 else (), **env) for i in range(3)]
        wait_for_lock_waiters(optuna_engine, 3, procs)
        lock.commit()
    optuna_engine.dispose()
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out + err
        assert "Traceback" not in err
    session = StudySession(study_path, with_data=False)
    trials = session.study.trials
    assert len(trials) == BUDGET and session.ledger.spent("2026-W47") == BUDGET  # the budget held
    assert all(t.state.name == "COMPLETE" for t in trials)
    keys = [config_key(loss_point(t.user_attrs["loss"])) for t in trials]
    assert len(set(keys)) == len(keys)  # no configuration twice
    assert Counter(t.user_attrs["phase"] for t in trials) == {"balance": 4, "gamma": 3}
    assert len({t.user_attrs["worker"] for t in trials}) >= 2

    client = MlflowClient(mlflow_url)
    experiment = client.get_experiment_by_name("team")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    parent_id = session.study.user_attrs["mlflow_parent_run_id"]
    assert {r.info.run_id for r in runs if r.data.tags.get("losstune.role") == "study"} == {parent_id}
    for t in trials:  # every trial is in MLflow, finished, with its score
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.data.metrics["cv_score"] == pytest.approx(t.value)
    assert len(runs) == BUDGET + 1

    # the password appears nowhere: process output and logs (one worker at debug level), MLflow params, tags and
    # run names, the results table, Optuna's attributes, the status, the exported configuration, any artifact
    texts = [out + err for out, err in outputs]
    for run in runs:
        texts.append(
            json.dumps(
                [run.info.run_name, run.data.params, run.data.tags, experiment.tags, experiment.artifact_location]
            )
        )
    table = client.download_artifacts(parent_id, "results_table.csv", str(tmp_path / "dl"))
    texts.append(Path(table).read_text())
    texts.append(
        json.dumps(
            [session.study.user_attrs, [t.user_attrs for t in trials], [t.system_attrs for t in trials]], default=str
        )
    )
    status = start_search(study_path, **env)  # once more: the budget is spent, nothing runs
    out, err = status.communicate(timeout=120)
    assert status.returncode == 0 and "budget for 2026-W47 spent: 7/7" in out
    texts.append(out + err)
    from search.cli import main

    assert main(["status", str(study_path)]) == 0
    assert main(["export", str(study_path), "-o", str(tmp_path / "best.yaml")]) == 0
    texts.append((tmp_path / "best.yaml").read_text())
    texts += [p.read_text(errors="replace") for p in (tmp_path / "mlartifacts").rglob("*") if p.is_file()]
    # the password as the driver reads it, and as written in the URL (percent-encoded), and its longest pieces
    from urllib.parse import quote

    forms = {password, quote(password, safe="/:"), quote(password, safe=""), *password.replace("@", "/").split("/")}
    forms = {f for f in forms if len(f) >= 6}
    leaks = [
        (form, text[max(0, text.find(form) - 80) : text.find(form) + 40])
        for text in texts
        for form in forms
        if form in text
    ]
    assert not leaks, leaks
