"""The weekly search end to end: a whole 10-trial default plan on small data, budgets across weeks, resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from objectives.config import LossConfig
from search.run.options import SearchOptions
from search.run.runner import run_search
from search.run.session import StudySession
from search.study.plan import config_key
from search.study.results import plan_trials
from tests.conftest import tiny_study

WEEK1 = "2026-11-18T10:00:00"  # ISO week 2026-W47
WEEK2 = "2026-11-25T10:00:00"  # 2026-W48


def make_study(tmp_path: Path, name: str = "wk", budget: int = 10) -> Path:
    return tiny_study(tmp_path, name, budget=budget)


def search(path: Path, lines: list[str] | None = None, **options) -> int:
    sink = lines if lines is not None else []
    return run_search(path, SearchOptions(progress=False, **options), echo=sink.append)


def load(path: Path) -> StudySession:
    return StudySession(path, with_data=False)


@pytest.fixture
def week1(monkeypatch):
    monkeypatch.setenv("LOSSTUNE_NOW", WEEK1)


def test_whole_default_plan_in_one_week(tmp_path, week1, monkeypatch):
    path = make_study(tmp_path)
    assert search(path) == 0
    session = load(path)
    records = plan_trials(session.study)
    assert Counter(r.phase for r in records) == {"balance": 4, "gamma": 4, "alpha": 2}
    assert all(r.state == "COMPLETE" for r in records)

    balance = [r for r in records if r.phase == "balance"]
    assert {(r.loss.bce_weight, r.loss.focal_weight) for r in balance} == {
        (0.5, 0.5),
        (0.2, 0.8),
        (0.8, 0.2),
        (0.0, 1.0),
    }
    assert all(r.loss.gamma == 3.0 and r.loss.alpha is None for r in balance)
    best_balance = max(balance, key=lambda r: (r.value, -r.number))
    gamma = [r for r in records if r.phase == "gamma"]
    assert sorted(r.loss.gamma for r in gamma) == [1.0, 2.0, 4.0, 5.0]
    for r in gamma:  # phase 2 keeps the best phase-1 balance
        assert (r.loss.bce_weight, r.loss.focal_weight) == (
            best_balance.loss.bce_weight,
            best_balance.loss.focal_weight,
        )
    best_so_far = max([*balance, *gamma], key=lambda r: (r.value, -r.number))
    alpha = [r for r in records if r.phase == "alpha"]
    assert sorted(r.loss.alpha for r in alpha) == [0.25, 0.75]
    assert all(r.loss.gamma == best_so_far.loss.gamma for r in alpha)
    assert len({config_key(r.loss) for r in records}) == 10

    # MLflow: one parent, ten children, each a comparable row
    client = MlflowClient(session.file.tracking_uri)
    exp = client.get_experiment_by_name("wk")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("losstune.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 10
    parent_id = parents[0].info.run_id
    assert session.study.user_attrs["mlflow_parent_run_id"] == parent_id
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent_id
        assert child.info.status == "FINISHED"
        tags = child.data.tags
        assert tags["losstune.week"] == "2026-W47"
        assert tags["losstune.phase"] in {"balance", "gamma", "alpha"}
        assert tags["losstune.data_fingerprint"].startswith("sha256:")
        trial = session.study.trials[int(tags["losstune.trial"])]
        assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
        assert child.data.metrics["cv_score"] == pytest.approx(trial.value)
        for key in (
            "honest_score",
            "threshold",
            "fold_score_0",
            "f1_at_0_5",
            "roc_auc",
            "pr_auc",
            "log_loss",
            "seconds",
        ):
            assert key in child.data.metrics
        for key in ("alpha_pos", "alpha_neg", "gamma", "bce_weight", "focal_weight", "epochs", "lr", "hidden"):
            assert key in child.data.params
        for key in ("alpha_pos", "alpha_neg", "gamma", "bce_weight", "focal_weight"):
            float(child.data.params[key])  # a number for every trial, so that the UI can plot it
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {
            "learning_curves.png",
            "threshold_curves.png",
            "confusion_matrix.json",
            "misclassified.csv",
        } <= artifacts

    table_path = client.download_artifacts(parent_id, "results_table.csv", str(tmp_path / "dl"))
    table = pd.read_csv(table_path)
    assert len(table) == 11  # the ten trials and the week's ensemble of them (search.study.study_ensemble)
    assert list(table.columns[:6]) == ["trial", "phase", "alpha", "gamma", "bce_weight", "focal_weight"]
    assert (table["state"] == "COMPLETE").sum() == 10 and table["state"].iloc[-1] == "ENSEMBLE"
    # the parent run: the study's settings as params, the best trial named and linked
    parent = client.get_run(parent_id)
    assert parent.data.params["study"] == "wk" and parent.data.params["epochs"] == "2"
    assert parent.data.params["plan"] == "balance:grid4 gamma:grid4 alpha:grid2 confirm:confirm2 refine:tpe"
    assert parent.data.params["trials_per_week"] == "10" and parent.data.params["target"] == "label"
    best = max(session.study.trials, key=lambda t: (t.value, -t.number))
    assert parent.data.tags["losstune.best_trial"] == str(best.number)
    assert parent.data.tags["losstune.best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert f"/runs/{best.user_attrs['mlflow_run_id']})" in parent.data.tags["mlflow.note.content"]

    # second run in the same week: nothing trains
    lines: list[str] = []
    assert search(path, lines) == 0
    assert lines == ["budget for 2026-W47 spent: 10/10"]
    assert len(load(path).study.trials) == 10

    # next week confirms the reference and the two best on a fresh seed, then continues with refine
    monkeypatch.setenv("LOSSTUNE_NOW", WEEK2)
    assert search(path, budget=5) == 0
    records = plan_trials(load(path).study)
    week1_records = records[:10]
    top2 = [config_key(r.loss) for r in sorted(week1_records, key=lambda r: (-r.value, r.number))[:2]]
    reference = config_key(LossConfig(gamma=3.0))
    expected = list(dict.fromkeys([reference, *top2]))
    confirm = [r for r in records[10:] if r.phase == "confirm"]
    assert [config_key(r.loss) for r in confirm] == expected
    assert [r.phase for r in records[10:]] == ["confirm"] * len(expected) + ["refine"] * (5 - len(expected))
    earlier_seeds = {r.cv_seed for r in records if r.phase != "confirm"}
    assert earlier_seeds == {0}
    assert {r.cv_seed for r in confirm} == {1000} and all(r.cv["repeats"] == 3 for r in confirm)
    assert all(r.state == "COMPLETE" for r in confirm)
    assert all(r.loss.alpha is not None for r in records[10 + len(expected) :])


def test_stopped_run_resumes_without_duplicates(tmp_path, week1):
    path = make_study(tmp_path, name="resume")
    assert search(path, budget=6) == 0  # stops after trial 6 (this week's budget, given on the command line)
    first = plan_trials(load(path).study)
    assert len(first) == 6
    assert search(path) == 0  # budget.trials_per_week = 10: four more
    records = plan_trials(load(path).study)
    assert len(records) == 10
    assert Counter(r.phase for r in records) == {"balance": 4, "gamma": 4, "alpha": 2}
    keys = [config_key(r.loss) for r in records]
    assert len(set(keys)) == len(keys)


def test_status_reports_table_phase_and_budget(tmp_path, week1, capsys):
    from search.cli import main

    path = make_study(tmp_path, name="st", budget=3)
    assert main(["search", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("balance") >= 3 and "mlflow ui --backend-store-uri sqlite:///" in out
    assert main(["status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["week"] == "2026-W47"
    assert (status["spent"], status["budget"], status["left"]) == (3, 3, 0)
    assert status["phase"] == "balance"
    assert len(status["trials"]) == 3
    assert status["best"]["score"] == max(t["cv_score"] for t in status["trials"])


def test_budget_slots_are_never_overspent_by_racing_reservations(tmp_path, week1):
    from concurrent.futures import ThreadPoolExecutor

    session = load(make_study(tmp_path, name="race"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        slots = list(pool.map(lambda _: session.ledger.reserve("2026-W47", 5), range(20)))
    got = [s for s in slots if s is not None]
    assert sorted(got) == [0, 1, 2, 3, 4]
    assert session.ledger.spent("2026-W47") == 5


def test_changed_data_is_refused_unless_allowed(tmp_path, week1):
    from objectives.errors import LosstuneError

    path = make_study(tmp_path, name="dc", budget=1)
    assert search(path) == 0
    df = pd.read_csv(tmp_path / "data.csv")
    df.loc[0, "num1"] = 123.0
    df.to_csv(tmp_path / "data.csv", index=False)
    with pytest.raises(LosstuneError, match="changed since this study started"):
        search(path, budget=2)
    assert len(load(path).study.trials) == 1
    assert search(path, budget=2, allow_data_change=True) == 0
    study = load(path).study
    assert len(study.trials) == 2
    assert study.trials[1].user_attrs["data_fingerprint"] != study.trials[0].user_attrs["data_fingerprint"]


def test_status_and_export_of_a_study_never_run_create_nothing(tmp_path, capsys):
    from search.cli import main

    path = make_study(tmp_path, name="never")
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in (["status", str(path)], ["export", str(path), "-o", str(tmp_path / "best.yaml")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "run `losstune search` first" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


INVALID_POINT_PLAN = """\
plan:
  - name: focal
    fixed: {gamma: 2}
    grid: [{bce_weight: 0.0, focal_weight: 1.0}]
  - name: weight
    grid: [{alpha: 1.0}, {alpha: 0.5}]
