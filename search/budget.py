"""The weekly budget: a ledger of trial slots, reserved before a trial starts.

Optuna's ``n_trials`` and ``MaxTrialsCallback`` count per call or per study and are checked after a trial, so
workers overshoot. Here a slot ``(study, ISO week, n)`` is a row with a primary key: a worker reserves the first
free ``n < budget`` with an INSERT, and the database's uniqueness makes that atomic across processes and across
machines sharing one PostgreSQL. Slots are never given back once a trial has started: failed and crashed trials
cost compute and count. The same database holds the grid-point claims (one row per point and attempt), so two
workers never run the same configuration.

The clock is ``LOSSTUNE_NOW`` (an ISO date-time) when set, for tests and back-fills; otherwise local time.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from objectives.errors import LosstuneError

_metadata = sa.MetaData()
slots_table = sa.Table(
    "losstune_budget_slots",
    _metadata,
    sa.Column("study", sa.String(256), primary_key=True),
    sa.Column("week", sa.String(16), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("worker", sa.String(256), nullable=False),
    sa.Column("reserved_at", sa.String(40), nullable=False),
    sa.Column("trial_number", sa.Integer, nullable=True),
)
claims_table = sa.Table(
    "losstune_grid_claims",
    _metadata,
    sa.Column("study", sa.String(256), primary_key=True),
    sa.Column("claim", sa.String(512), primary_key=True),
    sa.Column("worker", sa.String(256), nullable=False),
    sa.Column("claimed_at", sa.String(40), nullable=False),
)


def now() -> dt.datetime:
    text = os.environ.get("LOSSTUNE_NOW")
    if not text:
        return dt.datetime.now().astimezone()
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise LosstuneError(f"LOSSTUNE_NOW={text!r} is not an ISO date-time (e.g. 2026-11-23T09:00)") from None


def iso_week(when: dt.datetime | None = None) -> str:
    year, week, _ = (when or now()).isocalendar()
    return f"{year}-W{week:02d}"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class BudgetLedger:
    """Reserve and count a study's trial slots per ISO week, in the study's own database."""

    def __init__(self, engine: sa.Engine, study: str) -> None:
        self.engine = engine
        self.study = study
        _metadata.create_all(engine, checkfirst=True)

    def spent(self, week: str) -> int:
        with self.engine.connect() as conn:
            q = sa.select(sa.func.count()).select_from(slots_table).where(
                slots_table.c.study == self.study, slots_table.c.week == week
            )
            return int(conn.execute(q).scalar_one())

    def reserve(self, week: str, budget: int) -> int | None:
        """The slot number reserved for this worker, or None when the week's budget is spent."""
        for slot in range(self.spent(week), budget):
            row = dict(study=self.study, week=week, slot=slot, worker=worker_id(), reserved_at=now().isoformat())
            try:
                with self.engine.begin() as conn:
                    conn.execute(slots_table.insert().values(**row))
                return slot
            except IntegrityError:
                continue  # another worker took this slot first; try the next one
        return None

    def attach(self, week: str, slot: int, trial_number: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                slots_table.update()
                .where(slots_table.c.study == self.study, slots_table.c.week == week, slots_table.c.slot == slot)
                .values(trial_number=trial_number)
            )

    def release(self, week: str, slot: int) -> None:
        """Give back a slot whose trial never started (nothing ran, so nothing is spent)."""
        with self.engine.begin() as conn:
            conn.execute(
                slots_table.delete().where(
                    slots_table.c.study == self.study, slots_table.c.week == week, slots_table.c.slot == slot,
                    slots_table.c.trial_number.is_(None),
                )
            )  # fmt: skip

    def claim(self, key: str) -> bool:
        """True if this worker now owns grid point ``key`` (point and attempt); False if another worker does."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    claims_table.insert().values(study=self.study, claim=key, worker=worker_id(), claimed_at=now().isoformat())
                )
            return True
        except IntegrityError:
            return False
