"""search.tracking.reports.write_trial_reports: every file is written and says what it should."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from objectives.config import MetricConfig, TrialConfig
from objectives.data import Dataset
from objectives.evaluate import EvaluationResult, score_oof
from search.tracking.reports import REPORT_FILES, write_trial_reports

FOLDS, EPOCHS = 3, 4
DEFAULT_METRIC = MetricConfig()


def make_trial(n: int = 300, seed: int = 0, metric: MetricConfig = DEFAULT_METRIC) -> tuple[EvaluationResult, Dataset]:
    """A scored trial without any training: noisy OOF probabilities, per-fold loss curves, features with a
    column named ``row`` (clashes with a misclassified.csv column)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(np.int8)
    proba = np.clip(0.25 + 0.35 * (y - 0.25) + rng.normal(scale=0.2, size=n), 0.001, 0.999).round(3)  # ties too
    fold_of_row = rng.permutation(np.arange(n) % FOLDS)
    scored = score_oof(y, proba, fold_of_row, metric)
    train_loss = np.linspace(0.7, 0.3, EPOCHS)[None, :] + 0.01 * np.arange(FOLDS)[:, None]
    val_loss = train_loss + 0.05
    result = EvaluationResult.of(
        scored,
        train_loss=train_loss,
        val_loss=val_loss,
        n_rows=n,
        positive_rate=float(y.mean()),
        fingerprint="sha256:test",
        seconds=1.5,
    )
    features = pd.DataFrame(
        {"x": rng.normal(size=n), "row": np.arange(n) * 10.0, "color": rng.choice(["red", "blue"], size=n)}
    )
    dataset = Dataset(
        features=features,
        y=y,
        positive_label="yes",
        negative_label="no",
        numeric_columns=["x", "row"],
        categorical_columns=["color"],
        fingerprint="sha256:test",
        source=Path("data.csv"),
    )
    return result, dataset


@pytest.fixture(scope="module")
def trial() -> tuple[EvaluationResult, Dataset]:
    return make_trial()


def test_writes_every_file(tmp_path: Path, trial) -> None:
    result, dataset = trial
    paths = write_trial_reports(tmp_path / "reports", result, dataset, TrialConfig())
    assert sorted(p.name for p in paths) == sorted(REPORT_FILES)
    for path in paths:
        assert path.parent == tmp_path / "reports"
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learning_curves_csv(tmp_path: Path, trial) -> None:
    result, dataset = trial
    write_trial_reports(tmp_path, result, dataset, TrialConfig())
    table = pd.read_csv(tmp_path / "learning_curves.csv")
    assert list(table.columns) == ["fold", "epoch", "train_loss", "val_loss"]
    assert len(table) == FOLDS * EPOCHS
    for row in table.itertuples():
        assert row.train_loss == pytest.approx(result.train_loss[row.fold, row.epoch - 1])  # epochs from 1
        assert row.val_loss == pytest.approx(result.val_loss[row.fold, row.epoch - 1])


def test_confusion_matrix_and_classification_report(tmp_path: Path, trial) -> None:
    result, dataset = trial
    write_trial_reports(tmp_path, result, dataset, TrialConfig())
    (tn, fp), (fn, tp) = result.confusion_matrix
    saved = json.loads((tmp_path / "confusion_matrix.json").read_text())
    assert saved == {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "threshold": result.threshold}
    pred = result.oof_proba >= result.threshold
    assert tp == int(np.sum(pred & (result.y_true == 1)))

    report = (tmp_path / "classification_report.txt").read_text()
    lines = {line.split()[0]: line.split() for line in report.splitlines() if line.strip()}
    assert float(lines["yes"][1]) == pytest.approx(result.precision, abs=1e-4)
    assert float(lines["yes"][2]) == pytest.approx(result.recall, abs=1e-4)
    assert int(lines["yes"][4]) == int(result.y_true.sum())
    assert int(lines["no"][4]) == int((result.y_true == 0).sum())


