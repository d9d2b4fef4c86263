"""The weekly budget: a ledger of trial slots, reserved before a trial starts.

Optuna's ``n_trials`` and ``MaxTrialsCallback`` count per call or per study and are checked after a trial, so
workers overshoot. Here a slot ``(study, ISO week, n)`` is a row with a primary key: a worker reserves the first
free ``n < budget`` with an INSERT, and the database's uniqueness makes that atomic across processes and across
machines sharing one PostgreSQL. Slots are never given back once a trial has started: failed and crashed trials
cost compute and count. The same database holds the grid-point claims (one row per point and attempt), so two
workers never run the same configuration, and the workers' check-ins, so that a worker takes only its share of a
phase's points when others are there to run the rest (:meth:`BudgetLedger.live_workers`).

A claim records the trial that ran its point. A worker killed between claiming a point and asking Optuna for the
trial leaves a claim without a trial; once it is older than the grace period (``LOSSTUNE_GRACE_SECONDS``, by the
wall clock, not ``LOSSTUNE_NOW``) another worker may take it over, so no point is stuck forever.

The clock is ``LOSSTUNE_NOW`` (an ISO date-time) when set, for tests and back-fills; otherwise local time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from objectives.errors import LosstuneError

log = logging.getLogger(__name__)

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
    sa.Column("claimed_at", sa.String(40), nullable=False),  # wall-clock UTC, ISO
    sa.Column("trial_number", sa.Integer, nullable=True),
)
workers_table = sa.Table(
    "losstune_workers",
    _metadata,
    sa.Column("study", sa.String(256), primary_key=True),
    sa.Column("worker", sa.String(256), primary_key=True),
    sa.Column("seen_at", sa.String(40), nullable=False),  # wall-clock UTC, ISO
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


def _wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _age_seconds(stamp: str) -> float:
    """Seconds since an ISO time stamp (a naive one is local time); unreadable stamps count as very old."""
    try:
        when = dt.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return float("inf")
    if when.tzinfo is None:
        when = when.astimezone()
    return (_wall_clock() - when).total_seconds()


class BudgetLedger:
    """Reserve and count a study's trial slots per ISO week, in the study's own database."""

    def __init__(self, engine: sa.Engine, study: str) -> None:
        self.engine = engine
        self.study = study
        _metadata.create_all(engine, checkfirst=True)
        self._check_claims_table()

    def _check_claims_table(self) -> None:
        """A claims table from before claims recorded their trial is refused, like its studies
        (:func:`search.run.storage.check_study_format`)."""
        from search.run.storage import READS_UNFORMATTED, STUDY_FORMAT

        columns = {c["name"] for c in sa.inspect(self.engine).get_columns(claims_table.name)}
        if "trial_number" not in columns:
            raise LosstuneError(
                f"the storage's {claims_table.name} table was written by losstune before study format "
                f"{STUDY_FORMAT}: use losstune {READS_UNFORMATTED} to read its studies, or start a new storage"
            )

    def spent(self, week: str) -> int:
        with self.engine.connect() as conn:
            q = (
                sa.select(sa.func.count())
                .select_from(slots_table)
                .where(slots_table.c.study == self.study, slots_table.c.week == week)
            )
            return int(conn.execute(q).scalar_one())

    def reserve(self, week: str, budget: int) -> int | None:
        """The slot number reserved for this worker, or None when the week's budget is spent.

        Slots are numbered ``0 .. budget-1``, so at most ``budget`` can exist; the lowest free one is taken, which
        also reuses a number given back by :meth:`release` while another worker held a higher one."""
        with self.engine.connect() as conn:
            taken = set(
                conn.execute(
                    sa.select(slots_table.c.slot).where(slots_table.c.study == self.study, slots_table.c.week == week)
                ).scalars()
            )
        for slot in (n for n in range(budget) if n not in taken):
            row = dict(study=self.study, week=week, slot=slot, worker=worker_id(), reserved_at=now().isoformat())
            try:
                with self.engine.begin() as conn:
                    conn.execute(slots_table.insert().values(**row))
                return slot
            except IntegrityError:
                continue  # another worker took this slot first; try the next one
        return None

    def attach(self, week: str, slot: int, trial_number: int, claim: str | None = None) -> None:
        """Record the trial a slot (and, for a grid point, a claim) was spent on."""
        with self.engine.begin() as conn:
            conn.execute(
                slots_table.update()
                .where(slots_table.c.study == self.study, slots_table.c.week == week, slots_table.c.slot == slot)
                .values(trial_number=trial_number)
            )
            if claim is not None:
                conn.execute(
                    claims_table.update()
                    .where(claims_table.c.study == self.study, claims_table.c.claim == claim)
                    .values(trial_number=trial_number)
                )

    def release(self, week: str, slot: int) -> None:
        """Give back a slot whose trial never started (nothing ran, so nothing is spent)."""
        with self.engine.begin() as conn:
            conn.execute(
                slots_table.delete().where(
                    slots_table.c.study == self.study,
                    slots_table.c.week == week,
                    slots_table.c.slot == slot,
                    slots_table.c.trial_number.is_(None),
                )
            )

    def claim(self, key: str, grace_seconds: float | None = None) -> bool:
        """True if this worker now owns grid point ``key`` (point and attempt); False if another worker does.

        A claim that never got its trial (its worker died before asking Optuna for one) is taken over once it
        is older than ``grace_seconds`` (default: the heartbeat grace period)."""
        me, stamp = worker_id(), _wall_clock().isoformat()
        try:
            with self.engine.begin() as conn:
                conn.execute(claims_table.insert().values(study=self.study, claim=key, worker=me, claimed_at=stamp))
            return True
        except IntegrityError:
            pass
        if grace_seconds is None:
            from search.run.heartbeats import grace_seconds as default_grace

            grace_seconds = default_grace()
        mine = (claims_table.c.study == self.study) & (claims_table.c.claim == key)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(claims_table).where(mine)).mappings().first()
        if row is None or row["trial_number"] is not None or _age_seconds(row["claimed_at"]) <= grace_seconds:
            return False
        # compare-and-swap on the row as read: of two workers taking over at once, one wins
        with self.engine.begin() as conn:
            taken = conn.execute(
                claims_table.update()
                .where(
                    mine,
                    claims_table.c.worker == row["worker"],
                    claims_table.c.claimed_at == row["claimed_at"],
                    claims_table.c.trial_number.is_(None),
                )
                .values(worker=me, claimed_at=stamp)
            ).rowcount
        if taken == 1:
            log.warning(
                "took over grid point %s: claimed by %s at %s, which never started its trial",
                key,
                row["worker"],
                row["claimed_at"],
            )
        return taken == 1

    def check_in(self) -> None:
        """Say that this worker is looking for work now (a row per worker, its time stamp renewed)."""
        me, stamp = worker_id(), _wall_clock().isoformat()
        mine = (workers_table.c.study == self.study) & (workers_table.c.worker == me)
        with self.engine.begin() as conn:
            if conn.execute(workers_table.update().where(mine).values(seen_at=stamp)).rowcount:
                return
        try:
            with self.engine.begin() as conn:
                conn.execute(workers_table.insert().values(study=self.study, worker=me, seen_at=stamp))
        except IntegrityError:  # our own row, inserted meanwhile by this process's other connection: renew it
            with self.engine.begin() as conn:
                conn.execute(workers_table.update().where(mine).values(seen_at=stamp))

    def check_out(self) -> None:
        """This worker stops: it no longer counts in the others' shares."""
        with self.engine.begin() as conn:
            conn.execute(
                workers_table.delete().where(workers_table.c.study == self.study, workers_table.c.worker == worker_id())
            )

    def live_workers(self, window_seconds: float) -> int:
        """How many workers (this one included) checked in within the last ``window_seconds``: at least 1."""
        with self.engine.connect() as conn:
            stamps = conn.execute(
                sa.select(workers_table.c.worker, workers_table.c.seen_at).where(workers_table.c.study == self.study)
            ).all()
        live = {w for w, stamp in stamps if _age_seconds(stamp) <= window_seconds}
        return max(1, len(live | {worker_id()}))
