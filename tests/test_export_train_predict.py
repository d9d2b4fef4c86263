"""export -> train -> predict end to end, on a table split into a training part and held-back test rows.

One small study (2 trials) is searched once for the module; the tests read what it left: the exported file, the
model directory (an MLflow pyfunc model, also logged and registered) and the submission.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from sklearn.metrics import f1_score

from objectives.config import LossConfig
from objectives.errors import LosstuneError
from search.cli import EXIT_BAD_INPUT, main
from search.model.export_trial import export_trial
from search.model.exported_config import load_exported
from search.model.model_dir_loading import load_model_dir
from search.run.storage import READS_UNFORMATTED, STUDY_FORMAT, STUDY_FORMAT_ATTR
from search.study.loss_params import LOSS_PARAMS
from search.study.stored_config import CONFIG_ATTR, stored_config
from search.study.study_file import load_study_file
from tests.conftest import synthetic_frame

REPO = Path(__file__).resolve().parents[1]
STUDY = """\
name: e2e
data: {path: train.csv, target: label, positive: "yes"}
cv: {folds: 3, seed: 0}
model: {hidden: [16], dropout: 0.0}
train: {epochs: 8, batch_size: 64, lr: 0.01, device: cpu}
budget: {trials_per_week: 2}
"""
REGISTERED = "e2e-churn"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> dict:
    """search (2 trials) -> export -> train (tracked, registered) -> predict, once for the module."""
    root = tmp_path_factory.mktemp("flow")
    frame = synthetic_frame(n=600, seed=11, missing=True)
    frame.insert(0, "row_id", [f"R{i:04d}" for i in range(len(frame))])
    train, test = frame.iloc[:450], frame.iloc[450:].reset_index(drop=True)
    train.to_csv(root / "train.csv", index=False)
    test.drop(columns=["label"]).to_csv(root / "test.csv", index=False)
    (root / "study.yaml").write_text(STUDY)
    paths = {name: root / name for name in ("study.yaml", "best.yaml", "model", "submission.csv", "test.csv")}

    def cli(*argv: str) -> str:
        from contextlib import redirect_stdout
        from io import StringIO

        buf = StringIO()
        with redirect_stdout(buf):
            rc = main([str(a) for a in argv])
        assert rc == 0, (argv, buf.getvalue())
        return buf.getvalue()

    cli("search", paths["study.yaml"], "--budget", "2", "--no-progress")
    out = {"export": cli("export", paths["study.yaml"], "-o", paths["best.yaml"])}
    out["train"] = cli("train", paths["best.yaml"], "-o", paths["model"], "--register", REGISTERED)
    out["predict"] = cli("predict", paths["model"], paths["test.csv"], "-o", paths["submission.csv"], "--proba")
    return {**paths, "root": root, "held_back": test["label"].eq("yes").astype(int).to_numpy(), "out": out}


def study_trials(flow) -> list:
    storage = f"sqlite:///{flow['root'] / 'e2e.optuna.db'}"
    return optuna.load_study(study_name="e2e", storage=storage).get_trials()


def client(flow) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{flow['root'] / 'mlflow.db'}")


def test_export_is_the_best_trial_with_its_threshold_and_provenance(flow):
    exported = load_exported(flow["best.yaml"])
    complete = [t for t in study_trials(flow) if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    best = max(complete, key=lambda t: (t.value, -t.number))
    assert exported.threshold == best.user_attrs["threshold"]  # exactly the trial's, not re-derived
    p = exported.provenance
    assert (p.study, p.trial, p.selected_by) == ("e2e", best.number, "mean")
    assert p.cv_score == best.value and p.honest_score == best.user_attrs["honest_score"]
    assert p.mlflow_run_id == best.user_attrs["mlflow_run_id"]
    assert p.data_fingerprint == best.user_attrs["data_fingerprint"] and p.week == best.user_attrs["week"]
    assert {"torch", "optuna", "scikit-learn", "losstune"} <= p.versions.keys()
    assert exported.loss.model_dump() == {k: v for k, v in best.user_attrs["loss"].items()}
    assert exported.model.hidden == (16,) and exported.train.epochs == 8 and exported.cv.folds == 3
    assert exported.data.path == (flow["root"] / "train.csv").resolve()
    assert yaml.safe_load(flow["best.yaml"].read_text())["data"]["path"] == "train.csv"  # relative to the file

    run = client(flow).get_run(p.mlflow_run_id)
    assert run.data.tags["losstune.exported"] == "true"
    logged = [a.path for a in client(flow).list_artifacts(p.mlflow_run_id, "export")]
    assert logged == ["export/best.yaml"]


def test_export_json_by_trial_number_and_by_honest(flow, capsys, tmp_path):
    rc, _out, err = run_cli(
        capsys, "export", flow["study.yaml"], "--trial", "0", "--format", "json", "-o", tmp_path / "t0.json"
    )
    assert rc == 0, err
    data = json.loads((tmp_path / "t0.json").read_text())
    assert data["format_version"] == 1 and data["provenance"]["trial"] == 0
    assert data["provenance"]["selected_by"] == "trial"
    assert load_exported(tmp_path / "t0.json").threshold == study_trials(flow)[0].user_attrs["threshold"]

    rc, _, err = run_cli(capsys, "export", flow["study.yaml"], "--by", "honest", "-o", tmp_path / "h.yaml")
    assert rc == 0, err
    honest_best = max(study_trials(flow), key=lambda t: (t.user_attrs["honest_score"], -t.number))
    assert load_exported(tmp_path / "h.yaml").provenance.trial == honest_best.number

    rc, _, err = run_cli(capsys, "export", flow["study.yaml"], "--trial", "7", "-o", tmp_path / "x.yaml")
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1 and "no trial 7" in err


def test_evaluate_config_reruns_the_trials_cv(flow, capsys):
    rc, out, err = run_cli(capsys, "evaluate", "--config", flow["best.yaml"], "--json")
    assert rc == 0, err
    result = json.loads(out)
    exported = load_exported(flow["best.yaml"])
    assert result["oof_score"] == pytest.approx(exported.provenance.cv_score, abs=0.02)
    assert result["threshold"] == pytest.approx(exported.threshold, abs=0.05)
    assert result["fingerprint"] == exported.provenance.data_fingerprint

    rc, out, err = run_cli(capsys, "evaluate", "--config", flow["best.yaml"])
    assert rc == 0, err
    p = exported.provenance
    assert f"exported trial {p.trial} of {p.study!r}: OOF {p.cv_score:.4f}" in out and "(same data)" in out
    # the rerun trains each model alone (dropout: other masks than in the search's stack): said when it differs
    differs = re.search(r"^OOF f1\s+([0-9.]+)", out, re.M).group(1) != f"{p.cv_score:.4f}"
    assert ("not the same figures: the search trained this trial in a stack" in out) == differs, out
    edited = flow["best.yaml"].parent / "best_other_score.yaml"  # as if the stack's draws had scored it higher
    edited.write_text(re.sub(r"cv_score: .*", f"cv_score: {p.cv_score + 0.01!r}", flow["best.yaml"].read_text()))
    rc, out, err = run_cli(capsys, "evaluate", "--config", edited)
    assert rc == 0 and "not the same figures: the search trained this trial in a stack" in out, err + out
    # a data option makes it another evaluation, whatever the file's bytes: no blame on the stack then
    rc, out, err = run_cli(capsys, "evaluate", "--config", edited, "--na-value", "n/a")
    assert rc == 0 and "(same data)" in out and "not the same figures" not in out, err + out

    rc, out, err = run_cli(capsys, "evaluate", "--config", flow["best.yaml"], "--folds", "2", "--epochs", "1", "--json")
    assert rc == 0, err
    assert len(json.loads(out)["fold_scores"]) == 2  # an explicit option overrides the file


def test_submission_rows_labels_and_score_on_held_back_rows(flow):
    sub = pd.read_csv(flow["submission.csv"])
    test = pd.read_csv(flow["test.csv"])
    assert list(sub.columns) == ["row_id", "label", "proba"]
    assert len(sub) == len(test) and sub["row_id"].tolist() == test["row_id"].tolist()
    assert set(sub["label"].unique()) <= {0, 1}
    exported = load_exported(flow["best.yaml"])
    assert (sub["label"] == (sub["proba"] >= exported.threshold).astype(int)).all()
    f1 = f1_score(flow["held_back"], sub["label"])
    cv = exported.provenance.honest_score
    assert f1 > 0.5, f1  # the synthetic target is learnable
    assert abs(f1 - cv) < 0.25, (f1, cv)  # within a sane distance of the CV estimate


def test_labels_original(flow, capsys, tmp_path):
    rc, _, err = run_cli(
        capsys,
        "predict",
        flow["model"],
        flow["test.csv"],
        "-o",
        tmp_path / "o.csv",
        "--labels",
        "original",
        "--id-col",
        "num2",
    )
    assert rc == 0, err
    original = pd.read_csv(tmp_path / "o.csv")
    numeric = pd.read_csv(flow["submission.csv"])
    assert list(original.columns) == ["num2", "label"]
    assert original["label"].tolist() == numeric["label"].map({1: "yes", 0: "no"}).tolist()


def test_model_directory_is_a_tracked_registered_mlflow_model(flow):
    mlmodel = yaml.safe_load((flow["model"] / "MLmodel").read_text())
    assert "python_function" in mlmodel["flavors"] and mlmodel["metadata"]["losstune_format_version"] == 2
    assert not list(flow["model"].rglob("*.pkl"))  # nothing pickled: weights, skops, JSON, YAML, code
    manifest = json.loads((flow["model"] / "artifacts" / "losstune_model.json").read_text())
    assert manifest["threshold"] == load_exported(flow["best.yaml"]).threshold
    assert manifest["trained_on"]["n_rows"] == 450 and manifest["trained_on"]["same_data_as_trial"] is True

    c = client(flow)
    runs = c.search_runs([c.get_experiment_by_name("e2e-final").experiment_id], "tags.`losstune.role` = 'final'")
    assert len(runs) == 1 and runs[0].info.run_name == "final e2e" and runs[0].info.status == "FINISHED"
    model_id = runs[0].data.tags["losstune.model_id"]
    assert mlmodel["model_id"] == model_id and mlmodel["run_id"] == runs[0].info.run_id
    assert c.get_logged_model(model_id).status == LoggedModelStatus.READY
    versions = c.search_model_versions(f"name = '{REGISTERED}'")
    assert len(versions) == 1 and versions[0].run_id == runs[0].info.run_id
    assert versions[0].source == c.get_logged_model(model_id).artifact_location
    assert versions[0].tags["losstune.model_id"] == model_id


def test_fresh_process_pyfunc_gives_identical_predictions(flow, tmp_path):
    script = textwrap.dedent(f"""
        import mlflow.pyfunc, numpy as np, pandas as pd
        model = mlflow.pyfunc.load_model({str(flow["model"])!r})
        out = model.predict(pd.read_csv({str(flow["test.csv"])!r}))
        np.save({str(tmp_path / "proba.npy")!r}, out["proba"].to_numpy())
        np.save({str(tmp_path / "label.npy")!r}, out["label"].to_numpy())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    proba, label = np.load(tmp_path / "proba.npy"), np.load(tmp_path / "label.npy")
    sub = pd.read_csv(flow["submission.csv"])
    np.testing.assert_array_equal(proba, sub["proba"].to_numpy())
    np.testing.assert_array_equal(label, sub["label"].to_numpy())
    in_process = load_model_dir(flow["model"]).predict(pd.read_csv(flow["test.csv"]))
    np.testing.assert_array_equal(in_process["proba"].to_numpy(), proba)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("delete_weights", "weights.pt is missing"),
        ("alter_weights", "weights.pt does not match the sha256"),
        ("alter_preprocessing", "preprocessing.skops does not match the sha256"),
        ("mlmodel_version", "model format version 3"),
        ("manifest_version", "model format version 3"),
        ("mlmodel_old_version", "version 1 had no checksum of MLmodel"),
        ("manifest_threshold", "losstune_model.json does not match the sha256"),
        ("no_mlmodel", "not an MLflow model directory"),
    ],
)
def test_corrupted_or_other_version_model_dir_is_one_clear_line(flow, capsys, tmp_path, damage, expected):
    model = tmp_path / "model"
    shutil.copytree(flow["model"], model)
    artifacts = model / "artifacts"
    if damage == "delete_weights":
        (artifacts / "weights.pt").unlink()
    elif damage == "alter_weights":
        data = bytearray((artifacts / "weights.pt").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (artifacts / "weights.pt").write_bytes(bytes(data))
    elif damage == "alter_preprocessing":
        with open(artifacts / "preprocessing.skops", "ab") as f:
            f.write(b"\0")
    elif damage in ("mlmodel_version", "mlmodel_old_version"):
        text = (model / "MLmodel").read_text()
        new = "3" if damage == "mlmodel_version" else "1"
        (model / "MLmodel").write_text(text.replace("losstune_format_version: 2", f"losstune_format_version: {new}"))
    elif damage in ("manifest_version", "manifest_threshold"):
        manifest = json.loads((artifacts / "losstune_model.json").read_text())
        change = {"format_version": 3} if damage == "manifest_version" else {"threshold": 0.01}
        (artifacts / "losstune_model.json").write_text(json.dumps({**manifest, **change}))
    else:
        (model / "MLmodel").unlink()

    with pytest.raises(LosstuneError, match=expected):
        load_model_dir(model)
    rc, _out, err = run_cli(capsys, "predict", model, flow["test.csv"], "-o", tmp_path / "s.csv")
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()


def test_pyfunc_load_of_a_damaged_model_says_why(flow, tmp_path):
    import mlflow.pyfunc

    model = tmp_path / "model"
    shutil.copytree(flow["model"], model)
    with open(model / "artifacts" / "weights.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(LosstuneError, match=r"weights\.pt does not match the sha256"):
        mlflow.pyfunc.load_model(str(model))


def test_pyfunc_names_a_missing_column(flow):
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(flow["model"]))
    with pytest.raises(MlflowException, match=r"lacks 1 column.*'num2'"):
        model.predict(pd.read_csv(flow["test.csv"]).drop(columns=["num2"]))


def test_every_trial_carries_its_configuration_and_export_reads_it(flow):
    """The worker stores each trial's resolved TrialConfig as one versioned user attr; the export (and so train
    and evaluate --config) is exactly that configuration."""
    file = load_study_file(flow["study.yaml"])
    for trial in study_trials(flow):
        record = trial.user_attrs[CONFIG_ATTR]
        assert record["version"] == 1
        config = stored_config(trial)  # no study file needed: the record alone
        assert config == file.trial_config(LossConfig(**trial.user_attrs["loss"]))
        assert record == {"version": 1, **config.model_dump(mode="json")}
    exported = load_exported(flow["best.yaml"])
    best = next(t for t in study_trials(flow) if t.number == exported.provenance.trial)
    assert exported.trial_config == stored_config(best)


def test_export_after_the_study_file_changed_gives_the_trials_own_configuration(flow, tmp_path):
    edited = flow["root"] / "edited.yaml"  # same name and directory: same storage and tracking store
    edited.write_text(STUDY.replace("epochs: 8", "epochs: 9").replace("lr: 0.01", "lr: 0.5"))
    try:
        exported, _ = export_trial(edited, tmp_path / "b.yaml", log_to_mlflow=False)
    finally:
        edited.unlink()
    # no drift to check: the configuration is the trial's record, not the study file as it is now
    assert (exported.train.epochs, exported.train.lr) == (8, 0.01)
    assert load_exported(tmp_path / "b.yaml").trial_config == load_exported(flow["best.yaml"]).trial_config


def study_copy(
    flow, tmp_path: Path, study_text: str, drop: tuple[str, ...] = (), params=True, unformatted=False
) -> Path:
    """A copy of the flow's study with the trial user attrs ``drop`` removed, without Optuna's params unless
    ``params``, and without the study format when ``unformatted`` (as losstune wrote a study before the record).
    The study file in ``tmp_path`` reads the copy and the flow's own MLflow store (read only: nothing is logged)."""
    shutil.copy(flow["root"] / "e2e.optuna.db", tmp_path / "copy.optuna.db")
    with sqlite3.connect(tmp_path / "copy.optuna.db") as db:
        db.executemany("DELETE FROM trial_user_attributes WHERE key = ?", [(key,) for key in drop])
        if not params:
            db.execute("DELETE FROM trial_params")
        if unformatted:
            db.execute("DELETE FROM study_user_attributes WHERE key = ?", (STUDY_FORMAT_ATTR,))
    text = study_text.replace("path: train.csv", f"path: {flow['root'] / 'train.csv'}")
    text += f"storage: sqlite:///{tmp_path / 'copy.optuna.db'}\n"
    text += f"tracking: {{uri: 'sqlite:///{flow['root'] / 'mlflow.db'}', experiment: e2e}}\n"
    (tmp_path / "copy.yaml").write_text(text)
    return tmp_path / "copy.yaml"


def test_a_study_written_before_the_study_format_is_refused_by_name(flow, capsys, tmp_path):
    """The one cut: a study whose trials lack the configuration record (and so the study format) is refused by
    every command that opens it, in one line naming the losstune that reads it; nothing is written."""
    study = study_copy(flow, tmp_path, STUDY, drop=(CONFIG_ATTR,), unformatted=True)
    expected = (
        f"study 'e2e' was written by losstune before study format {STUDY_FORMAT}: its trials do not carry the "
        f"configuration they ran with; use losstune {READS_UNFORMATTED} to read it, or start a new study name"
    )
    for command in (["export", study, "-o", tmp_path / "b.yaml"], ["status", study], ["report", study]):
        rc, _out, err = run_cli(capsys, *command)
        assert rc == EXIT_BAD_INPUT and err.strip() == f"losstune {command[0]}: error: {expected}", (command, err)
    assert not (tmp_path / "b.yaml").exists()


def test_export_with_an_unreachable_tracking_server_is_one_line_at_once(flow, capsys, tmp_path):
    """The study and its trials are there, the MLflow server is not: one line within seconds (MLflow alone retries
    for minutes), and no file is written."""
    study = study_copy(flow, tmp_path, STUDY)
    study.write_text(study.read_text().replace(f"sqlite:///{flow['root'] / 'mlflow.db'}", "http://127.0.0.1:9"))
    start = time.monotonic()
    rc, _out, err = run_cli(capsys, "export", study, "-o", tmp_path / "best.yaml")
    assert rc == 2 and time.monotonic() - start < 30
    assert err.strip().splitlines() == [err.strip()] and "cannot reach the MLflow tracking server" in err
    assert "Traceback" not in err and not (tmp_path / "best.yaml").exists()


def test_results_and_status_read_the_loss_from_the_record(flow, tmp_path):
    """With the ``loss`` user attr and Optuna's params gone, the results table, the plan's records and status
    still have every trial's loss: they read the stored configuration."""
    from search.run.status import study_status
    from search.study.results import plan_trials, results_rows

    path = study_copy(flow, tmp_path, STUDY, drop=("loss",), params=False)
    status = study_status(path)
    trials = {t.number: stored_config(t).loss.model_dump() for t in study_trials(flow)}
    for row in status["trials"]:
        assert {k: row[k] for k in LOSS_PARAMS} == trials[row["trial"]]
    assert {k: status["best"][k] for k in LOSS_PARAMS} == trials[status["best"]["trial"]]
    storage = f"sqlite:///{tmp_path / 'copy.optuna.db'}"
    study = optuna.load_study(study_name="e2e", storage=storage)
    assert {r.number: r.loss.model_dump() for r in plan_trials(study)} == trials
    assert results_rows(study, LossConfig(**status["reference"])) == status["trials"]


def test_missing_column_is_one_clear_line(flow, capsys, tmp_path):
    pd.read_csv(flow["test.csv"]).drop(columns=["color", "num1"]).to_csv(tmp_path / "t.csv", index=False)
    rc, _, err = run_cli(capsys, "predict", flow["model"], tmp_path / "t.csv", "-o", tmp_path / "s.csv")
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1
    assert "lacks 2 column(s)" in err and "'num1'" in err and "'color'" in err


def test_new_category_is_ignored_with_a_warning_counting_rows(flow, capsys, tmp_path, caplog):
    test = pd.read_csv(flow["test.csv"])
    test.loc[:6, "color"] = "purple"  # 7 rows
    test.to_csv(tmp_path / "t.csv", index=False)
    with caplog.at_level(logging.WARNING):
        rc, _, err = run_cli(capsys, "predict", flow["model"], tmp_path / "t.csv", "-o", tmp_path / "s.csv")
    assert rc == 0, err
    warned = [r.getMessage() for r in caplog.records if "not seen in training" in r.getMessage()]
    assert len(warned) == 1 and "'color': 7 row(s)" in warned[0] and "'purple'" in warned[0]
    assert len(pd.read_csv(tmp_path / "s.csv")) == len(test)


def test_train_on_other_data_warns_and_names_the_file(flow, capsys, tmp_path, caplog):
    full = synthetic_frame(n=300, seed=5)
    full.to_csv(tmp_path / "full.csv", index=False)
    with caplog.at_level(logging.WARNING):
        rc, out, err = run_cli(
            capsys, "train", flow["best.yaml"], "--data", tmp_path / "full.csv", "-o", tmp_path / "m", "--no-track"
        )
    assert rc == 0, err
    assert f"trained on {tmp_path / 'full.csv'} (300 rows" in out and "NOT the data the trial was scored on" in out
    assert any("full.csv" in r.getMessage() and "fingerprint" in r.getMessage() for r in caplog.records)
    assert load_model_dir(tmp_path / "m").manifest["trained_on"]["same_data_as_trial"] is False

    rc, _, err = run_cli(capsys, "train", flow["best.yaml"], "-o", tmp_path / "m", "--no-track")
    assert rc == EXIT_BAD_INPUT and "not empty" in err  # never overwrites a model


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: {**d, "format_version": 2}, "format_version 2; this losstune reads format_version 1"),
        (lambda d: {k: v for k, v in d.items() if k != "format_version"}, "no format_version"),
        (lambda d: {**d, "loss": {**d["loss"], "gama": 2.0}}, "loss.gama: unknown key"),
        (lambda d: {**d, "threshold": "high"}, "threshold"),
    ],
)
def test_bad_exported_config_is_one_line(flow, capsys, tmp_path, edit, expected):
    data = yaml.safe_load(flow["best.yaml"].read_text())
    data["data"]["path"] = str(flow["root"] / "train.csv")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(edit(data)))
    with pytest.raises(LosstuneError, match=expected):
        load_exported(tmp_path / "bad.yaml")
    rc, _, err = run_cli(capsys, "train", tmp_path / "bad.yaml", "-o", tmp_path / "m", "--no-track")
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1 and expected.split(";")[0] in err


def test_train_on_a_store_recorded_without_its_password_fails_at_once(flow, capsys, tmp_path, monkeypatch):
    """export records the tracking URI without its password; train without LOSSTUNE_TRACKING_URI says so in one
    line at once, instead of retrying a login that cannot succeed."""
    import time

    data = yaml.safe_load(flow["best.yaml"].read_text())
    data["data"]["path"] = str(flow["root"] / "train.csv")
    data["provenance"]["tracking_uri"] = "postgresql+psycopg2://losstune:***@127.0.0.1:9/losstune_mlflow"
    (tmp_path / "pg.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.delenv("LOSSTUNE_TRACKING_URI", raising=False)
    start = time.monotonic()
    rc, _out, err = run_cli(capsys, "train", tmp_path / "pg.yaml", "-o", tmp_path / "m")
    assert time.monotonic() - start < 5
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1, err
    assert "has no usable password" in err and "LOSSTUNE_TRACKING_URI" in err
    assert not (tmp_path / "m").exists()
