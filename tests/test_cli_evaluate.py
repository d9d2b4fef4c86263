"""``losstune evaluate``: JSON and OOF outputs, one-line errors with exit status 2, and no Optuna/MLflow import."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from objectives.config import MetricConfig
from objectives.threshold import best_threshold
from search.cli import EXIT_BAD_INPUT, main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--folds", "3", "--epochs", "2", "--hidden", "8", "--batch-size", "32", "--lr", "0.01", "--device", "cpu"]
JSON_KEYS = {
    "metric",
    "threshold",
    "oof_score",
    "honest_score_mean",
    "honest_score_std",
    "fold_scores",
    "f1_at_0_5",
    "precision",
    "recall",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "seconds",
}


def evaluate_args(path: Path, *extra: str) -> list[str]:
    return ["evaluate", "--data", str(path), "--target", "label", *FAST, *extra]


def test_json_output(write_csv, capsys):
    rc = main(evaluate_args(write_csv(), "--json"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.count("\n") == 1  # one JSON object on one line
    result = json.loads(out)
    assert result.keys() >= JSON_KEYS
    assert result["metric"] == "f1"
    assert len(result["fold_scores"]) == 3 and len(result["honest_fold_scores"]) == 3
    for key in ("oof_score", "honest_score_mean", "f1_at_0_5", "precision", "recall", "roc_auc", "pr_auc"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["oof_score"] > 0.0 and result["log_loss"] > 0.0 and result["seconds"] > 0.0
    assert result["n_rows"] == 120
    assert "oof_proba" not in result  # arrays stay out of the JSON


def test_oof_out_csv(write_csv, tmp_path, capsys):
    data = write_csv()
    oof_path = tmp_path / "oof.csv"
    rc = main(evaluate_args(data, "--json", "--oof-out", str(oof_path), "--metric", "macro_f1"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads(out)
    oof = pd.read_csv(oof_path)
    assert list(oof.columns) == ["row", "repeat", "fold", "y_true", "proba"]
    assert len(oof) == 120 and set(oof["repeat"]) == {0}
    assert oof["row"].tolist() == list(range(120))
    assert sorted(oof["fold"].unique().tolist()) == [0, 1, 2]
    expected_y = (pd.read_csv(data)["label"] == "yes").astype(int)
    assert oof["y_true"].tolist() == expected_y.tolist()
    assert oof["proba"].between(0.0, 1.0).all()
    assert not list(tmp_path.glob("*.tmp"))
    # the exported probabilities are the ones the threshold was chosen on
    choice = best_threshold(oof["y_true"].to_numpy(), oof["proba"].to_numpy(), MetricConfig(name="macro_f1"))
    assert result["metric"] == "macro_f1"
    assert result["threshold"] == pytest.approx(choice.threshold, rel=1e-12)
    assert result["oof_score"] == pytest.approx(choice.score, rel=1e-12)


def test_oof_out_csv_holds_every_repeat(write_csv, tmp_path, capsys):
    """``--repeats 2``: each data row once per repeat; repeat 0 is the plain K-fold run's, and the threshold is
    the one chosen on both repeats' predictions pooled."""
    data = write_csv()
    plain, repeated = tmp_path / "plain.csv", tmp_path / "repeated.csv"
    # no dropout: the two repeats' models train as one stack, whose dropout masks are drawn together
    assert main(evaluate_args(data, "--json", "--dropout", "0", "--oof-out", str(plain))) == 0
    capsys.readouterr()
    args = evaluate_args(data, "--json", "--dropout", "0", "--repeats", "2", "--oof-out", str(repeated))
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    one, two = pd.read_csv(plain), pd.read_csv(repeated)
    assert len(two) == 240 and two["repeat"].tolist() == [0] * 120 + [1] * 120
    assert two["row"].tolist() == list(range(120)) * 2
    first = two[two["repeat"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, one)  # repeat 0 is exactly the split and seeds of cv.seed
    second = two[two["repeat"] == 1]
    assert second["y_true"].tolist() == one["y_true"].tolist()
    assert second["fold"].tolist() != one["fold"].tolist()  # its own split
    pooled = best_threshold(two["y_true"].to_numpy(), two["proba"].to_numpy(), MetricConfig())
    assert result["threshold"] == pytest.approx(pooled.threshold, rel=1e-12)
    assert len(result["repeat_scores"]) == 2


def test_human_summary(write_csv, capsys):
    rc = main(evaluate_args(write_csv(), "--metric", "fbeta", "--beta", "2"))
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "threshold" in out and "honest f2" in out and "label 'yes'" in out and "3 folds x 2 epochs" in out


def test_positive_and_loss_options_are_applied(write_csv, capsys):
    rc = main(evaluate_args(write_csv(), "--json", "--positive", "no", "--alpha", "0.75", "--gamma", "1"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["positive_rate"] == pytest.approx(84 / 120)


def _bad_input(case, write_csv, write_text, tmp_path):
    junk = "amount,label\n" + "".join(f"{i},{'yes' if i % 3 == 0 else 'no'}\n" for i in range(20))
    cases = {
        "missing file": (
            lambda: ["evaluate", "--data", str(tmp_path / "missing.csv"), "--target", "label"],
            "not found",
        ),
        "no --data": (lambda: ["evaluate", "--target", "label"], "--data"),
        "missing target": (lambda: ["evaluate", "--data", str(write_csv()), "--target", "churn"], "'churn'"),
        "junk column": (
            lambda: ["evaluate", "--data", str(write_text(junk.replace("\n7,", "\n?,"))), "--target", "label"],
            "--na-value '?'",
        ),
        "alpha out of range": (lambda: evaluate_args(write_csv(), "--alpha", "1.5"), "alpha"),
        "silent class": (lambda: evaluate_args(write_csv(), "--alpha", "1", "--bce-weight", "0"), "negatives"),
        "one fold": (lambda: evaluate_args(write_csv(), "--folds", "1"), "folds"),
        "too many folds": (lambda: evaluate_args(write_csv(positive_rate=0.05), "--folds", "7"), "only 6 positive"),
        "diverges": (lambda: evaluate_args(write_csv(), "--lr", "1e20"), "diverged"),
        "beta without fbeta": (lambda: evaluate_args(write_csv(), "--beta", "2"), "beta"),
        "oof-out directory missing": (
            lambda: evaluate_args(write_csv(), "--oof-out", str(tmp_path / "no" / "oof.csv")),
            "does not exist",
        ),
    }
    make_argv, expected = cases[case]
    return make_argv(), expected


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "no --data",
        "missing target",
        "junk column",
        "alpha out of range",
        "silent class",
        "one fold",
        "too many folds",
        "diverges",
        "beta without fbeta",
        "oof-out directory missing",
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(case, write_csv, write_text, tmp_path, capsys):
    argv, expected = _bad_input(case, write_csv, write_text, tmp_path)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == EXIT_BAD_INPUT == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("losstune evaluate: error: ")
    assert expected in lines[0]


def test_argparse_errors_also_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--folds", "three"])
    assert exc.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_bad_input(write_csv, capsys):
    rc = main(["evaluate", "--data", str(write_csv()), "--target", "label", "--device", "cuda", "--epochs", "1"])
    assert rc == 2
    assert "cuda" in capsys.readouterr().err


def test_evaluate_imports_neither_optuna_nor_mlflow(write_csv):
    if not (importlib.util.find_spec("optuna") and importlib.util.find_spec("mlflow")):
        pytest.skip("optuna or mlflow is not installed: nothing could leak")
    data = write_csv(n=60)
    code = f"""
import sys
import objectives.config, objectives.data, objectives.evaluate, objectives.losses, objectives.threshold
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("search", "optuna", "mlflow"))
assert not leaked, f"objectives imported {{leaked}}"
from search.cli import main
rc = main({evaluate_args(data, "--json")!r})
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("optuna", "mlflow"))
print("RESULT", rc, leaked)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "RESULT 0 []" in proc.stdout, proc.stdout + proc.stderr


def test_only_options_given_override_the_config_and_alpha_none_counts():
    from search.cli import build_parser
    from search.model.evaluate_config import trial_overrides

    parser = build_parser()
    assert trial_overrides(parser.parse_args(["evaluate"])) == {}
    assert trial_overrides(parser.parse_args(["evaluate", "--alpha", "none", "--epochs", "3"])) == {
        "loss": {"alpha": None},
        "train": {"epochs": 3},
    }
