"""Nothing lost, nobody confused: kill -9 and resume, Ctrl-C, a diverging loss, two searches at once on one
SQLite study, and the pieces that make them safe (abandoned grid claims, trials that never beat a heartbeat).

The subprocess tests run the real ``losstune search`` command, with the heartbeat at 1 s and the grace period at
3 s (``LOSSTUNE_HEARTBEAT_SECONDS`` / ``LOSSTUNE_GRACE_SECONDS``) so that a killed trial goes stale quickly.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from search.run.options import SearchOptions
from search.run.runner import run_search
from search.run.session import STALE_REASON, StudySession
from search.run.storage import quiet_optuna
from search.run.worker import Worker
from search.study.loss_point import loss_point
from search.study.plan import config_key, next_step, pending_steps
from search.study.results import plan_trials
from tests.conftest import tiny_study

WEEK = "2026-11-18T10:00:00"  # ISO week 2026-W47
HEARTBEAT, GRACE = 1, 3


def make_study(tmp_path: Path, name: str, budget: int, rows: int = 240, epochs: int = 2, lr: float = 0.01) -> Path:
    return tiny_study(
        tmp_path, name, budget=budget, rows=rows, model="{hidden: [16], dropout: 0.0}", epochs=epochs, lr=lr
    )


def losstune_command() -> list[str]:
    script = Path(sys.executable).with_name("losstune")
    return [str(script)] if script.exists() else [sys.executable, "-m", "search.cli"]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LOSSTUNE_NOW=WEEK,
        LOSSTUNE_HEARTBEAT_SECONDS=str(HEARTBEAT),
        LOSSTUNE_GRACE_SECONDS=str(GRACE),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def start_search(path: Path, *args: str, flags: tuple[str, ...] = (), **env: str) -> subprocess.Popen:
    """``losstune [flags] search PATH --no-progress [args]`` in the background, output captured."""
    return subprocess.Popen(
        [*losstune_command(), *flags, "search", str(path), "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(**env),
        cwd=path.parent,
        preexec_fn=_default_stop_signals,
    )


def _default_stop_signals() -> None:
    """In the child, before exec: Ctrl-C and SIGTERM as a shell leaves them. A child inherits an ignored signal,
    and Python then keeps ignoring it; in the full suite (two xdist workers) the test process has been seen with
    SIGINT ignored when the Ctrl-C test started, which made that test's losstune deaf to its Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def optuna_db(path: Path) -> Path:
    return path.parent / f"{path.stem}.optuna.db"


def running_trial_with_run(path: Path, number: int, timeout: float = 10.0) -> bool:
    """Trial ``number`` is RUNNING and has its MLflow run (read straight from the SQLite file)."""
    db = optuna_db(path)
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db, timeout=timeout) as conn:
            row = conn.execute(
                "SELECT t.state FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.number = ? AND a.key = 'mlflow_run_id'",
                (number,),
            ).fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return False
    return row is not None and row[0] == "RUNNING"


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"losstune search exited ({proc.returncode}) before the condition held:\n{out}\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for a running trial")


def ledger_rows(path: Path, timeout: float = 5.0) -> list[tuple[int, int | None]]:
    with sqlite3.connect(optuna_db(path), timeout=timeout) as conn:  # path: the study file
        return conn.execute("SELECT slot, trial_number FROM losstune_budget_slots ORDER BY slot").fetchall()


def trial_runs(session: StudySession) -> tuple[MlflowClient, dict[int, object]]:
    client = MlflowClient(session.file.tracking_uri)
    exp = client.get_experiment_by_name(session.file.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, {int(r.data.tags["losstune.trial"]): r for r in runs if r.data.tags.get("losstune.role") == "trial"}


def load(path: Path) -> StudySession:
    return StudySession(path, with_data=False)


@pytest.fixture
def fast_stale(monkeypatch):
    monkeypatch.setenv("LOSSTUNE_NOW", WEEK)
    monkeypatch.setenv("LOSSTUNE_HEARTBEAT_SECONDS", str(HEARTBEAT))
    monkeypatch.setenv("LOSSTUNE_GRACE_SECONDS", str(GRACE))


def trial_states(path: Path, timeout: float = 10.0) -> dict[int, str]:
    """Every trial's state, read straight from the SQLite file (empty while the tables do not exist)."""
    db = optuna_db(path)
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=timeout) as conn:
            return dict(conn.execute("SELECT number, state FROM trials").fetchall())
    except sqlite3.OperationalError:
        return {}


