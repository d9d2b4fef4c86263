"""Per-fold preprocessing without leakage, reproducible evaluation, stacked = one-by-one training (within float32
tolerance, for the built-in MLP and a module of the test's own), modules that cannot be stacked, divergence."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from objectives.config import (
    CVConfig,
    LossConfig,
    MetricConfig,
    ModelConfig,
    NumericEncoding,
    TrainConfig,
    TrialConfig,
)
from objectives.data import DataSpec, load_dataset
from objectives.engine import ALONE_ATOL, ALONE_RTOL, train_folds
from objectives.errors import LosstuneError, TrainingDiverged
from objectives.evaluate import (
    evaluate,
    evaluate_batch,
    evaluate_many,
    fold_seeds,
    prepare_folds,
    repeat_seed,
    sigmoid,
    stratified_folds,
)
from objectives.model import build_module
from objectives.preprocess import cap_quantiles, category_codes, fit_fold_preprocessors, make_preprocessor
from objectives.stack import UnstackableModel
from objectives.threshold import best_threshold, cross_fitted_scores


def _fitted_state(ct, vocabulary: dict[str, np.ndarray]) -> dict[str, object]:
    """The fitted statistics, with the categorical codes translated back to the values they stand for."""
    numeric = ct.named_transformers_["numeric"]  # the columns with missing values
    complete = ct.named_transformers_["numeric_complete"]  # those without: a scaler alone
    categorical = ct.named_transformers_["categorical"]
    names = list(vocabulary)
    scalers = [numeric.named_steps["scale"], complete]
    return {
        "num_impute": numeric.named_steps["impute"].statistics_,
        "scale_mean": np.concatenate([sc.mean_ for sc in scalers]),
        "scale_scale": np.concatenate([sc.scale_ for sc in scalers]),
        "scale_var": np.concatenate([sc.var_ for sc in scalers]),
        "cat_impute": [vocabulary[c][int(v)] for c, v in zip(names, categorical.named_steps["impute"].statistics_)],
        "categories": [
            vocabulary[c][cats.astype(int)] for c, cats in zip(names, categorical.named_steps["onehot"].categories_)
        ],
    }


def _same_state(a: dict, b: dict) -> bool:
    for key in a:
        if key == "categories":
            if len(a[key]) != len(b[key]) or not all(np.array_equal(x, y) for x, y in zip(a[key], b[key])):
                return False
        elif not np.array_equal(a[key], b[key]):
            return False
    return True


# --- preprocessing -------------------------------------------------------------------------------------------


def test_validation_rows_never_reach_fit(small_dataset):
    ds = small_dataset
    splits = stratified_folds(ds.y, 3, seed=0)
    train_rows = [tr for tr, _ in splits]
    val0 = splits[0][1]
    fitted, x = fit_fold_preprocessors(ds.features, ds.numeric_columns, ds.categorical_columns, train_rows)

    poisoned = ds.features.copy()
    for col in ds.numeric_columns:
        poisoned.iloc[val0, poisoned.columns.get_loc(col)] = 1e9
    poisoned.iloc[val0, poisoned.columns.get_loc("color")] = "POISON"
    fitted_p, x_p = fit_fold_preprocessors(poisoned, ds.numeric_columns, ds.categorical_columns, train_rows)

    # fold 0 trains without its validation rows: every fitted statistic is identical
    vocab, vocab_p = (category_codes(f, ds.categorical_columns)[1] for f in (ds.features, poisoned))
    assert _same_state(_fitted_state(fitted[0], vocab), _fitted_state(fitted_p[0], vocab_p))
    width = x.shape[2]
    np.testing.assert_array_equal(x[0][train_rows[0]], x_p[0][train_rows[0], :width])
    # the poisoned validation rows are only transformed: huge standardised values, an all-zero one-hot block
    n_num = len(ds.numeric_columns)
    assert np.all(x_p[0][val0, :n_num] > 1e6)
    assert np.all(x_p[0][val0, n_num:] == 0.0)

    # folds 1 and 2 train on those rows, so the poison does reach them: the check above can fail
    for k in (1, 2):
        state = _fitted_state(fitted_p[k], vocab_p)
        assert not _same_state(_fitted_state(fitted[k], vocab), state)
        assert np.all(state["scale_mean"] > 1e7)
        assert "POISON" in state["categories"][0]


@pytest.mark.parametrize(
    "encoding",
    [
        NumericEncoding(),
        NumericEncoding("quantile", bins=4),
        NumericEncoding("robust", bins=6),
        NumericEncoding("standard", bins=6, target_bins=True),
    ],
    ids=lambda e: f"{e.scaling}-{e.bins}-{'target' if e.target_bins else 'quantile'}",
)
def test_coded_categories_give_the_matrix_the_strings_give(encoding):
    """The shortcuts are only faster: ties in the most-frequent value, missing cells, complete numeric columns,
    Japanese values and a value seen only in one fold's validation rows give exactly what make_preprocessor
    fitted on the raw strings gives."""
    rng = np.random.default_rng(5)
    n = 400
    features = pd.DataFrame(
        {
            "z": rng.normal(loc=3.0, size=n),  # no missing value: skips the imputer, and must come back in place
            "x": rng.normal(size=n),
            "w": rng.integers(0, 9, size=n),
            "地域": rng.choice(np.array(["東京", "大阪", "名古屋", "Osaka"], dtype=object), size=n),
            "plan": np.array(["b", "a"] * (n // 2), dtype=object),  # a tie: most-frequent must pick "a"
        }
    )
    features.loc[rng.choice(n, 30, replace=False), "地域"] = np.nan
    features.loc[rng.choice(n, 25, replace=False), "plan"] = np.nan
    features.loc[rng.choice(n, 20, replace=False), "x"] = np.nan
    train_rows = [np.arange(0, 300), np.arange(100, 400), np.r_[0:100, 200:400]]
    features.loc[[310, 320], "地域"] = "札幌"  # only in fold 0's validation rows
    numeric, categorical = ["z", "x", "w"], ["地域", "plan"]
    y = (features["z"] + rng.normal(size=n) > 3.0).to_numpy(dtype=np.int64)  # labels for target-aware bins
    _, x = fit_fold_preprocessors(features, numeric, categorical, train_rows, encoding, y)
    widths = []
    for k, rows in enumerate(train_rows):
        pre = make_preprocessor(numeric, categorical, encoding)
        cap_quantiles(pre, len(rows))  # as the folds do: no more quantiles than rows
        expected = pre.fit(features.iloc[rows], y[rows]).transform(features)
        np.testing.assert_array_equal(x[k][:, : expected.shape[1]], np.asarray(expected, dtype=np.float32))
        assert np.all(x[k][:, expected.shape[1] :] == 0.0)
        widths.append(expected.shape[1])
    assert x.shape[2] == max(widths)
    if not encoding.target_bins:  # target-aware bins leave out the bins a fold's tree did not use
        assert x.shape[2] == 3 * encoding.width + 5 + 2  # fold 1 and 2 know 札幌


def test_fold_widths_differ_and_are_zero_padded(small_dataset):
    ds = small_dataset
    splits = stratified_folds(ds.y, 3, seed=0)
    train_rows = [tr for tr, _ in splits]
    features = ds.features.copy()
    rare = splits[2][1][:2]  # a category seen only in fold 2's validation rows: folds 0 and 1 train on it
    features.iloc[rare, features.columns.get_loc("color")] = "violet"
    fitted, x = fit_fold_preprocessors(features, ds.numeric_columns, ds.categorical_columns, train_rows)
    widths = [len(ct.get_feature_names_out()) for ct in fitted]
    assert widths == [6, 6, 5]  # 2 numeric + red/green/blue (+ violet)
    assert x.shape == (3, ds.n_rows, 6) and x.dtype == np.float32
    assert np.all(x[2][:, 5] == 0.0)  # fold 2's padding column
    assert np.all(x[2][rare, 2:] == 0.0)  # unknown to fold 2: all-zero block
    # standardisation inside each fold: training rows have mean 0 (missing values imputed by the median)
    for k in range(3):
        np.testing.assert_allclose(x[k][train_rows[k], :2].mean(axis=0), 0.0, atol=1e-5)


# --- evaluate: reproducibility and bookkeeping ------------------------------------------------------------------


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_same_seed_same_result_different_seed_different_result(small_dataset, fast_config, dropout):
    cfg = fast_config.model_copy(update={"model": ModelConfig(hidden=(8,), dropout=dropout)})
    a = evaluate(small_dataset, cfg)
    b = evaluate(small_dataset, cfg)
    _same_result(a, b)  # dropout too: its masks come from a stream seeded per stack

    c = evaluate(small_dataset, cfg.model_copy(update={"cv": CVConfig(folds=3, seed=1)}))
    assert not np.array_equal(a.fold_of_row, c.fold_of_row)
    assert not np.array_equal(a.oof_proba, c.oof_proba)


def test_evaluation_result_is_consistent(small_dataset, fast_config):
    r = evaluate(small_dataset, fast_config)
    n = small_dataset.n_rows
    assert r.oof_proba.shape == (n,) and np.all((r.oof_proba >= 0) & (r.oof_proba <= 1))
    assert sorted(np.bincount(r.fold_of_row).tolist()) == [40, 40, 40]
    assert np.array_equal(r.y_true, small_dataset.y)
    assert r.train_loss.shape == (3, fast_config.train.epochs) and np.isfinite(r.val_loss).all()
    choice = best_threshold(r.y_true, r.oof_proba, fast_config.metric)
    assert (r.threshold, r.oof_score) == (choice.threshold, choice.score)
    honest = cross_fitted_scores(r.y_true, r.oof_proba, r.fold_of_row, fast_config.metric)
    assert r.honest_fold_scores == honest.tolist()
    assert r.honest_score_mean == pytest.approx(honest.mean())
    (tn, fp), (fn, tp) = r.confusion_matrix
    assert tn + fp + fn + tp == n and tp + fn == small_dataset.y.sum()
    assert tp + fp == int(np.sum(r.oof_proba >= r.threshold))
    assert r.n_rows == n and r.fingerprint == small_dataset.fingerprint
    # the MLP learns something on this easy synthetic target
    assert r.roc_auc > 0.75

    # the OOF probabilities are the sigmoid of each fold model's logits on its own validation rows
    ds, cfg = small_dataset, fast_config
    splits = stratified_folds(ds.y, cfg.cv.folds, cfg.cv.seed)
    train_rows, val_rows = [tr for tr, _ in splits], [va for _, va in splits]
    encoding = cfg.model.numeric_encoding
    _, x = fit_fold_preprocessors(ds.features, ds.numeric_columns, ds.categorical_columns, train_rows, encoding, ds.y)
    trained = train_folds(
        x, ds.y, train_rows, val_rows, cfg.loss, cfg.model, cfg.train, fold_seeds(cfg.cv.seed, cfg.cv.folds)
    )
    for k, (rows, logits) in enumerate(zip(val_rows, trained.val_logits)):
        assert np.all(r.fold_of_row[rows] == k)
        np.testing.assert_allclose(r.oof_proba[rows], 1.0 / (1.0 + np.exp(-logits)), rtol=1e-12, atol=0)


def test_fold_seeds_are_distinct_and_deterministic():
    assert fold_seeds(0, 5) == fold_seeds(0, 5)
    assert len(set(fold_seeds(0, 5))) == 5
    assert fold_seeds(0, 5) != fold_seeds(1, 5)


# --- vectorised training equals one fold at a time --------------------------------------------------------------

LOSS = LossConfig(alpha=0.25, gamma=2.0, bce_weight=0.5, focal_weight=0.5)
MODEL = ModelConfig(hidden=(16, 8), dropout=0.0)


@pytest.fixture
def fold_inputs(write_csv):
    """102 rows in 4 folds: training sets of 76-77 rows, all 5 steps per epoch at batch size 16."""
    ds = load_dataset(DataSpec(path=write_csv(n=102, seed=3), target="label"))
    splits = stratified_folds(ds.y, 4, seed=0)
    train_rows = [tr for tr, _ in splits]
    val_rows = [va for _, va in splits]
    _, x = fit_fold_preprocessors(ds.features, ds.numeric_columns, ds.categorical_columns, train_rows)
    return ds.y, x, train_rows, val_rows, fold_seeds(0, 4)


def _assert_alone(together, k: int, alone, m: int = 0) -> None:
    """Model k of ``together`` is model m of ``alone`` within the engine's stated float32 tolerance: its OOF
    probabilities (engine.ALONE_RTOL relative, ALONE_ATOL absolute) and its loss curves."""
    np.testing.assert_allclose(
        sigmoid(together.val_logits[k]), sigmoid(alone.val_logits[m]), rtol=ALONE_RTOL, atol=ALONE_ATOL
    )
    np.testing.assert_allclose(together.train_loss[k], alone.train_loss[m], rtol=ALONE_RTOL)
    np.testing.assert_allclose(together.val_loss[k], alone.val_loss[m], rtol=ALONE_RTOL)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_stacked_training_matches_one_fold_at_a_time(fold_inputs, weight_decay):
    """Folds of unequal size (76-77 rows: the shorter ones' last batch is masked) trained in one stack give what
    each gives alone, within the stated tolerance; not bit for bit (a stack's kernels sum in other orders)."""
    y, x, train_rows, val_rows, seeds = fold_inputs
    train = TrainConfig(epochs=4, batch_size=16, lr=1e-2, weight_decay=weight_decay, device="cpu")
    sizes = [len(r) for r in train_rows]
    assert len(set(sizes)) > 1, "the folds should differ in size, so that the masking of short batches is exercised"
    assert len({math.ceil(s / train.batch_size) for s in sizes}) == 1, "precondition: same steps per epoch"

    together = train_folds(x, y, train_rows, val_rows, LOSS, MODEL, train, seeds)
    assert len(together.stacks) == 1
    for k in range(len(train_rows)):
        alone = train_folds(x[k : k + 1], y, [train_rows[k]], [val_rows[k]], LOSS, MODEL, train, seeds[k : k + 1])
        assert together.val_logits[k].shape == (len(val_rows[k]),)
        _assert_alone(together, k, alone)
    # the folds really are different models (not one model broadcast K times), and they learn
    assert not np.allclose(together.val_logits[0][:5], together.val_logits[1][:5])
    assert together.train_loss.shape == (4, 4)
    assert np.all(together.train_loss[:, -1] < together.train_loss[:, 0])


def test_the_same_seed_trains_the_same_stack_and_another_seed_another():
    y, x, train_rows, val_rows = _two_folds(81)
    train = TrainConfig(epochs=3, batch_size=16, lr=1e-2, device="cpu")
    first = train_folds(x, y, train_rows, val_rows, LOSS, MODEL, train, [11, 12])
    again = train_folds(x, y, train_rows, val_rows, LOSS, MODEL, train, [11, 12])
    other = train_folds(x, y, train_rows, val_rows, LOSS, MODEL, train, [13, 12])
    for k in range(2):
        np.testing.assert_allclose(first.val_logits[k], again.val_logits[k], rtol=ALONE_RTOL, atol=ALONE_ATOL)
    assert not np.allclose(first.val_logits[0], other.val_logits[0], rtol=1e-3)


def test_exported_fold_weights_reproduce_the_fold_logits(fold_inputs):
    y, x, train_rows, val_rows, seeds = fold_inputs
    train = TrainConfig(epochs=2, batch_size=16, lr=1e-2, device="cpu")
    trained = train_folds(x, y, train_rows, val_rows, LOSS, MODEL, train, seeds)
    for k in (0, 3):
        module = build_module(MODEL, x.shape[2])  # loading a member = the factory + load_state_dict
        module.load_state_dict(trained.state_dict(k))
        with torch.no_grad():
            logits = module(torch.from_numpy(x[k][val_rows[k]])).double().numpy()
        np.testing.assert_allclose(logits, trained.val_logits[k], rtol=0, atol=1e-5)


def _two_folds(second: int):
    """Two training sets of 80 and ``second`` rows on one table of 121 rows."""
    rng = np.random.default_rng(0)
    n = 121
    features = rng.normal(size=(n, 4)).astype(np.float32)
    y = (features[:, 0] + rng.normal(scale=0.5, size=n) > 0.5).astype(np.int8)
    train_rows = [np.arange(0, 80), np.arange(121 - second, 121)]
    val_rows = [np.arange(80, 121), np.arange(0, 121 - second)]
    return y, np.stack([features, features]), train_rows, val_rows


def test_fold_with_fewer_steps_trained_together_matches_alone():
    """80 and 81 rows at batch size 16: 5 and 6 steps an epoch. The 80-row model is trained in a stack of its own
    (a step with no row would still move it through Adam), and gives what it gives alone."""
    y, x, train_rows, val_rows = _two_folds(81)
    train = TrainConfig(epochs=3, batch_size=16, lr=1e-2, device="cpu")
    together = train_folds(x, y, train_rows, val_rows, LOSS, MODEL, train, [11, 12])
    assert [members for members, _ in together.stacks] == [[0], [1]]
    for k in range(2):
        alone = train_folds(x[k : k + 1], y, train_rows[k : k + 1], val_rows[k : k + 1], LOSS, MODEL, train, [11 + k])
        _assert_alone(together, k, alone)


class _NormedNet(nn.Module):
    """A user's own model: two layers with a LayerNorm between, a [B, 1] output."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.inner = nn.Linear(n_features, 12)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(self.inner(x))))


def test_a_custom_module_trained_in_a_stack_matches_it_trained_alone(fold_inputs, monkeypatch):
    """The engine trains whatever build_module returns: a LayerNorm net, on folds of unequal size."""
    import objectives.stack

    monkeypatch.setattr(objectives.stack, "build_module", lambda model, n_features: _NormedNet(n_features))
    y, x, train_rows, val_rows, seeds = fold_inputs
    train = TrainConfig(epochs=4, batch_size=16, lr=1e-2, weight_decay=1e-3, device="cpu")
    together = train_folds(x, y, train_rows, val_rows, LOSS, MODEL, train, seeds)
    for k in range(len(train_rows)):
        alone = train_folds(x[k : k + 1], y, [train_rows[k]], [val_rows[k]], LOSS, MODEL, train, seeds[k : k + 1])
        _assert_alone(together, k, alone)
    assert set(together.state_dict(0)) == set(_NormedNet(x.shape[2]).state_dict())
    assert np.all(together.train_loss[:, -1] < together.train_loss[:, 0])


@pytest.mark.parametrize("dropout", [0.0])
def test_the_built_in_mlp_trains_the_same_through_vmap_and_batched_matmuls(fold_inputs, monkeypatch, dropout):
    """The built-in MLP runs as batched matmuls on the stacked weights (faster); any other module through
    vmap(functional_call). The two paths train the same models within the tolerance (without dropout: the batched
    path draws its masks with fast_dropout, tested below)."""
    import objectives.stack

    y, x, train_rows, val_rows, seeds = fold_inputs
    model = ModelConfig(hidden=(16, 8), dropout=dropout)
    train = TrainConfig(epochs=4, batch_size=16, lr=1e-2, device="cpu")
    batched = train_folds(x, y, train_rows, val_rows, LOSS, model, train, seeds)
    assert batched.stacks[0][1]._layers is not None
    monkeypatch.setattr(objectives.stack, "_mlp_layers", lambda module: None)
    generic = train_folds(x, y, train_rows, val_rows, LOSS, model, train, seeds)
    assert generic.stacks[0][1]._layers is None
    for k in range(len(train_rows)):
        _assert_alone(batched, k, generic, k)
    assert np.all(batched.train_loss[:, -1] < batched.train_loss[:, 0])


class _BatchNormed(nn.Module):
    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class _CountsCalls(nn.Module):
    """A buffer updated in place by every training forward."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.layer = nn.Linear(n_features, 1)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls.add_(1)
        return self.layer(x).squeeze(-1)


class _TwoLogits(nn.Module):
    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.layer = nn.Linear(n_features, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


@pytest.mark.parametrize(
    ("module", "said"),
    [
        (_BatchNormed, r"^model _BatchNormed cannot be trained stacked: its layer 'net.1' is a BatchNorm1d"),
        (_CountsCalls, r"^model _CountsCalls cannot be trained stacked: its forward updates buffer\(s\) calls"),
        (_TwoLogits, r"^model _TwoLogits returns shape \[2, 2\] for a batch of 2 rows"),
    ],
)
def test_a_module_that_cannot_be_stacked_is_refused_in_one_line(fold_inputs, monkeypatch, module, said):
    import objectives.stack

    monkeypatch.setattr(objectives.stack, "build_module", lambda model, n_features: module(n_features))
    y, x, train_rows, val_rows, seeds = fold_inputs
    train = TrainConfig(epochs=1, batch_size=16, device="cpu")
    with pytest.raises(UnstackableModel, match=said) as exc:
        train_folds(x, y, train_rows, val_rows, LOSS, MODEL, train, seeds)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, LosstuneError)  # the CLI's one line
    assert "\n" not in str(exc.value)


# --- divergence ---------------------------------------------------------------------------------------------


def _scaled_inputs(scale: float):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 4)).astype(np.float32)
    y = (features[:, 0] > 0.5).astype(np.int8)
    return (features * np.float32(scale))[None], y, [np.arange(48)], [np.arange(48, 64)]


