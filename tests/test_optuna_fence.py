"""The fence around Optuna's private API (:mod:`search.run.optuna_private`): one test per fenced function, against a
real :class:`optuna.storages.RDBStorage` on SQLite and on PostgreSQL, each named after the private API it relies on
and failing with that name when an Optuna upgrade removes it; and a grep of ``search/`` and ``objectives/`` that
finds no private Optuna name outside the fence.

The PostgreSQL cases run when ``LOSSTUNE_TEST_PG_URL`` is set (``source .ci/postgres.sh`` starts a throw-away
server and sets it) and are skipped otherwise, except under ``CI=true``, where a missing server is a failure (as in
``tests/test_postgres.py``). Each case gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import ast
import os
import re
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from search.run import optuna_private
from search.run.heartbeats import adopt_silent_trials, fail_stale_trial
from search.run.storage import open_optuna_storage, quiet_optuna, study_exists

ROOT = Path(__file__).resolve().parents[1]
FENCE = ROOT / "search" / "run" / "optuna_private.py"
PG_URL = os.environ.get("LOSSTUNE_TEST_PG_URL")
FENCE_NAME = "search/run/optuna_private.py"


def upgrade_message(private: str, function: str) -> str:
    return (
        f"Optuna {optuna.__version__} changed {private}, which {FENCE_NAME}:{function} relies on "
        "(no public API serves it): rewrite that function for this Optuna, or pin Optuna"
    )


# ------------------------------------------------------------------------------------------------ the backends


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """An empty database: a SQLite file under ``tmp_path``, or a new database on the PostgreSQL test server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'optuna.db'}"
        return
    if not PG_URL:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but LOSSTUNE_TEST_PG_URL is not set: .ci/run must start PostgreSQL (.ci/postgres.sh)")
        pytest.skip("LOSSTUNE_TEST_PG_URL is not set (source .ci/postgres.sh to run the PostgreSQL tests)")
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"losstune_fence_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def storage(url, monkeypatch):
    """The storage as losstune opens it (heartbeats on), with a short heartbeat and grace period."""
    monkeypatch.setenv("LOSSTUNE_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("LOSSTUNE_GRACE_SECONDS", "1.5")
    storage = open_optuna_storage(url)
    yield storage
    storage.engine.dispose()


def new_study(storage: RDBStorage, name: str = "fence") -> tuple[optuna.Study, int]:
    with quiet_optuna():
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    return study, storage.get_study_id_from_name(name)


def running_trial(storage: RDBStorage, study_id: int) -> int:
    trial_id = storage.create_new_trial(study_id)
    assert storage.get_trial(trial_id).state == TrialState.RUNNING
    return trial_id


# ------------------------------------------------------------------------------------- one test per fenced use


def test_storage_engine__RDBStorage_engine(storage, url):
    assert isinstance(getattr(storage, "engine", None), sa.Engine), upgrade_message(
        "RDBStorage.engine", "storage_engine"
    )
    engine = optuna_private.storage_engine(storage)
    assert engine is storage.engine
    assert engine.url.render_as_string(hide_password=False) == make_url(url).render_as_string(hide_password=False)
    # the storage's own database, where Optuna created its tables
    assert sa.inspect(engine).has_table("trials")


def test_silent_running_trial_ids__rdb_models_TrialModel_TrialHeartbeatModel(storage):
    try:
        from optuna.storages._rdb import models
    except ImportError:
        pytest.fail(upgrade_message("optuna.storages._rdb.models", "silent_running_trial_ids"))
    for model, columns in (
        ("TrialModel", ("trial_id", "study_id", "state")),
        ("TrialHeartbeatModel", ("trial_id", "trial_heartbeat_id")),
    ):
        cls = getattr(models, model, None)
        assert cls is not None, upgrade_message(f"optuna.storages._rdb.models.{model}", "silent_running_trial_ids")
        for column in columns:
            assert hasattr(cls, column), upgrade_message(f"{model}.{column}", "silent_running_trial_ids")

    _, study_id = new_study(storage)
    _, other_id = new_study(storage, "other")
    silent = running_trial(storage, study_id)
    beating = running_trial(storage, study_id)
    storage.record_heartbeat(beating)
    finished = running_trial(storage, study_id)
    storage.set_trial_state_values(finished, TrialState.COMPLETE, [1.0])
    running_trial(storage, other_id)  # another study's silent trial

    assert optuna_private.silent_running_trial_ids(storage, study_id) == [silent]
    assert adopt_silent_trials(storage, study_id) == 1
    assert optuna_private.silent_running_trial_ids(storage, study_id) == []
    assert len(optuna_private.silent_running_trial_ids(storage, other_id)) == 1


def test_stale_trial_ids__RDBStorage_get_stale_trial_ids(storage):
    assert callable(getattr(storage, "_get_stale_trial_ids", None)), upgrade_message(
        "RDBStorage._get_stale_trial_ids", "stale_trial_ids"
    )
    study, study_id = new_study(storage)
    _, other_id = new_study(storage, "other")
    dead = running_trial(storage, study_id)
    storage.record_heartbeat(dead)
    other_dead = running_trial(storage, other_id)
    storage.record_heartbeat(other_dead)
    never_beat = running_trial(storage, study_id)
    time.sleep(3.0)  # past the 1.5 s grace period, also at SQLite's one-second clock
    alive = running_trial(storage, study_id)
    storage.record_heartbeat(alive)

    stale = optuna_private.stale_trial_ids(storage, study_id)
    assert stale == [dead], (stale, {"dead": dead, "never_beat": never_beat, "alive": alive})
    assert optuna_private.stale_trial_ids(storage, other_id) == [other_dead]
    # and what losstune then does with it, through the public API: failed with its reason, no longer stale
    assert fail_stale_trial(storage, dead, "stale", "no heartbeat")
    failed = study.get_trials(deepcopy=False)[storage.get_trial_number_from_id(dead)]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs == {"failure": "stale", "failure_reason": "no heartbeat"}
    assert optuna_private.stale_trial_ids(storage, study_id) == []
    assert not fail_stale_trial(storage, dead, "stale", "again")  # finished already: False, not an error


def test_study_in_database__studies_table_study_name(url):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert not optuna_private.study_in_database(conn, "fence")  # no tables at all
            assert sa.inspect(conn).get_table_names() == []  # and none created by asking
        storage = open_optuna_storage(url)
        try:
            with engine.connect() as conn:
                columns = {c["name"] for c in sa.inspect(conn).get_columns(optuna_private.STUDIES_TABLE)}
            assert optuna_private.STUDY_NAME_COLUMN in columns, upgrade_message(
                f"the {optuna_private.STUDIES_TABLE} table's {optuna_private.STUDY_NAME_COLUMN} column",
                "study_in_database",
            )
            with engine.connect() as conn:
                assert not optuna_private.study_in_database(conn, "fence")  # tables, no study
            new_study(storage, "fence")
            new_study(storage, "fence's neighbour")
            with engine.connect() as conn:
                assert optuna_private.study_in_database(conn, "fence")
                assert optuna_private.study_in_database(conn, "fence's neighbour")
                assert not optuna_private.study_in_database(conn, "fenc")
                assert not optuna_private.study_in_database(conn, "fence%")
            assert study_exists(url, "fence") and not study_exists(url, "absent")
        finally:
            storage.engine.dispose()
    finally:
        engine.dispose()


def test_public_ids_match_optunas_own(storage):
    """The public lookups that replaced ``study._study_id`` and ``trial._trial_id`` give Optuna's own ids."""
    study, study_id = new_study(storage)
    new_study(storage, "other")
    assert study_id == study._study_id
    with quiet_optuna():
        trials = [study.ask() for _ in range(3)]
    for trial in trials:
        assert storage.get_trial_id_from_study_id_trial_number(study_id, trial.number) == trial._trial_id


# --------------------------------------------------------------------------------- no private name elsewhere

# a name starting with "_" reached through optuna (optuna.storages._rdb, optuna._imports, ...)
OPTUNA_PATH = re.compile(r"\boptuna(?:\.\w+)*\._\w")
# Optuna's private attributes on its objects, whatever the variable is called (our own self._x are ours)
PRIVATE_ATTRIBUTE = re.compile(
    r"(?<!\bself)(?<!\bcls)\._(?:rdb|storage|study_id|trial_id|get_stale_trial_ids|cached_storage|thread_local"
    r"|version_manager|heartbeat)\b"
)
# SQL on Optuna's tables, and their names as string literals
OPTUNA_TABLES = (
    r"(?:studies|trials|trial_heartbeats|trial_params|trial_values|trial_intermediate_values|trial_user_attributes"
    r"|trial_system_attributes|study_directions|study_user_attributes|study_system_attributes|version_info"
    r"|alembic_version)"
)
OPTUNA_SQL = re.compile(rf"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+[\"`]?{OPTUNA_TABLES}\b")
OPTUNA_TABLE_LITERAL = re.compile(
    r"[\"'](?:studies|trial_heartbeats|trial_values|trial_intermediate_values|trial_user_attributes"
    r"|trial_system_attributes|study_directions|study_user_attributes|study_system_attributes|version_info"
    r"|alembic_version)[\"']"
)
PATTERNS = (OPTUNA_PATH, PRIVATE_ATTRIBUTE, OPTUNA_SQL, OPTUNA_TABLE_LITERAL)


def private_optuna_uses(path: Path) -> list[str]:
    """Every line of ``path`` that reaches Optuna's private API, as ``path:line: text``."""
    text = path.read_text(encoding="utf-8")
    where = path.relative_to(ROOT)
    found = [
        f"{where}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if any(pattern.search(line) for pattern in PATTERNS)
    ]
    # imports over several lines: from optuna.x import (\n _private,\n)
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optuna":
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private or any(part.startswith("_") for part in (node.module or "").split(".")):
                found.append(
                    f"{where}:{node.lineno}: from {node.module} import {', '.join(a.name for a in node.names)}"
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "optuna" and any(part.startswith("_") for part in parts):
                    found.append(f"{where}:{node.lineno}: import {alias.name}")
    return sorted(set(found))


def test_no_private_optuna_name_outside_the_fence():
    files = sorted(p for top in ("search", "objectives") for p in (ROOT / top).rglob("*.py") if p != FENCE)
    assert len(files) > 50  # the tree was found
    uses = [use for path in files for use in private_optuna_uses(path)]
    assert not uses, f"Optuna's private API outside {FENCE_NAME} (move it into the fence, with a test):\n" + "\n".join(
        uses
    )


def test_the_grep_finds_the_fenced_uses():
    """The patterns above find what the fence holds (the grep test is not vacuous), and each fenced function has a
    test of its own here."""
    uses = "\n".join(private_optuna_uses(FENCE))
    for needle in ("optuna.storages._rdb", "._get_stale_trial_ids", '"studies"'):
        assert needle in uses, (needle, uses)
    fenced = [
        name
        for name, value in vars(optuna_private).items()
        if callable(value) and getattr(value, "__module__", None) == optuna_private.__name__
    ]
    assert sorted(fenced) == ["silent_running_trial_ids", "stale_trial_ids", "storage_engine", "study_in_database"]
    tests = [name for name in globals() if name.startswith("test_")]
    for name in fenced:
        assert any(t.startswith(f"test_{name}__") for t in tests), f"no test_{name}__<private API> in this file"
    assert all(optuna_private.__dict__[name].__doc__ for name in fenced)
