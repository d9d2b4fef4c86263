"""Bad input through the command line: one clear line, exit status 2, no traceback, and nothing written or lost.

Every case runs against a directory that already holds a study (its Optuna SQLite file, ``mlflow.db`` and
``mlartifacts/``, made by a successful search): the bad study file has the same study name and, unless the case
is about storage, the same storage. Every file under the directory is hashed before and after the command and
must be byte-for-byte the same. Data cases also go through ``losstune evaluate``. Japanese column names, in
UTF-8 and in cp932, must work.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from search.cli import EXIT_BAD_INPUT, main
from tests.conftest import synthetic_frame

NAME = "existing"
WEEK = "2026-11-18T10:00:00"
SETTINGS = """\
cv: {{folds: {folds}, seed: 0}}
model: {{hidden: [8]}}
train: {{epochs: 2, batch_size: 64, lr: 0.01, device: cpu}}
budget: {{trials_per_week: 2}}
"""
SECRET = "s3cret-Pa55"


def study_text(
    data: str, *, name: str = NAME, target: str = "label", folds: int = 3, extra: str = "", data_extra: str = ""
) -> str:
    return (
        f"name: {name}\ndata: {{path: {data}, target: {target}{data_extra}}}\n" + SETTINGS.format(folds=folds) + extra
    )


def tree_hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A directory with a study that has one complete trial and its MLflow runs."""
    directory = tmp_path_factory.mktemp("existing")
    synthetic_frame(n=150, seed=1, missing=False).to_csv(directory / "data.csv", index=False)
    (directory / "study.yaml").write_text(study_text("data.csv"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOSSTUNE_NOW", WEEK)
        assert main(["search", str(directory / "study.yaml"), "--budget", "1", "--no-progress"]) == 0
    assert {"existing.optuna.db", "mlflow.db"} <= {p.name for p in directory.iterdir()}
    assert any((directory / "mlartifacts").rglob("*.png"))
    return directory


def frame(**changes) -> pd.DataFrame:
    df = synthetic_frame(n=60, seed=2, missing=False)
    for column, values in changes.items():
        df[column] = values
    return df


def junk_numeric() -> pd.DataFrame:
    df = frame()
    df["num1"] = df["num1"].astype(object)
    df.loc[7, "num1"] = "abc"
    return df


def csv_bytes(df: pd.DataFrame, encoding: str = "utf-8") -> bytes:
    return df.to_csv(index=False, lineterminator="\n").encode(encoding)


def duplicate_columns() -> bytes:
    text = csv_bytes(frame()).decode()
    header, rest = text.split("\n", 1)
    return (header.replace("num2", "num1") + "\n" + rest).encode()


# case id -> (file contents, the study's target, folds, what the error line must say)
DATA_CASES = {
    "empty_file": (b"", "label", 3, "data file is empty"),
    "header_only": (b"num1,num2,color,label\n", "label", 3, "has a header but no rows"),
    "missing_target": (csv_bytes(frame().drop(columns="label")), "label", 3, "target column 'label' not found"),
    "target_one_class": (csv_bytes(frame(label="no")), "label", 3, "must have exactly 2 classes, found 1"),
    "target_three_classes": (
        csv_bytes(frame(label=np.resize(np.array(["yes", "no", "maybe"], dtype=object), 60))),
        "label",
        3,
        "must have exactly 2 classes, found 3",
    ),
    "fewer_positives_than_folds": (
        csv_bytes(frame(label=["yes", "yes"] + ["no"] * 58)),
        "label",
        3,
        "only 2 positive row(s)",
    ),
    "junk_in_numeric_column": (
        csv_bytes(junk_numeric()),
        "label",
        3,
        "column 'num1' is numeric except 1 value(s) (line 9: 'abc')",
    ),
    "all_nan_column": (csv_bytes(frame(empty=[np.nan] * 60)), "label", 3, "['empty'] have no values at all"),
    "duplicate_column_names": (duplicate_columns(), "label", 3, "duplicate column name(s) ['num1']"),
}


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, command: str, expected: str) -> None:
    assert code == EXIT_BAD_INPUT, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"losstune {command}: error: "), lines[0]
    assert expected in lines[0], lines[0]