def test_training_diverged_is_raised_when_the_loss_overflows():
    x, y, tr, va = _scaled_inputs(1e20)
    train = TrainConfig(epochs=5, batch_size=16, lr=1e6, device="cpu")
    with pytest.raises(TrainingDiverged, match=r"lower the learning rate \(lr=1e\+06\)") as exc:
        train_folds(x, y, tr, va, LossConfig(), ModelConfig(hidden=(16, 16)), train, [1])
    assert isinstance(exc.value, LosstuneError)  # so the CLI prints one line
    assert "fold(s) [0]" in str(exc.value)


def test_same_inputs_with_a_sane_learning_rate_do_not_diverge():
    x, y, tr, va = _scaled_inputs(1e20)
    train = TrainConfig(epochs=5, batch_size=16, lr=1e-3, device="cpu")
    trained = train_folds(x, y, tr, va, LossConfig(), ModelConfig(hidden=(16, 16)), train, [1])
    assert np.isfinite(trained.train_loss).all()


def test_evaluate_raises_training_diverged_for_an_absurd_learning_rate(small_dataset, fast_config):
    cfg = fast_config.model_copy(update={"train": TrainConfig(epochs=2, batch_size=32, lr=1e20, device="cpu")})
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        evaluate(small_dataset, cfg)


