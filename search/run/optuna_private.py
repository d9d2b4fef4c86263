"""The fence: every use of Optuna's private or undocumented API, in this one module.

Everything else in ``search/`` uses Optuna's public API only (``tests/test_optuna_fence.py`` greps for it:
no ``optuna...._name``, ``._rdb``, ``._storage``, ``._study_id``, ``._trial_id`` and no SQL on Optuna's tables
outside this file). Each function here says why no public API serves and what an Optuna upgrade may break; each
has a test of its own in ``tests/test_optuna_fence.py``, run against a real :class:`optuna.storages.RDBStorage`
on SQLite and on PostgreSQL, named after the private API it relies on, so that an upgrade that changes it fails
by name. Checked against Optuna 5.1.

Public API used elsewhere instead of private names (for reference):

* a study's id: ``storage.get_study_id_from_name(name)`` (not ``study._study_id``);
* a trial's id: ``storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)`` (not
  ``trial._trial_id``);
* heartbeats: ``RDBStorage(heartbeat_interval=..., grace_period=...)`` and ``storage.record_heartbeat(trial_id)``;
* failing a trial: ``storage.set_trial_user_attr`` and ``storage.set_trial_state_values`` (with
  :class:`optuna.exceptions.UpdateFinishedTrialError` when another process finished it first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import orm

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

# Optuna's table of studies and its name column (its schema, ``optuna/storages/_rdb/models.py``: StudyModel)
STUDIES_TABLE = "studies"
STUDY_NAME_COLUMN = "study_name"


def storage_engine(storage: RDBStorage) -> sa.Engine:
    """The SQLAlchemy engine an :class:`~optuna.storages.RDBStorage` opened (its ``engine`` attribute).

    Why: the budget ledger keeps its tables in the study's own database and shares the storage's connection pool
    (one pool per process, the storage's ``engine_kwargs`` such as SQLite's lock time-out). ``engine`` has no
    underscore but is not documented: Optuna's public API gives no engine. An upgrade may rename it or stop
    creating the engine in the constructor; the ledger would then have to open its own engine from the URL."""
    return storage.engine


def silent_running_trial_ids(storage: RDBStorage, study_id: int) -> list[int]:
    """The ids of the study's RUNNING trials that have no heartbeat recorded at all.

    Why: Optuna only ever counts a trial as stale once it has seen a heartbeat of it; a worker killed between
    asking for a trial and its first heartbeat leaves that trial RUNNING forever. Whether a trial has a heartbeat
    is not in the public API (``FrozenTrial`` does not carry it), so this reads Optuna's ORM models
    (``optuna.storages._rdb.models``: ``TrialModel`` and ``TrialHeartbeatModel``, with their ``trial_id``,
    ``study_id``, ``state`` and ``trial_heartbeat_id`` columns). An upgrade that moves the module, renames a
    model or a column, or changes how heartbeats are stored breaks this query."""
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    trials, beats = models.TrialModel, models.TrialHeartbeatModel
    query = (
        sa.select(trials.trial_id)
        .outerjoin(beats, beats.trial_id == trials.trial_id)
        .where(trials.study_id == study_id, trials.state == TrialState.RUNNING, beats.trial_heartbeat_id.is_(None))
        .order_by(trials.trial_id)
    )
    with orm.Session(storage_engine(storage)) as session:
        return list(session.scalars(query))


def stale_trial_ids(storage: RDBStorage, study_id: int) -> list[int]:
    """The ids of the study's RUNNING trials whose last heartbeat is older than the storage's grace period.

    Why: the public ``optuna.storages.fail_stale_trials(study)`` finds these trials and fails them at once, with
    the state only. losstune must first close their MLflow runs and give them the ``failure`` and
    ``failure_reason`` user attrs every failed trial has (a finished trial takes no more attrs), so it needs the
    ids before anything is failed: ``RDBStorage._get_stale_trial_ids(study_id)``, the method
    ``fail_stale_trials`` itself calls. An upgrade that renames it, changes its signature or moves the stale
    test elsewhere breaks this."""
    return list(storage._get_stale_trial_ids(study_id))


def study_in_database(conn: sa.Connection, study: str) -> bool:
    """Whether the database behind ``conn`` holds an Optuna study named ``study``, read without writing.

    Why: the public ways to ask (``optuna.get_all_study_names``, ``storage.get_study_id_from_name``) need an
    :class:`~optuna.storages.RDBStorage`, and opening one creates the SQLite file and Optuna's tables, and may
    take the schema's lock. ``losstune status`` and a search whose week is spent must not write, so this reads
    Optuna's ``studies`` table (column ``study_name``) with SQL. A database without that table holds no study.
    An upgrade that renames the table or the column breaks this."""
    if not sa.inspect(conn).has_table(STUDIES_TABLE):
        return False
    table = sa.table(STUDIES_TABLE, sa.column(STUDY_NAME_COLUMN))
    query = sa.select(sa.literal(1)).select_from(table).where(table.c[STUDY_NAME_COLUMN] == study).limit(1)
    return conn.execute(query).first() is not None