@pytest.fixture
def week(monkeypatch):
    monkeypatch.setenv("LOSSTUNE_NOW", WEEK)


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_is_one_line_and_writes_nothing(case, study_dir, capsys, week):
    contents, target, folds, expected = DATA_CASES[case]
    data = study_dir / f"bad_{case}.csv"
    data.write_bytes(contents)
    study = study_dir / f"bad_{case}.yaml"
    study.write_text(study_text(data.name, target=target, folds=folds))
    before = tree_hashes(study_dir)

    code, _out, err = run_cli(["search", str(study), "--no-progress"], capsys)
    assert_one_error_line(code, err, "search", expected)
    code, _out, err = run_cli(
        ["evaluate", "--data", str(data), "--target", target, "--folds", str(folds), "--epochs", "1"], capsys
    )
    assert_one_error_line(code, err, "evaluate", expected)
    assert tree_hashes(study_dir) == before


STUDY_FILE_CASES = {
    "unknown_key": ("colour: red\n", "colour: unknown key"),
    "wrong_type": ("plan:\n  - {name: g, grid: [{gamma: high}]}\n", "gamma: Input should be a valid number"),
    "gamma_negative": ("plan:\n  - {name: g, grid: [{gamma: -1}]}\n", "gamma=-1 is outside [0, 10]"),
    "both_weights_zero": (
        "plan:\n  - {name: w, grid: [{bce_weight: 0, focal_weight: 0}]}\n",
        "bce_weight and focal_weight are both 0",
    ),
    "no_loss_for_negatives": (  # LossConfig's own rule, refused in the study file when the point alone breaks it
        "plan:\n  - {name: w, grid: [{bce_weight: 0, focal_weight: 1, alpha: 1}]}\n",
        "alpha=1 with bce_weight=0 gives the negatives no loss at all",
    ),
    "alpha_outside_0_1": ("plan:\n  - {name: a, grid: [{alpha: 1.5}]}\n", "alpha=1.5 is outside [0, 1]"),
    "folds_below_2": (None, "cv.folds: Input should be greater than or equal to 2"),
    "budget_negative": (None, "budget.trials_per_week: Input should be greater than or equal to 0"),
}


@pytest.mark.parametrize("case", list(STUDY_FILE_CASES))
def test_bad_study_file_is_one_line_and_writes_nothing(case, study_dir, capsys, week):
    extra, expected = STUDY_FILE_CASES[case]
    text = study_text("data.csv", extra=extra or "")
    if case == "folds_below_2":
        text = text.replace("folds: 3", "folds: 1")
    if case == "budget_negative":
        text = text.replace("trials_per_week: 2", "trials_per_week: -1")
    study = study_dir / f"bad_{case}.yaml"
    study.write_text(text)
    before = tree_hashes(study_dir)
    code, _out, err = run_cli(["search", str(study), "--no-progress"], capsys)
    assert_one_error_line(code, err, "search", expected)
    assert tree_hashes(study_dir) == before


def test_unreachable_storage_is_one_line_without_the_password(study_dir, capsys, week, monkeypatch):
    monkeypatch.setenv("LOSSTUNE_TEST_BAD_PG", f"postgresql+psycopg2://losstune:{SECRET}@127.0.0.1:1/nowhere")
    study = study_dir / "bad_storage.yaml"
    study.write_text(study_text("data.csv", extra="storage: ${LOSSTUNE_TEST_BAD_PG}\n"))
    before = tree_hashes(study_dir)
    code, out, err = run_cli(["search", str(study), "--no-progress"], capsys)
    assert_one_error_line(
        code, err, "search", "cannot open storage postgresql+psycopg2://losstune:***@127.0.0.1:1/nowhere"
    )
    assert SECRET not in out + err
    assert tree_hashes(study_dir) == before


@pytest.mark.parametrize(
    ("name", "key", "target", "message"),
    [
        ("bad_storage_dir", "storage", ("no", "such", "x.db"), "does not exist"),
        ("bad_tracking", "tracking", ("blocker", "mlflow.db"), "is not a directory"),  # a file where a folder should be
    ],
)
def test_unusable_store_location_is_one_line(study_dir, capsys, week, name, key, target, message):
    (study_dir / "blocker").write_text("a file where the MLflow directory should be\n")
    url = f"sqlite:///{study_dir.joinpath(*target)}"
    extra = f"storage: {url}\n" if key == "storage" else f"tracking: {{uri: '{url}'}}\n"
    study = study_dir / f"{name}.yaml"
    study.write_text(study_text("data.csv", extra=extra))
    before = tree_hashes(study_dir)
    code, _out, err = run_cli(["search", str(study), "--no-progress"], capsys)
    assert_one_error_line(code, err, "search", message)
    assert tree_hashes(study_dir) == before