def test_metric_config_reaches_the_threshold(small_dataset, fast_config):
    cfg = fast_config.model_copy(update={"metric": MetricConfig(name="fbeta", beta=2.0)})
    r = evaluate(small_dataset, cfg)
    assert r.metric == "f2"
    assert r.oof_score == best_threshold(r.y_true, r.oof_proba, cfg.metric).score


# --- many configurations, repeats and folds in one job ---------------------------------------------------------

LOSSES = [
    LossConfig(alpha=None, gamma=0.0, bce_weight=0.0, focal_weight=1.0),  # plain BCE: alpha_t 1, q^0 = 1
    LossConfig(alpha=0.25, gamma=2.0, bce_weight=0.5, focal_weight=0.5),
    LossConfig(alpha=0.8, gamma=3.7, bce_weight=0.9, focal_weight=0.1),
    LossConfig(alpha=None, gamma=5.0, bce_weight=0.2, focal_weight=0.8),
]


@pytest.fixture
def uneven_dataset(write_csv):
    """103 rows in 4 folds: the folds (and so the models' training sets) differ in size."""
    return load_dataset(DataSpec(path=write_csv(n=103, seed=5), target="label"))


def _config(loss: LossConfig, repeats: int = 1, batch_size: int = 20, **train) -> TrialConfig:
    return TrialConfig(
        loss=loss,
        # no dropout: a stack's models draw their masks together, so only without it is a stack its models alone
        model=ModelConfig(hidden=(13, 7), dropout=0.0),
        cv=CVConfig(folds=4, seed=3, repeats=repeats),
        train=TrainConfig(epochs=3, batch_size=batch_size, lr=1e-2, device="cpu", **train),
    )