NO_WAIT = 0.0  # for reads while the process is stopped: it never releases a lock it holds, so do not wait for one


def stop_when(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Return with ``proc`` stopped (SIGSTOP) at a moment where ``condition`` holds.

    The condition is checked only while the process is frozen, so the state seen is the state the kill lands on:
    polling a running process races with it (the next batch may reserve its slots between the check and the
    kill, above all on a loaded machine). The condition must read with ``timeout=NO_WAIT``."""

    def holds_while_stopped() -> bool:
        proc.send_signal(signal.SIGSTOP)
        try:
            if condition():
                return True  # left stopped: the caller kills it in this state
        except sqlite3.OperationalError:  # the process was stopped while it held a write lock: look again later
            pass
        proc.send_signal(signal.SIGCONT)
        return False

    wait_for(holds_while_stopped, proc, timeout)


def _kill_then_rerun(path: Path, condition) -> tuple[dict, StudySession]:
    proc = start_search(path)
    stop_when(condition, proc)
    proc.send_signal(signal.SIGKILL)  # a stopped process is killed too
    proc.communicate(timeout=30)
    before = {t.number: t for t in load(path).study.trials}
    time.sleep(GRACE + 1.5)  # stale now (SQLite keeps heartbeats to the second, hence the extra second)
    rerun = start_search(path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out + err
    assert "Traceback" not in err
    return before, load(path)


def _nothing_lost(before: dict, session: StudySession, budget: int) -> None:
    """Every trial told before the kill is untouched, with a FINISHED run holding its score; every trial left
    RUNNING failed as stale and its point ran again; no configuration completed twice; the budget held."""
    trials = session.study.trials
    rows = ledger_rows(session.path)
    assert len(rows) == budget and len(trials) <= budget  # the budget held
    # each slot spent once; a slot may lack its trial number when the kill fell between asking and attaching
    attached = [n for _, n in rows if n is not None]
    assert len(set(attached)) == len(attached) and len(attached) >= budget - 1
    _client, runs = trial_runs(session)
    killed = [n for n, t in before.items() if t.state.name == "RUNNING"]
    assert killed, "the kill should have caught trials in flight"
    for number, old in before.items():
        new = trials[number]
        if old.state.name == "COMPLETE":
            assert new.state.name == "COMPLETE" and new.value == old.value and new.params == old.params
            assert runs[number].info.status == "FINISHED"  # finished by the worker, or by the rerun's repair
            assert runs[number].data.metrics["cv_score"] == pytest.approx(new.value)
        else:
            assert new.state.name == "FAIL" and new.user_attrs["failure"] == "stale"  # lost to a crash: retried
            if number in runs:  # (killed between asking for the trial and creating its run: no run)
                assert runs[number].info.status == "FAILED"
                assert runs[number].data.tags["losstune.failure_reason"] == STALE_REASON
    retried = {config_key(loss_point(t.user_attrs["loss"])) for t in trials[len(before) :]}
    # the next batch is asked while this one is still being recorded, so the kill may land on a trial asked and not
    # yet given its attrs: it has no loss to compare (and no params), and its point is planned afresh
    for n in killed:
        if "loss" not in before[n].user_attrs:
            assert not trials[n].params and trials[n].user_attrs["failure"] == "stale"
    killed_points = {
        config_key(loss_point(before[n].user_attrs["loss"])) for n in killed if "loss" in before[n].user_attrs
    }
    assert killed_points & retried  # the killed points run again
    complete = [config_key(loss_point(t.user_attrs["loss"])) for t in trials if t.state.name == "COMPLETE"]
    assert len(set(complete)) == len(complete)
    for number in range(len(before), len(trials)):
        assert trials[number].state.name == "COMPLETE" and runs[number].info.status == "FINISHED"


@pytest.mark.slow
def test_kill_9_while_a_batch_trains_then_rerun_retries_only_its_points(tmp_path, fast_stale):
    """The balance phase (4 points) is one batch, recorded; the gamma phase's 4 points are killed before any
    is told, before the alpha batch (planned from their results) reserves its slots. The rerun keeps the first four,
    fails every killed trial and spends the slots left of 12 on the killed gamma points (second attempts)."""
    path = make_study(tmp_path, "crash", budget=12, rows=1000, epochs=100)  # a batch trains for seconds
    # the balance phase in a run of its own: in one run its recording overlaps the gamma batch's training, and
    # on a loaded machine may still be going on when the alpha batch reserves its slots (no moment to kill)
    first = start_search(path, "--budget", "4")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err

    def gamma_batch_untold() -> bool:
        states = trial_states(path, NO_WAIT)
        # ... and the alpha batch not yet started: its slots would leave the rerun nothing to retry with
        return (
            [states.get(n) for n in range(8)] == ["COMPLETE"] * 4 + ["RUNNING"] * 4
            and running_trial_with_run(path, 7, NO_WAIT)
            and len(ledger_rows(path, NO_WAIT)) == 8
        )

    before, session = _kill_then_rerun(path, gamma_batch_untold)
    assert [before[n].state.name for n in range(8)] == ["COMPLETE"] * 4 + ["RUNNING"] * 4
    _nothing_lost(before, session, budget=12)
    trials = session.study.trials
    killed_gamma = {config_key(loss_point(before[n].user_attrs["loss"])) for n in range(4, 8)}
    for t in trials[len(before) :]:  # only the killed gamma points ran again
        assert t.user_attrs["phase"] == "gamma" and config_key(loss_point(t.user_attrs["loss"])) in killed_gamma


@pytest.mark.slow
def test_kill_9_while_a_batch_is_being_recorded_keeps_every_told_trial(tmp_path, fast_stale):
    """Killed after some trials of the first batch were told and before the others: the told ones stay, the
    others are retried."""
    path = make_study(tmp_path, "recording", budget=12, rows=1000, epochs=30)

    def part_told() -> bool:
        states = [trial_states(path, NO_WAIT).get(n) for n in range(4)]
        return "COMPLETE" in states and "RUNNING" in states

    before, session = _kill_then_rerun(path, part_told)
    assert {before[n].state.name for n in range(4)} == {"COMPLETE", "RUNNING"}
    _nothing_lost(before, session, budget=12)
    balance = [t for t in session.study.trials if t.user_attrs.get("phase") == "balance" and t.state.name == "COMPLETE"]
    assert len(balance) == 4  # every balance point complete once


def test_sigterm_while_the_last_batch_is_recorded_still_records_all_of_it(tmp_path, fast_stale):
    """``kill PID`` after the week's last batch finished training, while its trials are being written: the search
    stops only once every one of them is told COMPLETE with its run FINISHED (a SIGTERM that cut the recorder's
    drain short would leave trials that finished training RUNNING, to go stale and be trained again). One grid
    phase of 12 points is one batch, so the drain lasts seconds and the signal lands in the middle of it."""
    points = ", ".join(f"{{gamma: {g}}}" for g in (0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6))
    path = tiny_study(
        tmp_path,
        "sigterm",
        budget=12,
        rows=1000,
        model="{hidden: [16], dropout: 0.0}",
        epochs=30,
        plan=f"  - {{name: wide, grid: [{points}]}}\n",
    )

    def early_in_the_drain() -> bool:
        states = Counter(trial_states(path, NO_WAIT).values())
        return states["COMPLETE"] >= 3 and states["RUNNING"] >= 6

    proc = start_search(path)
    stop_when(early_in_the_drain, proc)
    proc.send_signal(signal.SIGTERM)  # delivered when the process continues, in the middle of the recording
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)

    assert "Traceback" not in err
    # the budget is spent and the plan has no more points, so the search was ending anyway: it ends normally
    # (130 if the signal landed before the worker began to wait for its recorder)
    assert proc.returncode in (0, 130), out + err
    session = load(path)
    _client, runs = trial_runs(session)
    assert [t.state.name for t in session.study.trials] == ["COMPLETE"] * 12
    assert all(runs[n].info.status == "FINISHED" for n in range(12))
    assert len(ledger_rows(path)) == 12


@pytest.mark.slow
def test_ctrl_c_marks_the_current_batch_and_exits_130(tmp_path, fast_stale):
    # 2000 epochs: a training of tens of seconds, which the interrupt cuts short at once. A short one could end
    # between two looks of a slow poll (a loaded machine), and the look after it would see the recording instead.
    path = make_study(tmp_path, "ctrlc", budget=3, rows=1000, epochs=2000)

    def batch_training() -> bool:
        """All three trials have their run and none has its score logged (a trial's metrics are written first,
        once its training is over): the batch is training, not being recorded. A Ctrl-C that landed during the
        recording of the week's last batch would (rightly) let it finish: a race this test must not depend on."""
        if not all(running_trial_with_run(path, n, NO_WAIT) for n in range(3)):
            return False
        with sqlite3.connect(path.parent / "mlflow.db", timeout=NO_WAIT) as conn:
            return conn.execute("SELECT COUNT(*) FROM metrics WHERE key = 'cv_score'").fetchone()[0] == 0

    proc = start_search(path)
    stop_when(batch_training, proc)
    proc.send_signal(signal.SIGINT)  # delivered when the process continues
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "losstune search: interrupted"
    assert (
        "interrupted: 0 trial(s) complete and 0 failed in this run; trial(s) 0, 1, 2 marked FAILED (interrupted)" in out
    )
    assert "budget 3/3 used in 2026-W47" in out

    session = load(path)
    trials = session.study.trials
    assert len(trials) == 3
    client, runs = trial_runs(session)
    for trial in trials:
        assert trial.state.name == "FAIL"
        assert trial.user_attrs["failure"] == "interrupted"
        assert runs[trial.number].info.status == "KILLED"
        assert runs[trial.number].data.tags["losstune.failure_reason"] == "interrupted (Ctrl-C)"
    assert client.get_run(session.study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"
    # the next run retries the same configurations (second attempts of the same grid points)
    step = next_step(session.phases, plan_trials(session.study))
    assert step.loss == loss_point(trials[0].user_attrs["loss"]) and step.attempt == 1


def test_diverging_trials_fail_with_the_reason_and_the_search_goes_on(tmp_path, fast_stale):
    path = make_study(tmp_path, "nan", budget=2, lr=1e30)  # Adam steps of 1e30: the loss is inf/NaN at once
    lines: list[str] = []
    assert run_search(path, SearchOptions(progress=False), echo=lines.append) == 0
    session = load(path)
    trials = session.study.trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # the search went on after the first
    for t in trials:
        assert t.user_attrs["failure"] == "diverged"
        assert "training diverged" in t.user_attrs["failure_reason"]
    _, runs = trial_runs(session)
    for number, run in runs.items():
        assert run.info.status == "FAILED"
        assert run.data.tags["losstune.failure_reason"] == trials[number].user_attrs["failure_reason"]
    assert sum("FAILED: training diverged" in line for line in lines) == 2
    # a diverged point is a finished outcome: the plan moves on to the third point, it does not retry
    step = next_step(session.phases, plan_trials(session.study))
    assert step.attempt == 0 and config_key(step.loss) not in {
        config_key(loss_point(t.user_attrs["loss"])) for t in trials
    }


@pytest.mark.slow
def test_two_searches_at_once_on_one_sqlite_study(tmp_path, fast_stale):
    path = make_study(tmp_path, "twice", budget=6)
    procs = [start_search(path), start_search(path)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, out + err
        assert "Traceback" not in err and "locked" not in err + out

    session = load(path)
    trials = session.study.trials
    assert len(trials) == 6  # the week's budget, not 2 x 6
    assert all(t.state.name == "COMPLETE" for t in trials)
    keys = [config_key(loss_point(t.user_attrs["loss"])) for t in trials]
    assert len(set(keys)) == 6  # no configuration run twice
    assert Counter(t.user_attrs["phase"] for t in trials) == {"balance": 4, "gamma": 2}
    # (a batch holds a whole phase, so one process may find every point claimed by the other and only wait:
    # what must hold is that together they spend the budget once and run each point once)
    assert sorted(n for _, n in ledger_rows(path)) == list(range(6))

    _client, runs = trial_runs(session)
    assert sorted(runs) == list(range(6))
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs.values()}
    assert parents == {session.study.user_attrs["mlflow_parent_run_id"]}  # one parent run, not one per process
    assert all(r.info.status == "FINISHED" for r in runs.values())


def test_an_abandoned_grid_claim_is_taken_over_after_the_grace_period(tmp_path, fast_stale):
    path = make_study(tmp_path, "claim", budget=1)
    session = StudySession(path)
    step = next_step(session.phases, plan_trials(session.study))
    ledger = session.ledger
    assert ledger.claim(step.claim)  # a worker claims the point, then dies before asking Optuna for the trial
    assert not ledger.claim(step.claim)  # while it is fresh, nobody else may take it
    with ledger.engine.begin() as conn:  # ... GRACE seconds later
        conn.exec_driver_sql(
            "UPDATE losstune_grid_claims SET claimed_at = '2000-01-01T00:00:00+00:00', worker = 'gone:1'"
        )
    assert run_search(path, SearchOptions(progress=False, timeout=60), echo=lambda _: None) == 0
    session = load(path)
    (trial,) = session.study.trials
    assert trial.state.name == "COMPLETE" and loss_point(trial.user_attrs["loss"]) == step.loss
    with ledger.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT claim, trial_number FROM losstune_grid_claims").fetchall()
    assert rows == [(step.claim, 0)]  # the claim now records the trial that ran the point
    # a claim with its trial is never taken over, however old
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE losstune_grid_claims SET claimed_at = '2000-01-01T00:00:00+00:00'")
    assert not ledger.claim(step.claim)


def test_workers_looking_for_work_share_a_phase_and_old_check_ins_do_not_count(tmp_path, fast_stale):
    """A worker takes ceil(points / live workers) of a phase, so that a second machine is not left waiting while
    the first trains every point; a worker that stopped checking in (killed) no longer counts after the window."""
    path = make_study(tmp_path, "share", budget=4)
    session = StudySession(path)
    worker = Worker(session, SearchOptions(progress=False), "2026-W47", parent_run_id="none", echo=lambda _: None)
    ledger = session.ledger
    ledger.check_in()
    assert ledger.live_workers(window_seconds=GRACE) == 1
    assert len(worker._my_share(_balance_steps(session))) == 4  # alone: the whole phase in one job
    now = dt.datetime.now(dt.timezone.utc)
    with ledger.engine.begin() as conn:
        for name, age in (("other:1", 0.0), ("other:2", 0.0), ("killed:3", 600.0)):
            stamp = (now - dt.timedelta(seconds=age)).isoformat()
            conn.exec_driver_sql(f"INSERT INTO losstune_workers VALUES ('share', '{name}', '{stamp}')")
    assert ledger.live_workers(window_seconds=60) == 3
    assert len(worker._my_share(_balance_steps(session))) == 2  # ceil(4 / 3)
    ledger.check_out()
    ledger.check_in()  # renewing a check-in is one row, not two
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM losstune_workers").scalar_one() == 4


def _balance_steps(session):
    return pending_steps(session.phases, plan_trials(session.study), limit=16)


def test_a_trial_that_never_beat_and_its_unlinked_run_are_failed(tmp_path, fast_stale):
    """A worker killed right after ``ask`` (no heartbeat yet) and after creating its MLflow run, before linking
    it to the trial: both are still closed once stale."""
    path = make_study(tmp_path, "silent", budget=2)
    assert run_search(path, SearchOptions(progress=False, budget=1), echo=lambda _: None) == 0
    session = StudySession(path)
    tracker = session.tracker()
    with quiet_optuna():
        trial = session.study.ask()  # RUNNING, no heartbeat
    config = session.file.trial_config()
    parent = session.study.user_attrs["mlflow_parent_run_id"]
    run_id = tracker.start_trial(parent, trial.number, "balance", "2026-W47", config, "sha256:x")
    assert session.reconcile_stale(tracker) == 0  # first sighting: its grace period starts now
    assert session.study.trials[trial.number].state.name == "RUNNING"
    time.sleep(GRACE + 1.5)  # SQLite keeps heartbeat times to the second, hence the extra second
    assert session.reconcile_stale(tracker) == 1
    assert session.study.trials[trial.number].state.name == "FAIL"
    assert session.study.trials[trial.number].user_attrs["failure"] == "stale"
    assert session.study.trials[trial.number].user_attrs["failure_reason"] == STALE_REASON
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["losstune.failure_reason"] == STALE_REASON


def test_heartbeat_settings_are_checked(monkeypatch):
    from objectives.errors import LosstuneError
    from search.run.heartbeats import grace_seconds, heartbeat_seconds

    monkeypatch.setenv("LOSSTUNE_HEARTBEAT_SECONDS", "2")
    monkeypatch.setenv("LOSSTUNE_GRACE_SECONDS", "5")
    assert (heartbeat_seconds(), grace_seconds()) == (2, 5)
    monkeypatch.setenv("LOSSTUNE_GRACE_SECONDS", "2")
    with pytest.raises(LosstuneError, match="must be longer than the heartbeat"):
        grace_seconds()
    monkeypatch.setenv("LOSSTUNE_HEARTBEAT_SECONDS", "soon")
    with pytest.raises(LosstuneError, match="valid number"):
        heartbeat_seconds()


def test_a_slot_given_back_below_another_is_reused(tmp_path, fast_stale):
    """Worker A reserves slot 0, worker B slot 1, A's claim fails and it gives slot 0 back: the budget of 3 still
    allows three trials (slots 0, 1, 2), not two."""
    session = load(make_study(tmp_path, "gap", budget=3))
    ledger = session.ledger
    assert [ledger.reserve("2026-W47", 3), ledger.reserve("2026-W47", 3)] == [0, 1]
    ledger.release("2026-W47", 0)
    assert [ledger.reserve("2026-W47", 3), ledger.reserve("2026-W47", 3), ledger.reserve("2026-W47", 3)] == [0, 2, None]
    assert ledger.spent("2026-W47") == 3


@pytest.mark.slow
def test_kill_9_during_the_weeks_last_trial_then_budget_spent_runs_repair_the_parent_run(tmp_path, fast_stale):
    """The killed trial was the week's last: later runs only say the budget is spent, yet they still close the
    trial's run and the study's parent run, which would otherwise stay RUNNING for good."""
    path = make_study(tmp_path, "lastslot", budget=2, rows=1000, epochs=30)
    proc = start_search(path)
    wait_for(lambda: running_trial_with_run(path, 1), proc)  # trial 1 holds the week's last slot
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    # the two grid points may train as one batch: then both were in flight
    in_flight = [t.number for t in load(path).study.trials if t.state.name == "RUNNING"]

    early = start_search(path)  # within the grace period: the trial may still be alive, nothing is touched
    out, err = early.communicate(timeout=120)
    assert (early.returncode, err) == (0, "")
    assert out.strip().splitlines()[-1] == "budget for 2026-W47 spent: 2/2"
    session = load(path)
    assert session.study.trials[1].state.name == "RUNNING"
    parent_id = session.study.user_attrs["mlflow_parent_run_id"]
    client, _ = trial_runs(session)
    assert client.get_run(parent_id).info.status == "RUNNING"

    time.sleep(GRACE + 1.5)
    rerun = start_search(path)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0 and "Traceback" not in err, out + err
    assert out.splitlines()[1:] == [  # after the line saying what it opens
        f"closed {len(in_flight)} MLflow run(s) left RUNNING by stopped workers",
        "closed the study's MLflow parent run, left RUNNING by a stopped search",
        "budget for 2026-W47 spent: 2/2",
    ]
    session = load(path)
    killed = session.study.trials[1]
    assert killed.state.name == "FAIL"
    assert (killed.user_attrs["failure"], killed.user_attrs["failure_reason"]) == ("stale", STALE_REASON)
    client, runs = trial_runs(session)
    for number in (0, 1):
        if number in in_flight:
            assert runs[number].info.status == "FAILED"
            assert runs[number].data.tags["losstune.failure_reason"] == STALE_REASON
        else:
            assert runs[number].info.status == "FINISHED"
    assert client.get_run(parent_id).info.status == "FAILED"

    again = start_search(path)  # nothing left to repair
    out, err = again.communicate(timeout=120)
    assert (again.returncode, out.strip().splitlines()[-1], err) == (0, "budget for 2026-W47 spent: 2/2", "")