def test_unwritable_artifact_directory_writes_nothing_at_all(tmp_path, capsys, week):
    """A new study whose artifact directory cannot be created: not even the Optuna file or mlflow.db appear."""
    synthetic_frame(n=60, seed=2, missing=False).to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "mlartifacts").write_text("not a directory\n")
    study = tmp_path / "study.yaml"
    study.write_text(study_text("data.csv", name="fresh"))
    before = tree_hashes(tmp_path)
    code, _out, err = run_cli(["search", str(study), "--no-progress"], capsys)
    assert_one_error_line(code, err, "search", "MLflow artifact directory")
    assert tree_hashes(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
def test_read_only_mlflow_directory_is_one_line(tmp_path, capsys, week):
    synthetic_frame(n=60, seed=2, missing=False).to_csv(tmp_path / "data.csv", index=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    study = tmp_path / "study.yaml"
    study.write_text(
        study_text("data.csv", name="ro", extra=f"tracking: {{uri: 'sqlite:///{locked / 'mlflow.db'}'}}\n")
    )
    locked.chmod(0o500)
    try:
        code, _out, err = run_cli(["search", str(study), "--no-progress"], capsys)
    finally:
        locked.chmod(0o700)
    assert_one_error_line(code, err, "search", "is not writable")


JAPANESE = pd.DataFrame(
    {
        "年齢": [23, 45, 31, 52, 38, 27, 61, 44, 35, 29] * 6,
        "地域": ["東京", "大阪", "名古屋", "福岡", "札幌"] * 12,
        "月額料金": [3200.5, 4100.0, 2800.25, 5100.75, 3900.0, 2500.5] * 10,
        "解約": (["はい"] + ["いいえ"] * 2) * 20,
    }
)


@pytest.mark.parametrize("encoding", ["utf-8", "cp932"])
def test_japanese_columns_work_through_search_and_evaluate(tmp_path_factory, capsys, week, encoding):
    tmp_path = tmp_path_factory.mktemp("jp") / "調査"  # a Japanese directory name too
    tmp_path.mkdir()
    (tmp_path / "顧客.csv").write_bytes(csv_bytes(JAPANESE, encoding))
    study = tmp_path / "study.yaml"
    study.write_text(
        study_text("顧客.csv", name="jp", target="解約", data_extra=', positive: "はい"'), encoding="utf-8"
    )
    code, out, err = run_cli(["search", str(study), "--budget", "2", "--no-progress"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert "study jp: 60 rows" in out
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("jp").experiment_id])
    trials = [r for r in runs if r.data.tags.get("losstune.role") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    misclassified = client.download_artifacts(trials[0].info.run_id, "misclassified.csv", str(tmp_path / "dl"))
    assert "地域" in Path(misclassified).read_text(encoding="utf-8")
    assert not [p for p in tmp_path.parent.rglob("*") if "%" in p.name]  # no percent-encoded twin directory

    code, out, err = run_cli(
        [
            "evaluate",
            "--data",
            str(tmp_path / "顧客.csv"),
            "--target",
            "解約",
            "--folds",
            "3",
            "--epochs",
            "2",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err


def test_changed_data_is_refused_without_writing(study_dir, capsys, week):
    """The one refusal that has to open the existing study (to read its fingerprint) leaves it intact too."""
    changed = pd.read_csv(study_dir / "data.csv")
    changed.loc[0, "num1"] += 1.0
    changed.to_csv(study_dir / "changed.csv", index=False)
    study = study_dir / "changed.yaml"
    study.write_text(study_text("changed.csv"))
    before = tree_hashes(study_dir)
    code, _out, err = run_cli(["search", str(study), "--no-progress"], capsys)
    assert_one_error_line(code, err, "search", "changed since this study started")
    code, _out, err = run_cli(["status", str(study)], capsys)
    assert code == 0, err
    assert tree_hashes(study_dir) == before


def test_changed_model_settings_are_refused_without_writing(study_dir, capsys, week):
    """The study's trials were trained with model {hidden: [8]} and today's default dropout; a study file that
    now asks for no dropout (or a losstune whose default model differs) would mix models in one comparison."""
    study = study_dir / "other_model.yaml"
    study.write_text(study_text("data.csv").replace("model: {hidden: [8]}", "model: {hidden: [8], dropout: 0.0}"))
    before = tree_hashes(study_dir)
    code, _out, err = run_cli(["search", str(study), "--no-progress"], capsys)
    assert_one_error_line(code, err, "search", "trained with other settings (model.dropout: dropout=0.15)")
    assert tree_hashes(study_dir) == before
    # the device is a worker's, not the model's: a GPU worker's study file differs only there and is accepted
    study.write_text(study_text("data.csv").replace("device: cpu", "device: auto"))
    code, _out, err = run_cli(["search", str(study), "--budget", "0", "--no-progress"], capsys)
    assert code == 0, err