def _same_result(a, b) -> None:
    """The same evaluation within the engine's float32 tolerance (a stack is not bit for bit a model alone)."""
    for key in a.ARRAYS:
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=ALONE_RTOL, atol=ALONE_ATOL, err_msg=key)
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds"), db.pop("seconds")
    assert da.keys() == db.keys()
    for key, value in da.items():
        if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            assert value == pytest.approx(db[key], rel=ALONE_RTOL, abs=ALONE_ATOL), key
        else:
            assert value == db[key], key


@pytest.mark.parametrize("repeats", [1, 2])
def test_configurations_trained_together_equal_each_trained_alone(uneven_dataset, repeats):
    ds = uneven_dataset
    configs = [_config(loss, repeats) for loss in LOSSES]
    prepared = prepare_folds(ds, configs[0].cv, configs[0].model.numeric_encoding)
    sizes = {len(r) for r in prepared.train_rows}
    assert len(sizes) > 1 and 20 % 16, "precondition: uneven folds, a batch that is not a multiple of 16"
    together = evaluate_many(ds, configs, prepared)
    for config, result in zip(configs, together):
        _same_result(result, evaluate(ds, config))  # alone, with its own preparation: within tolerance
    # the configurations really are different models, and each got every repeat and fold
    assert len({r.oof_score for r in together}) > 1 or len({r.log_loss for r in together}) == len(configs)
    assert all(r.train_loss.shape == (repeats * 4, 3) for r in together)


