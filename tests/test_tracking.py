"""search.tracking.tracker.StudyTracker against a real sqlite tracking store in a temporary directory.

Creating a fresh MLflow sqlite database runs all its migrations (several seconds), so the module shares one
database and gives every test its own experiment.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mlflow")

from objectives.config import CVConfig, ModelConfig, TrainConfig, TrialConfig
from objectives.data import DataSpec, load_dataset
from objectives.errors import LosstuneError
from objectives.evaluate import evaluate
from search.tracking.mlflow_locations import normalise_tracking_uri
from search.tracking.mlflow_store import MAX_REASON_CHARS
from search.tracking.reports import REPORT_FILES
from search.tracking.run_params import trial_params
from search.tracking.tracker import StudyTracker

_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    directory = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{directory / 'mlflow.db'}", directory


@pytest.fixture
def tracker(store) -> StudyTracker:
    uri, _ = store
    return StudyTracker(uri, f"study-{next(_names)}")


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """A real evaluated trial on a small learnable table: (config, dataset, result)."""
    rng = np.random.default_rng(0)
    n = 150
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    score = 1.5 * x1 - x2 + (color == "red") + rng.normal(scale=0.5, size=n)
    label = np.where(score > np.quantile(score, 0.7), "yes", "no")
    path = tmp_path_factory.mktemp("data") / "data.csv"
    pd.DataFrame({"x1": x1, "x2": x2, "color": color, "label": label}).to_csv(path, index=False)
    dataset = load_dataset(DataSpec(path=path, target="label"))
    config = TrialConfig(
        model=ModelConfig(hidden=(8,)),
        train=TrainConfig(epochs=3, batch_size=32, lr=1e-2, device="cpu"),
        cv=CVConfig(folds=3, seed=0),
    )
    return config, dataset, evaluate(dataset, config)


def test_parent_and_trial_runs(tracker: StudyTracker, trial) -> None:
    config, dataset, result = trial
    client = tracker.client
    parent = tracker.ensure_parent_run("weekly", None)
    configs = [config, config.with_loss(gamma=0.5, alpha=0.25)]
    runs = []
    for number, cfg in enumerate(configs):
        run_id = tracker.start_trial(parent, number, "gamma", "2026-W47", cfg, dataset.fingerprint, {"losstune.x": "1"})
        assert client.get_run(run_id).info.status == "RUNNING"
        tracker.finish_trial(run_id, result, dataset, cfg)
        runs.append(client.get_run(run_id))

    parent_run = client.get_run(parent)
    assert parent_run.info.run_name == "weekly"
    assert parent_run.data.tags["losstune.role"] == "study" and parent_run.data.tags["losstune.study"] == "weekly"
    # the trial number and the loss first: what the UI's narrow run-name column shows
    assert [r.info.run_name for r in runs] == [
        "t000 g=2 a=none w=0.5/0.5 (gamma)",
        "t001 g=0.5 a=0.25 w=0.5/0.5 (gamma)",
    ]
    children = client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert {r.info.run_id for r in children} == {r.info.run_id for r in runs}

    for number, (run, cfg) in enumerate(zip(runs, configs)):
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert params == trial_params(cfg)
        # every loss parameter a number, also for the unweighted trial: alpha: null is class weights 1 and 1
        assert [float(params[k]) for k in ("alpha_pos", "alpha_neg")] == ([1.0, 1.0] if number == 0 else [0.25, 0.75])
        assert float(params["gamma"]) == cfg.loss.gamma and float(params["bce_weight"]) == cfg.loss.bce_weight
        assert params["train_precision"] == "fp32" and "alpha" not in params
        assert not set(params) & set(run.data.metrics), "a param and a metric share a name"
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent
        assert tags["losstune.phase"] == "gamma" and tags["losstune.week"] == "2026-W47"
        assert tags["losstune.trial"] == str(number) and tags["losstune.state"] == "COMPLETE"
        assert tags["losstune.data_fingerprint"] == dataset.fingerprint and tags["losstune.x"] == "1"
        m = run.data.metrics
        assert m["cv_score"] == pytest.approx(result.oof_score)
        assert m["honest_score"] == pytest.approx(result.honest_score_mean)
        assert m["honest_score_std"] == pytest.approx(result.honest_score_std)
        assert m["threshold"] == pytest.approx(result.threshold)
        for k in range(config.cv.folds):
            assert m[f"fold_score_{k}"] == pytest.approx(result.fold_scores[k])
            assert m[f"honest_fold_score_{k}"] == pytest.approx(result.honest_fold_scores[k])
        for key in ("f1_at_0_5", "precision", "recall", "roc_auc", "pr_auc", "log_loss", "seconds"):
            assert m[key] == pytest.approx(getattr(result, key))
        for key, curves in (("train_loss", result.train_loss), ("val_loss", result.val_loss)):
            history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda h: h.step)
            assert [h.step for h in history] == list(range(1, config.train.epochs + 1))
            assert np.allclose([h.value for h in history], curves.mean(axis=0))
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == set(REPORT_FILES)

    # the best trial is named on the parent run, with a link to its run in the description, after every summary
    table = pd.DataFrame(
        {
            "trial": [0, 1],
            "phase": ["gamma"] * 2,
            "alpha": [None, 0.25],
            "gamma": [2.0, 0.5],
            "bce_weight": [0.5] * 2,
            "focal_weight": [0.5] * 2,
            "cv_score": [0.6, 0.4],
            "state": ["COMPLETE"] * 2,
        }
    )
    for best in (0, 1):
        table["cv_score"] = [0.6, 0.4] if best == 0 else [0.6, 0.8]
        tracker.log_study_summary(parent, table)
        tags = client.get_run(parent).data.tags
        assert tags["losstune.best_trial"] == str(best) and tags["losstune.best_run_id"] == runs[best].info.run_id
        note = tags["mlflow.note.content"]
        link = f"[{runs[best].info.run_name}](#/experiments/{tracker.experiment_id}/runs/{runs[best].info.run_id})"
        assert link in note and f"cv_score {table['cv_score'][best]:.4f}" in note
        assert "2 trial(s)**: 2 complete" in note
    shown = pd.read_csv(client.download_artifacts(parent, "results_table.csv"))
    assert list(shown["alpha"]) == ["none", "0.25"]  # as in run names, not a blank cell

    # the experiment opens on its runs table ("Model training") in MLflow 3's UI, not on the GenAI overview
    assert client.get_experiment(tracker.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"

    # the artifacts live beside the database, not under the working directory
    location = client.get_experiment(tracker.experiment_id).artifact_location
    assert location.startswith(Path(tracker.tracking_uri.removeprefix("sqlite:///")).parent.as_uri() + "/mlartifacts/")


def test_parent_run_is_reattached_only_when_it_is_this_studys(tracker: StudyTracker, trial) -> None:
    config, dataset, _ = trial
    client = tracker.client
    parent = tracker.ensure_parent_run("weekly", None)
    tracker.set_parent_finished(parent)
    assert client.get_run(parent).info.status == "FINISHED"
    assert tracker.ensure_parent_run("weekly", parent) == parent
    assert client.get_run(parent).info.status == "RUNNING"

    trial_run = tracker.start_trial(parent, 0, "alpha", "2026-W47", config, dataset.fingerprint)
    for wrong in ("0" * 32, trial_run):
        new = tracker.ensure_parent_run("weekly", wrong)
        assert new not in (parent, wrong) and client.get_run(new).data.tags["losstune.role"] == "study"
    assert tracker.ensure_parent_run("another", parent) != parent


def test_experiment_is_reused(store, tracker: StudyTracker) -> None:
    uri, _ = store
    again = StudyTracker(uri, tracker.experiment_name)
    assert again.experiment_id == tracker.experiment_id


def test_fail_trial(tracker: StudyTracker, trial) -> None:
    config, dataset, _ = trial
    parent = tracker.ensure_parent_run("weekly", None)
    failed = tracker.start_trial(parent, 0, "gamma", "2026-W47", config, dataset.fingerprint)
    tracker.fail_trial(failed, "TrainingDiverged: loss became NaN at epoch 3\n" + "x" * 1000)
    run = tracker.client.get_run(failed)
    assert run.info.status == "FAILED"
    assert run.data.tags["losstune.state"] == "FAIL"
    reason = run.data.tags["losstune.failure_reason"]
    assert reason.startswith("TrainingDiverged: loss became NaN") and len(reason) == MAX_REASON_CHARS

    killed = tracker.start_trial(parent, 1, "gamma", "2026-W47", config, dataset.fingerprint)
    tracker.fail_trial(killed, "interrupted", status="KILLED")
    assert tracker.client.get_run(killed).info.status == "KILLED"
    with pytest.raises(ValueError, match="FAILED"):
        tracker.fail_trial(killed, "x", status="FINISHED")


def test_fail_stale_runs_changes_only_running_runs(tracker: StudyTracker, trial) -> None:
    config, dataset, result = trial
    client = tracker.client
    parent = tracker.ensure_parent_run("weekly", None)
    stale, done, other = (
        tracker.start_trial(parent, i, "gamma", "2026-W47", config, dataset.fingerprint) for i in range(3)
    )
    tracker.finish_trial(done, result, dataset, config)

    assert tracker.fail_stale_runs([stale, done, "f" * 32], "search killed") == 1
    assert client.get_run(stale).info.status == "FAILED"
    assert client.get_run(stale).data.tags["losstune.failure_reason"] == "search killed"
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(done).data.tags["losstune.state"] == "COMPLETE"
    assert client.get_run(other).info.status == "RUNNING"  # not in the list
    assert tracker.fail_stale_runs([stale, done], "again") == 0
    assert tracker.fail_stale_runs([], "nothing") == 0


def _study(n_trials: int):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: t.suggest_float("gamma", 0.0, 5.0) - abs(t.suggest_float("alpha", 0.0, 1.0) - 0.3),
        n_trials=n_trials,
    )
    return study


def test_log_study_summary(tracker: StudyTracker) -> None:
    client = tracker.client
    parent = tracker.ensure_parent_run("weekly", None)
    first = pd.DataFrame({"trial": [0, 1], "cv_score": [0.5, np.nan], "state": ["COMPLETE", "FAIL"]})
    style_before = matplotlib.rcParams["axes.facecolor"]

    tracker.log_study_summary(parent, first, _study(3))
    names = {a.path for a in client.list_artifacts(parent)}
    assert {"results_table.json", "results_table.csv", "optimization_history.png", "param_importances.png"} <= names
    assert matplotlib.rcParams["axes.facecolor"] == style_before  # optuna's global ggplot style was undone

    second = pd.DataFrame(
        {"trial": [0, 1, 2], "cv_score": [0.5, np.nan, 0.7], "state": ["COMPLETE", "FAIL", "COMPLETE"]}
    )
    tracker.log_study_summary(parent, second)
    # replaced, not appended to (as mlflow's log_table would), in log_table's format (MlflowClient.load_table
    # cannot be used here: in mlflow 3.17 it searches the global tracking URI, not the client's)
    loaded = pd.read_json(client.download_artifacts(parent, "results_table.json"), orient="split")
    pd.testing.assert_frame_equal(loaded, second, check_dtype=False)
    local = Path(client.download_artifacts(parent, "results_table.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(local), second)
    run = client.get_run(parent)
    assert run.data.metrics["best_cv_score"] == pytest.approx(0.7)
    assert run.data.metrics["n_complete"] == 2
    assert json.loads(run.data.tags["mlflow.loggedArtifacts"]) == [{"path": "results_table.json", "type": "table"}]


def test_study_summary_skips_importances_it_cannot_compute(tracker: StudyTracker, caplog) -> None:
    parent = tracker.ensure_parent_run("weekly", None)
    with caplog.at_level("INFO", logger="search.tracking.study_plots"):
        tracker.log_study_summary(parent, pd.DataFrame({"cv_score": [0.4]}), _study(1))
    names = {a.path for a in tracker.client.list_artifacts(parent)}
    assert "optimization_history.png" in names and "param_importances.png" not in names
    assert "parameter importances need" in caplog.text
    with pytest.raises(ValueError, match="cv_score"):
        tracker.log_study_summary(parent, pd.DataFrame({"score": [0.4]}))


def test_unwritable_store_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file")
    uri = f"sqlite:///{blocker}/sub/mlflow.db"
    with pytest.raises(LosstuneError) as info:
        StudyTracker(uri, "study")
    message = str(info.value)
    assert "\n" not in message and uri in message


def test_unwritable_artifact_location_is_one_line_error(store, tmp_path: Path) -> None:
    uri, _ = store
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LosstuneError, match="artifact directory") as info:
        StudyTracker(uri, f"study-{next(_names)}", artifact_location=str(blocker / "artifacts"))
    assert "\n" not in str(info.value)


def test_explicit_artifact_location_and_ui_command(store, tmp_path: Path) -> None:
    uri, directory = store
    tracker = StudyTracker(uri, f"study-{next(_names)}", artifact_location=str(tmp_path / "art"))
    assert tracker.client.get_experiment(tracker.experiment_id).artifact_location == (tmp_path / "art").as_uri()
    assert tracker.ui_command().endswith(f" ui --backend-store-uri sqlite:///{directory / 'mlflow.db'}")
    assert (
        tracker.runs_url()
        == f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs?viewStateShareKey=losstune&workflowType=machine_learning"
    )


def test_ui_command_names_this_environments_mlflow_when_path_has_none(store, monkeypatch, tmp_path) -> None:
    import sys

    from search.tracking.study_run import mlflow_executable

    ours = Path(sys.executable).parent / "mlflow"
    if not ours.exists():
        pytest.skip(f"no mlflow script beside {sys.executable}")
    monkeypatch.setenv("PATH", str(tmp_path))  # no mlflow on PATH: the printed command must still run
    monkeypatch.chdir(tmp_path)
    assert mlflow_executable() == str(ours.absolute())
    monkeypatch.chdir(ours.parent.parent.parent)  # the project directory: shown relative, e.g. .venv/bin/mlflow
    assert mlflow_executable() == str(ours.absolute().relative_to(Path.cwd()))
    monkeypatch.setenv("PATH", str(ours.parent))  # the venv activated: plain mlflow
    assert mlflow_executable() == "mlflow"
    uri, _ = store
    assert StudyTracker(uri, f"study-{next(_names)}").ui_command().startswith("mlflow ui --backend-store-uri ")


def test_relative_sqlite_uri_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise_tracking_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert normalise_tracking_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert normalise_tracking_uri("http://localhost:5000") == "http://localhost:5000"