"""
NO_NEGATIVE_LOSS = (
    "alpha=1 with bce_weight=0 gives the negatives no loss at all: use 0 < alpha < 1, or a bce_weight above 0"
)


def test_a_plan_point_is_validated_when_the_step_is_made():
    """Before any budget slot: the step carries its typed loss, or the values LossConfig refuses and why."""
    from search.study.loss_point import InvalidLoss, RefusedLoss, checked
    from search.study.phases import Phase
    from search.study.plan import PlanTrial, pending_steps

    phases = tuple(Phase(**p) for p in yaml.safe_load(INVALID_POINT_PLAN)["plan"])
    (first,) = pending_steps(phases, [], limit=16)
    assert first.loss == LossConfig(gamma=2, bce_weight=0, focal_weight=1)
    done = [PlanTrial(0, "focal", "COMPLETE", first.loss, value=0.5)]
    refused, valid = pending_steps(phases, done, limit=16)
    assert refused.loss == RefusedLoss(alpha=1.0, gamma=2.0, bce_weight=0.0, focal_weight=1.0, reason=NO_NEGATIVE_LOSS)
    with pytest.raises(InvalidLoss, match="gives the negatives no loss"):
        checked(refused.loss)
    assert valid.loss == LossConfig(alpha=0.5, gamma=2, bce_weight=0, focal_weight=1)


def test_an_invalid_point_fails_at_once_with_its_reason_and_the_plan_goes_on(tmp_path, week1):
    from search.study.plan import plan_step
    from search.study.stored_config import CONFIG_ATTR, stored_config

    path = make_study(tmp_path, name="inv", budget=3)
    path.write_text(path.read_text().replace("plan: default\n", INVALID_POINT_PLAN))
    lines: list[str] = []
    assert search(path, lines) == 0
    session = load(path)
    trials = session.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    refused = trials[1].user_attrs
    assert (refused["failure"], refused["failure_reason"]) == ("invalid", f"invalid configuration: {NO_NEGATIVE_LOSS}")
    assert refused["loss"]["alpha"] == 1.0 and CONFIG_ATTR not in refused  # no valid configuration to record
    assert any(
        line.startswith("t001 weight") and f"FAILED: invalid configuration: {NO_NEGATIVE_LOSS}" in line
        for line in lines
    )
    assert stored_config(trials[2]).loss == LossConfig(alpha=0.5, gamma=2, bce_weight=0, focal_weight=1)
    assert plan_step(session.file, plan_trials(session.study)) is None  # the refused point counts as done
    # the next run does not ask the refused point again: matched to its failed trial by its stored values
    assert search(path, budget=5) == 0
    again = load(path).study.get_trials()
    assert len(again) == 3 and [t.user_attrs["loss"]["alpha"] for t in again].count(1.0) == 1