def test_repeats_share_splits_across_configurations_and_repeat_0_is_plain_k_fold(uneven_dataset):
    ds = uneven_dataset
    three = evaluate_many(ds, [_config(loss, repeats=3) for loss in LOSSES[:2]])
    one = evaluate(ds, _config(LOSSES[0], repeats=1))
    first = three[0]
    # repeat 0 is exactly the single K-fold of cv.seed: the same split, the same seeds, the same predictions
    assert repeat_seed(3, 0) == 3
    np.testing.assert_allclose(first.oof_proba_by_repeat[0], one.oof_proba, rtol=ALONE_RTOL, atol=ALONE_ATOL)
    np.testing.assert_array_equal(first.fold_of_row, one.fold_of_row)
    np.testing.assert_allclose(first.train_loss[:4], one.train_loss, rtol=ALONE_RTOL)
    # every configuration sees the same splits; the repeats' splits differ from one another
    for other in three[1:]:
        np.testing.assert_array_equal(other.fold_of_row_by_repeat, first.fold_of_row_by_repeat)
    splits = first.fold_of_row_by_repeat
    assert splits.shape == (3, ds.n_rows)
    assert not np.array_equal(splits[0], splits[1]) and not np.array_equal(splits[1], splits[2])
    # the scores: the threshold on the pooled repeats, each repeat scored at it, the OOF score their mean
    metric = MetricConfig()
    pooled = best_threshold(np.tile(ds.y, 3), first.oof_proba_by_repeat.reshape(-1), metric)
    assert first.threshold == pooled.threshold
    assert first.repeats == 3 and len(first.repeat_scores) == 3
    for r in range(3):
        from objectives.threshold import score_at

        assert first.repeat_scores[r] == score_at(ds.y, first.oof_proba_by_repeat[r], first.threshold, metric)
    assert first.oof_score == pytest.approx(np.mean(first.repeat_scores))
    assert len(first.fold_scores) == len(first.honest_fold_scores) == 12
    honest_r1 = cross_fitted_scores(ds.y, first.oof_proba_by_repeat[1], splits[1], metric)
    assert first.honest_fold_scores[4:8] == honest_r1.tolist()  # repeat-major
    assert one.repeats == 1 and one.repeat_scores == [one.oof_score]


