"""A user's own model through the engine: trained stacked as it is trained alone (within the engine's stated
tolerance, folds of unequal size), a module that cannot be stacked refused before any store, and the worked
example of ``studies/`` (``my_model.py``, ``my_model.yaml``) end to end: search, export, evaluate, train, predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from objectives.config import LossConfig, ModelConfig, TrainConfig
from objectives.data import DataSpec, load_dataset
from objectives.engine import ALONE_ATOL, ALONE_RTOL, train_folds
from objectives.evaluate import fold_seeds, sigmoid, stratified_folds
from objectives.preprocess import fit_fold_preprocessors
from objectives.user_module import load_user_class
from search.cli import main
from tests.test_user_model import one_line, study, tree, user_dir  # noqa: F401 - user_dir is a fixture

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"


def test_a_user_module_trained_in_a_stack_matches_it_trained_alone(write_csv):
    """The example's BinaryClassifier (without dropout: a stack draws other masks than a model alone) on 4 folds of
    76-77 training rows, the shorter folds' last batches masked: each model as it is alone, within the tolerance."""
    load_user_class("my_model:BinaryClassifier", [STUDIES])
    model = ModelConfig(module="my_model:BinaryClassifier", kwargs={"hidden": [16, 8], "dropout": 0.0})
    ds = load_dataset(DataSpec(path=write_csv(n=102, seed=3), target="label"))
    splits = stratified_folds(ds.y, 4, seed=0)
    train_rows, val_rows = [tr for tr, _ in splits], [va for _, va in splits]
    assert len({len(r) for r in train_rows}) > 1, "the folds should differ in size"
    _, x = fit_fold_preprocessors(ds.features, ds.numeric_columns, ds.categorical_columns, train_rows)
    loss = LossConfig(alpha=0.25, gamma=2.0, bce_weight=0.5, focal_weight=0.5)
    train = TrainConfig(epochs=4, batch_size=16, lr=1e-2, weight_decay=1e-3, device="cpu")
    seeds = fold_seeds(0, 4)
    together = train_folds(x, ds.y, train_rows, val_rows, loss, model, train, seeds)
    for k in range(4):
        alone = train_folds(x[k : k + 1], ds.y, [train_rows[k]], [val_rows[k]], loss, model, train, seeds[k : k + 1])
        np.testing.assert_allclose(
            sigmoid(together.val_logits[k]), sigmoid(alone.val_logits[0]), rtol=ALONE_RTOL, atol=ALONE_ATOL
        )
        np.testing.assert_allclose(together.train_loss[k], alone.train_loss[0], rtol=ALONE_RTOL)
    assert not np.allclose(together.val_logits[0][:5], together.val_logits[1][:5])  # four models, not one
    assert np.all(together.train_loss[:, -1] < together.train_loss[:, 0])  # and they learn
    assert set(together.state_dict(0)) == {f"net.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}


UNSTACKABLE = """\
import torch
from torch import nn


class BatchNormed(nn.Module):
    def __init__(self, n_features):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)
"""


def test_a_batch_norm_model_is_refused_before_any_store(user_dir, capsys):  # noqa: F811 - the fixture
    (user_dir / "unstackable.py").write_text(UNSTACKABLE)
    path = study(user_dir, "{module: 'unstackable:BatchNormed'}")
    before = tree(user_dir)
    code = main(["search", str(path), "--no-progress"])
    one_line(code, capsys.readouterr().err, "search", "cannot be trained stacked: its layer 'net.1' is a BatchNorm1d")
    assert tree(user_dir) == before


@pytest.mark.slow
def test_the_worked_example_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """studies/my_model.yaml, copied with its module and the demo data: two trials of the default plan, then
    export, evaluate --config, train and predict (the model directory bundling studies/my_model.py)."""
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-30T09:00:00")
    shutil.copy(STUDIES / "my_model.py", tmp_path / "my_model.py")
    shutil.copytree(STUDIES / "data", tmp_path / "data")
    text = (STUDIES / "my_model.yaml").read_text().replace("epochs: 15", "epochs: 3")
    (tmp_path / "my_model.yaml").write_text(text)
    assert main(["search", str(tmp_path / "my_model.yaml"), "--budget", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "t000" in out and "t001" in out, out
    assert main(["export", str(tmp_path / "my_model.yaml"), "-o", str(tmp_path / "best.yaml")]) == 0
    exported = (tmp_path / "best.yaml").read_text()
    assert "module: my_model:BinaryClassifier" in exported and "module_dir: .\n" in exported, exported
    assert main(["evaluate", "--config", str(tmp_path / "best.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["oof_score"] > 0
    model_dir = tmp_path / "model"
    assert main(["train", str(tmp_path / "best.yaml"), "-o", str(model_dir), "--no-track"]) == 0
    manifest = json.loads((model_dir / "artifacts" / "losstune_model.json").read_text())
    assert manifest["model_module"]["module"] == "my_model:BinaryClassifier"
    assert (model_dir / "artifacts" / "my_model.py").read_bytes() == (STUDIES / "my_model.py").read_bytes()
    test = tmp_path / "data" / "demo_churn_test.csv"
    submission = tmp_path / "submission.csv"
    assert main(["predict", str(model_dir), str(test), "-o", str(submission), "--proba"]) == 0
    predicted = pd.read_csv(submission)
    assert len(predicted) == len(pd.read_csv(test)) and predicted["proba"].between(0, 1).all()