@pytest.mark.parametrize("top_n", [5, 1000])
def test_misclassified_rows_are_wrong_and_sorted(tmp_path: Path, trial, top_n: int) -> None:
    result, dataset = trial
    write_trial_reports(tmp_path, result, dataset, TrialConfig(), top_n=top_n)
    table = pd.read_csv(tmp_path / "misclassified.csv")
    assert list(table.columns) == ["kind", "row", "fold", "y_true", "proba", "x", "row (feature)", "color"]

    y, proba, t = result.y_true, result.oof_proba, result.threshold
    all_fp = np.flatnonzero((proba >= t) & (y == 0))
    all_fn = np.flatnonzero((proba < t) & (y == 1))
    fp, fn = table[table.kind == "FP"], table[table.kind == "FN"]
    assert len(fp) == min(top_n, len(all_fp)) and len(fn) == min(top_n, len(all_fn))
    assert list(table.kind) == ["FP"] * len(fp) + ["FN"] * len(fn)
    # really misclassified at the threshold, as the result says
    assert (y[fp.row] == 0).all() and (proba[fp.row] >= t).all()
    assert (y[fn.row] == 1).all() and (proba[fn.row] < t).all()
    assert (table.y_true.to_numpy() == y[table.row]).all()
    assert np.allclose(table.proba, proba[table.row])
    assert (table.fold.to_numpy() == result.fold_of_row[table.row]).all()
    # the most confident mistakes, in order: FP by proba descending, FN by proba ascending
    assert fp.proba.is_monotonic_decreasing and fn.proba.is_monotonic_increasing
    assert fp.proba.min() >= np.sort(proba[all_fp])[::-1][len(fp) - 1]
    assert fn.proba.max() <= np.sort(proba[all_fn])[len(fn) - 1]
    # the row's own features, the clashing "row" feature renamed
    expected = dataset.features.iloc[table.row].reset_index(drop=True)
    assert np.allclose(table.x, expected.x)
    assert np.allclose(table["row (feature)"], expected["row"])
    assert (table.color == expected.color).all()


def test_misclassified_with_top_n_zero_has_only_the_header(tmp_path: Path, trial) -> None:
    result, dataset = trial
    write_trial_reports(tmp_path, result, dataset, TrialConfig(), top_n=0)
    table = pd.read_csv(tmp_path / "misclassified.csv")
    assert table.empty and list(table.columns)[:5] == ["kind", "row", "fold", "y_true", "proba"]


def test_fbeta_metric_and_a_perfect_model(tmp_path: Path) -> None:
    metric = MetricConfig(name="fbeta", beta=2.0)
    result, dataset = make_trial(n=60, seed=1, metric=metric)
    result.oof_proba = result.y_true.astype(float) * 0.8 + 0.1  # separable: no mistakes at all
    result.threshold = 0.5
    result.confusion_matrix = [[int((result.y_true == 0).sum()), 0], [0, int(result.y_true.sum())]]
    paths = write_trial_reports(tmp_path, result, dataset, TrialConfig(metric=metric))
    assert len(paths) == len(REPORT_FILES)
    assert pd.read_csv(tmp_path / "misclassified.csv").empty


def test_refuses_a_result_of_another_dataset(tmp_path: Path, trial) -> None:
    result, _ = trial
    _, other = make_trial(n=50)
    with pytest.raises(ValueError, match="do not belong together"):
        write_trial_reports(tmp_path, result, other, TrialConfig())


def test_japanese_labels_draw_without_missing_glyph_warnings(tmp_path):
    import warnings

    from objectives.config import TrainConfig, TrialConfig
    from objectives.data import DataSpec, load_dataset
    from objectives.evaluate import evaluate
    from tests.conftest import synthetic_frame

    frame = synthetic_frame(n=150).rename(columns={"num1": "年齢"})
    frame["label"] = frame["label"].map({"yes": "はい", "no": "いいえ"})
    frame.to_csv(tmp_path / "jp.csv", index=False)
    dataset = load_dataset(DataSpec(path=tmp_path / "jp.csv", target="label"))
    config = TrialConfig(train=TrainConfig(epochs=1))
    result = evaluate(dataset, config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font" would be a UserWarning
        write_trial_reports(tmp_path / "out", result, dataset, config)
    report = (tmp_path / "out" / "classification_report.txt").read_text()
    assert "はい" in report and "いいえ" in report