def test_configurations_that_differ_beyond_the_loss_are_refused(uneven_dataset):
    configs = [_config(LOSSES[0]), _config(LOSSES[1], batch_size=32)]
    with pytest.raises(ValueError, match=r"differ only in their loss: configuration 1 has train"):
        evaluate_many(uneven_dataset, configs)


def test_a_diverging_configuration_fails_alone_in_its_batch(uneven_dataset):
    ds = uneven_dataset
    # gamma beyond float32's range: q^gamma is 0 but gamma * (...) is inf, so 0 * inf makes the gradient NaN. A
    # study file or the command line refuse such a gamma (objectives.bounds); built unvalidated, it stands for any
    # configuration whose training diverges, which the engine must isolate
    bad = _config(LossConfig.model_construct(alpha=None, gamma=1e39, bce_weight=0.5, focal_weight=0.5))
    good = [_config(LOSSES[1]), _config(LOSSES[2])]
    outcomes = evaluate_batch(ds, [good[0], bad, good[1]])
    assert isinstance(outcomes[1], TrainingDiverged) and "training diverged at epoch" in str(outcomes[1])
    for config, outcome in zip(good, (outcomes[0], outcomes[2])):
        _same_result(outcome, evaluate(ds, config))  # the others are untouched
    with pytest.raises(TrainingDiverged):
        evaluate(ds, bad)
    with pytest.raises(TrainingDiverged):
        evaluate_many(ds, [good[0], bad])


def test_a_diverging_group_leaves_the_other_groups_training():
    """Engine level: group 0 reads a block that overflows, group 1 a sane one; only group 0 fails."""
    x, y, tr, va = _scaled_inputs(1e20)
    sane, _, _, _ = _scaled_inputs(1.0)
    blocks_x = np.concatenate([x, sane])
    train = TrainConfig(epochs=4, batch_size=16, lr=1e6, device="cpu")
    model = ModelConfig(hidden=(16, 16), dropout=0.0)
    together = train_folds(
        blocks_x, y, tr * 2, va * 2, LossConfig(), model, train, [1, 1], blocks=[0, 1], groups=[0, 1]
    )
    assert list(together.diverged) == [0] and "fold(s) [0]" in str(together.diverged[0])
    alone_train = TrainConfig(epochs=4, batch_size=16, lr=1e6, device="cpu")
    alone = train_folds(sane, y, tr, va, LossConfig(), model, alone_train, [1])
    _assert_alone(together, 1, alone)


# --- bf16 on a CPU without bf16 instructions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n", True),  # x86, Zen 4 / Sapphire Rapids
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_tile amx_bf16\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", False),  # AVX-512 without its bf16 part
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2\n", False),
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", True),  # ARM
        ("processor\t: 0\nFeatures\t: fp asimd\n", False),
        ("processor\t: 0\n", None),
    ],
)
def test_cpu_bf16_support_is_read_from_cpuinfo(tmp_path, cpuinfo, native):
    from objectives.device import cpu_has_bf16

    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert cpu_has_bf16(path) is native
    assert cpu_has_bf16(tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("precision", "native", "warned"),
    [("bf16", False, True), ("bf16", True, False), ("bf16", None, False), ("fp32", False, False)],
)
def test_bf16_on_a_cpu_that_emulates_it_is_said(fold_inputs, monkeypatch, caplog, precision, native, warned):
    import objectives.device as engine  # where the device is chosen and the warning said

    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: native)
    y, x, train_rows, val_rows, seeds = fold_inputs
    train = TrainConfig(epochs=1, batch_size=16, lr=1e-2, device="cpu", precision=precision)
    with caplog.at_level("WARNING", logger="objectives.device"):
        train_folds(x, y, train_rows, val_rows, LOSS, MODEL, train, seeds)
    assert (engine.EMULATED_BF16 in caplog.messages) is warned


def test_an_ensembles_members_trained_as_one_job_are_each_the_model_trained_alone(write_csv):
    """fit_final_ensemble trains its members in one stack; each member is the final model its configuration gives
    alone (fit_final_model), within the engine's stated tolerance on its probabilities."""
    from objectives.final import fit_final_model
    from objectives.final_ensemble import fit_final_ensemble

    ds = load_dataset(DataSpec(path=write_csv(n=120, seed=5), target="label"))
    train = TrainConfig(epochs=3, batch_size=16, lr=1e-2, device="cpu")
    other = LossConfig(alpha=None, gamma=0.0, bce_weight=1.0, focal_weight=0.0)
    configs = [
        TrialConfig(loss=LOSS, model=MODEL, train=train, cv=CVConfig(folds=2, seed=0)),
        TrialConfig(loss=other, model=MODEL, train=train, cv=CVConfig(folds=2, seed=7)),
    ]
    ensemble = fit_final_ensemble(ds, configs, [0.25, 0.75])
    features = ds.features.iloc[:40]
    for member, config in zip(ensemble.members, configs):
        alone = fit_final_model(ds, config)
        np.testing.assert_allclose(
            member.predict_proba(features), alone.predict_proba(features), rtol=ALONE_RTOL, atol=ALONE_ATOL
        )
    first, second = (m.predict_proba(features) for m in ensemble.members)
    assert not np.allclose(first, second)  # two models, not one broadcast
    np.testing.assert_allclose(ensemble.predict_proba(features), 0.25 * first + 0.75 * second, rtol=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 16])
def test_validation_in_chunks_equals_one_pass(chunk):
    """The validation forward runs a training batch of rows at a time: logits and mean losses as one pass over all
    rows (float32 rounding: the matmuls block differently), each model on its own rows, padding masked out."""
    from objectives.batches import StackedTable
    from objectives.engine import _Validation
    from objectives.losses import LossParams
    from objectives.stack import ModelStack

    gen = np.random.default_rng(0)
    table = StackedTable(gen.normal(size=(2, 40, 5)), (gen.random(40) < 0.4).astype(float), torch.device("cpu"))
    val_rows = [np.arange(0, 23), np.arange(3, 40, 2), np.arange(10, 40)]  # 23, 19 and 30 rows
    offsets = table.offsets([0, 1, 1])
    stack = ModelStack.build(ModelConfig(hidden=(8, 4)), 5, [1, 2, 3], torch.device("cpu"))
    params = LossParams.stack([LOSS, LossConfig(), LossConfig(alpha=0.5, gamma=1.0)])
    chunked, whole = _Validation.of(table, val_rows, offsets, chunk), _Validation.of(table, val_rows, offsets, 1000)
    assert chunked is not None and whole is not None
    for got, expected, rows in zip(chunked.logits(stack), whole.logits(stack), val_rows):
        assert len(got) == len(rows)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(chunked.mean_loss(stack, params), whole.mean_loss(stack, params), rtol=1e-6, atol=0)


@pytest.mark.parametrize("p", [0.15, 0.5])
def test_fast_dropout_zeroes_a_p_share_and_keeps_the_expectation(p):
    from objectives.stack import fast_dropout

    torch.manual_seed(0)
    h = torch.full((10, 256, 128), 2.0, requires_grad=True)
    out = fast_dropout(h, p)
    zeroed = (out == 0).double().mean().item()
    n = h.numel()
    assert abs(zeroed - p) < 4 * (p * (1 - p) / n) ** 0.5  # binomial: within 4 SE
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 2.0 * 65536 / round((1 - p) * 65536)))
    assert abs(out.mean().item() - 2.0) < 4 * 2.0 * (p / (1 - p) / n) ** 0.5
    # each model's slice has its own mask, and a seed gives the same masks again
    assert not torch.equal(out[0] == 0, out[1] == 0)
    torch.manual_seed(0)
    torch.testing.assert_close(fast_dropout(h, p), out, rtol=0, atol=0)
    out.sum().backward()  # the gradient goes through the kept elements only, scaled alike
    torch.testing.assert_close(h.grad, (out / 2.0).detach())


def test_fast_dropout_of_almost_one_drops_everything():
    from objectives.stack import fast_dropout

    assert torch.count_nonzero(fast_dropout(torch.ones(3, 5, 7), 0.999999)) == 0
