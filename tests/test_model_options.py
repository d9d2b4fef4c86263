"""The model options (objectives.config): numeric scalings fitted inside each fold only, the learning-rate
schedules and AdamW, and ONE epoch count per trial chosen from the mean of the folds' scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from objectives.config import MetricConfig, ModelConfig, NumericEncoding, TrainConfig
from objectives.epochs import checkpoint_scores, choose_epochs
from objectives.evaluate import evaluate, stratified_folds
from objectives.numeric_encoders import KEPT_VALUE_CLIP, SMOOTH_CLIP, PiecewiseLinearEncoder, smooth_clip
from objectives.preprocess import category_codes, fit_fold_preprocessors
from objectives.schedule import checkpoint_epochs, make_optimizer, make_scheduler

ENCODINGS = [
    NumericEncoding("standard"),
    NumericEncoding("quantile"),
    NumericEncoding("robust"),
    NumericEncoding("standard", bins=8),
    NumericEncoding("quantile", bins=8),
    NumericEncoding("standard", bins=8, target_bins=True),
    NumericEncoding("robust", bins=8, target_bins=True),
]


@pytest.fixture
def dataset_900(write_csv):
    """900 rows: a fold trains on 600, enough for target-aware bins to split (at least 64 rows per bin)."""
    from objectives.data import DataSpec, load_dataset

    return load_dataset(DataSpec(path=write_csv(n=900, seed=4), target="label"))


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: f"{e.scaling}-{e.bins}-{e.target_bins}")
def test_each_numeric_encoding_is_fitted_on_the_folds_training_rows_only(dataset_900, encoding):
    ds = dataset_900
    splits = stratified_folds(ds.y, 3, seed=0)
    train_rows = [tr for tr, _ in splits]
    val0 = splits[0][1]
    args = (ds.numeric_columns, ds.categorical_columns, train_rows, encoding, ds.y)
    _, x = fit_fold_preprocessors(ds.features, *args)
    poisoned = ds.features.copy()
    for col in ds.numeric_columns:
        poisoned.iloc[val0, poisoned.columns.get_loc(col)] = 1e9
    fitted_p, x_p = fit_fold_preprocessors(poisoned, *args)

    # fold 0 never saw its validation rows: its preprocessor, fitted on the poisoned table, transforms the clean
    # table exactly as the clean fold 0 does
    coded = category_codes(ds.features, ds.categorical_columns)[0]
    clean = coded[ds.numeric_columns + ds.categorical_columns].to_numpy(dtype=np.float64)
    again = fitted_p[0].transform(clean)
    # columns per numeric column, fold by fold (target-aware bins leave out the bins a fold's tree did not use)
    widths = [_numeric_widths(f, len(ds.numeric_columns)) for f in fitted_p]
    n_num = int(widths[0].sum())
    n_cat = sum(ds.features[c].nunique() for c in ds.categorical_columns)
    assert x_p.shape[2] == max(int(w.sum()) for w in widths) + n_cat
    assert n_num == len(ds.numeric_columns) * encoding.width or encoding.target_bins
    np.testing.assert_allclose(again[:, :n_num], x[0][:, :n_num], rtol=1e-6, atol=1e-6)
    _assert_same_fold(x_p[0][train_rows[0]], x[0][train_rows[0]])
    # folds 1 and 2 train on the poisoned rows: their training rows' values move (the check above can fail)
    for k in (1, 2):
        cols = min(int(widths[k].sum()), n_num)
        assert not np.allclose(x_p[k][train_rows[k], :cols], x[k][train_rows[k], :cols], atol=1e-4)
    if encoding.bins:  # the embedding: values in [0, 1], the poisoned rows at the encoding of the top bin's end
        for k, w in enumerate(widths):
            blocks = np.split(x_p[k][:, : int(w.sum())], np.cumsum(w)[:-1], axis=1)
            ple = np.concatenate([b[:, :-1] if encoding.target_bins else b for b in blocks], axis=1)
            assert ple.min() >= 0.0 and ple.max() <= 1.0 + 1e-6
            if encoding.target_bins:  # the kept value, clipped
                assert all(np.abs(b[:, -1]).max() <= KEPT_VALUE_CLIP for b in blocks)
        top = x_p[0][val0, :n_num]
        np.testing.assert_array_equal(top, np.broadcast_to(top[:1], top.shape))
    elif encoding.scaling == "robust":  # smooth clipping: the poisoned rows stay bounded
        assert np.all(np.abs(x_p[0][val0, :n_num]) <= SMOOTH_CLIP)
    elif encoding.scaling == "quantile":  # ranks: the poisoned rows sit at the top of the normal's range
        assert np.all(x_p[0][val0, :n_num] > 4.0)


def test_target_bins_see_only_the_folds_training_labels(dataset_900):
    """Target-aware bins are fitted on labels: flipping the labels of fold 0's validation rows leaves fold 0's
    matrix as it was, while other training labels move its edges (so the check above can fail)."""
    ds = dataset_900
    splits = stratified_folds(ds.y, 3, seed=0)
    train_rows = [tr for tr, _ in splits]
    encoding = NumericEncoding("standard", bins=8, target_bins=True)
    args = (ds.features, ds.numeric_columns, ds.categorical_columns, train_rows, encoding)
    fitted, x = fit_fold_preprocessors(*args, ds.y)
    encoders = [e for f in fitted for _, t, _ in f.transformers_ for e in _parts(t, PiecewiseLinearEncoder)]
    inner_edges = np.concatenate([np.isfinite(e.edges_).sum(axis=1) - 2 for e in encoders])
    assert len(inner_edges) == 3 * 2 and inner_edges.min() >= 1  # each column split at least once: labels matter
    flipped_val = ds.y.copy()
    flipped_val[splits[0][1]] = 1 - flipped_val[splits[0][1]]
    _, x_val = fit_fold_preprocessors(*args, flipped_val)
    _assert_same_fold(x_val[0], x[0])
    first = ds.features[ds.numeric_columns[0]].to_numpy(dtype=np.float64)
    other = (first > np.nanquantile(first, 0.3)).astype(np.int64)  # labels with a split at another value
    _, x_other = fit_fold_preprocessors(*args, other)
    assert not np.array_equal(x_other[0], x[0])


def _assert_same_fold(a, b):
    """One fold's matrices equal, but for zero padding: the stacked width is the widest fold's, which the other
    folds' fits can change."""
    shared = min(a.shape[1], b.shape[1])
    np.testing.assert_array_equal(a[:, :shared], b[:, :shared])
    assert not a[:, shared:].any() and not b[:, shared:].any()


def _numeric_widths(fitted, n_numeric):
    """Columns per numeric column of a fitted fold preprocessor (its encoders' widths; 1 each without one)."""
    encoders = [e for _, t, _ in fitted.transformers_ for e in _parts(t, PiecewiseLinearEncoder)]
    encoders = [e for e in encoders if hasattr(e, "n_features_in_")]  # an empty column list leaves one unfitted
    return np.concatenate([e.column_widths() for e in encoders]) if encoders else np.ones(n_numeric, dtype=int)


def _parts(estimator, kind):
    """The fitted ``kind`` steps anywhere inside ``estimator`` (pipelines nest)."""
    if isinstance(estimator, kind):
        return [estimator]
    return [p for _, step in getattr(estimator, "steps", []) for p in _parts(step, kind)]


def test_target_bins_put_an_edge_where_the_label_changes():
    """A column that is 0 for 90 % of rows and whose label turns positive above 7,000 (a census table's capital
    gain): its quantile bins collapse onto 0 and miss 7,000; the tree's bins have an edge there."""
    rng = np.random.default_rng(1)
    gain = np.where(rng.random(5000) < 0.9, 0.0, rng.uniform(0, 20_000, 5000))
    y = (gain > 7_000).astype(np.int64)
    column = gain[:, np.newaxis]
    target = PiecewiseLinearEncoder(bins=8, target=True).fit(column, y)
    quantile = PiecewiseLinearEncoder(bins=8).fit(column)
    assert np.min(np.abs(target.edges_[0][np.isfinite(target.edges_[0])] - 7_000)) < 100
    assert np.min(np.abs(quantile.edges_[0] - 7_000)) > 1_000
    # unused bins (+inf edges, always 0) are left out; the kept value is the last column of the block
    rows = np.array([[0.0], [7_500.0], [1e9]])
    encoded = target.transform(rows)
    used = int(np.isfinite(target.edges_[0][1:]).sum())
    assert 2 <= used < 8 and encoded.shape == (3, used + 1) and target.column_widths().tolist() == [used + 1]
    assert len(target.get_feature_names_out(["gain"])) == used + 1
    np.testing.assert_array_equal(encoded[:, -1], [0.0, KEPT_VALUE_CLIP, KEPT_VALUE_CLIP])
    np.testing.assert_array_equal(encoded[2, :used], np.ones(used))  # beyond the range: every bin full
    # an encoder saved by 0.3.0 (no kept_columns_) still gives every column, the unused ones 0
    del target.kept_columns_
    full = target.transform(rows)
    assert full.shape == (3, 9) and target.column_widths().tolist() == [9]
    np.testing.assert_array_equal(full[:, :used], encoded[:, :used])
    assert not full[:, used:8].any()
    # refitted as quantile bins (set_params), it forgets the target fit's columns
    assert target.fit(column, y).set_params(target=False).fit(column).transform(rows).shape == (3, 8)
    with pytest.raises(ValueError, match="labels"):
        PiecewiseLinearEncoder(bins=8, target=True).fit(column)


def test_smooth_clip_is_the_identity_near_zero_and_bounded():
    x = np.array([-1e9, -3.0, -0.01, 0.0, 0.01, 3.0, 1e9])
    y = smooth_clip(x)
    assert np.all(np.diff(y) > 0) and np.all(np.abs(y) <= SMOOTH_CLIP)
    assert y[3] == 0.0 and y[4] == pytest.approx(0.01, rel=1e-4)


def test_a_trial_runs_with_every_new_option(small_dataset, fast_config):
    config = fast_config.model_copy(
        update={
            "model": ModelConfig(hidden=(8,), numeric_scaling="robust"),
            "train": TrainConfig(
                epochs=4,
                batch_size=32,
                lr=1e-2,
                device="cpu",
                optimizer="adamw",
                weight_decay=1e-2,
                lr_schedule="onecycle",
                checkpoint_every=2,
            ),
        }
    )
    result = evaluate(small_dataset, config)
    assert [e for e, _ in result.epoch_curve] == [2, 4]
    assert result.chosen_epochs in (2, 4)
    assert result.chosen_epochs == max(result.epoch_curve, key=lambda c: (c[1], -c[0]))[0]
    with pytest.raises(ValidationError):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValidationError):
        ModelConfig(numeric_scaling="minmax")


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_schedules_follow_torch_semantics(schedule):
    cfg = TrainConfig(epochs=3, lr=0.1, lr_schedule=schedule, optimizer="adamw")
    p = torch.zeros(2, requires_grad=True)
    opt = make_optimizer([p], cfg)
    assert isinstance(opt, torch.optim.AdamW)
    sched = make_scheduler(opt, cfg, steps_per_epoch=5)
    rates = []
    for _ in range(15):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if schedule == "cosine":
        assert rates[0] == pytest.approx(0.1) and rates[-1] < 0.01
    else:  # warm-up to lr, then down
        peak = int(np.argmax(rates))
        assert 0 < peak < 14 and rates[peak] == pytest.approx(0.1, rel=0.05) and rates[0] < 0.01
    assert make_scheduler(opt, TrainConfig(epochs=3), 5) is None
    # a final model stopped at a trial's chosen epoch count follows the trial's schedule: the same rates
    p2 = torch.zeros(2, requires_grad=True)
    opt2 = make_optimizer([p2], cfg.model_copy(update={"epochs": 2, "schedule_epochs": 3}))
    sched2 = make_scheduler(opt2, cfg.model_copy(update={"epochs": 2, "schedule_epochs": 3}), steps_per_epoch=5)
    for step in range(10):
        assert opt2.param_groups[0]["lr"] == pytest.approx(rates[step])
        opt2.step()
        sched2.step()
    assert checkpoint_epochs(TrainConfig(epochs=10, checkpoint_every=4)) == [4, 8, 10]
    assert checkpoint_epochs(TrainConfig(epochs=10)) == [10]


def test_the_epoch_choice_uses_the_mean_of_the_folds_not_each_folds_best():
    """Two folds, checkpoints at 5 and 10 epochs: fold 0 is best at 5 epochs by a little, fold 1 is best at 10
    by a lot. The trial takes 10 (the mean), though fold 0 alone would take 5."""
    rng = np.random.default_rng(0)
    n = 400
    y = (np.arange(n) % 2).astype(np.int8)
    fold = (np.arange(n) // 2 % 2).astype(np.int64)  # both classes in both folds
    good = np.where(y == 1, 0.8, 0.2) + rng.normal(scale=0.05, size=n)
    noisy = np.where(y == 1, 0.6, 0.4) + rng.normal(scale=0.25, size=n)
    slightly = np.where(y == 1, 0.75, 0.25) + rng.normal(scale=0.12, size=n)
    at5 = np.where(fold == 0, good, noisy)  # fold 0 good, fold 1 poor
    at10 = np.where(fold == 0, slightly, good)  # fold 0 a little worse, fold 1 much better
    metric = MetricConfig()
    checkpoints = {5: (at5[None], fold[None]), 10: (at10[None], fold[None])}
    s5, s10 = (checkpoint_scores(y, *checkpoints[e], metric) for e in (5, 10))
    assert s5[0] > s10[0]  # fold 0's own best epoch is 5
    assert s10[1] > s5[1] and s10.mean() > s5.mean()
    choice = choose_epochs(y, checkpoints, metric)
    assert choice.epochs == 10
    assert [e for e, _ in choice.curve] == [5, 10]
    np.testing.assert_allclose([m for _, m in choice.curve], [s5.mean(), s10.mean()])


@pytest.mark.parametrize(
    "model",
    [
        {"numeric_scaling": "quantile"},
        {"numeric_scaling": "robust"},
        {"numeric_embedding": "piecewise_linear"},
        {"numeric_embedding": "piecewise_linear_target"},
    ],
    ids=str,
)
def test_a_saved_model_with_each_numeric_encoding_loads_and_predicts(tmp_path, capsys, model):
    from search.cli import main
    from tests.model_fixture import make_model_dir

    tiny = make_model_dir(tmp_path, **model)
    out = tmp_path / "scores.csv"
    rc = main(["predict", str(tiny["model"]), str(tiny["test"]), "-o", str(out), "--proba"])
    assert rc == 0, capsys.readouterr().err
    import pandas as pd

    assert len(pd.read_csv(out)) == 50


def test_export_trains_the_final_model_for_the_trials_chosen_epochs():
    from objectives.config import TrialConfig
    from search.model.export_trial import trial_epochs

    with_checkpoints = TrialConfig(train=TrainConfig(epochs=40, checkpoint_every=5))
    final = trial_epochs(with_checkpoints, 15)
    assert final.train.epochs == 15 and final.train.checkpoint_every == 0 and final.train.schedule_epochs == 40
    plain = TrialConfig(train=TrainConfig(epochs=40))
    assert trial_epochs(plain, 40) == plain and trial_epochs(with_checkpoints, None) == with_checkpoints


def test_an_encoder_saved_by_0_2_without_target_still_transforms():
    """skops restores a saved encoder's attributes; one saved by losstune 0.2 has no ``target``."""
    x = np.random.default_rng(0).normal(size=(200, 2))
    fitted = PiecewiseLinearEncoder(bins=4).fit(x)
    expected = fitted.transform(x)
    del fitted.__dict__["target"]
    np.testing.assert_array_equal(fitted.transform(x), expected)
    assert len(fitted.get_feature_names_out()) == 8


def test_numeric_blocks_of_the_final_preprocessing_follow_the_trees(dataset_900):
    """The final model's preprocessing: each numeric column's block is as wide as its tree used bins, plus the
    kept value; the blocks come first, then the one-hot columns (what the predict-time error names rely on)."""
    from objectives.preprocess import make_preprocessor, numeric_block_widths

    ds = dataset_900
    encoding = NumericEncoding("standard", bins=8, target_bins=True)
    pre = make_preprocessor(ds.numeric_columns, ds.categorical_columns, encoding)
    x = pre.fit(ds.features, ds.y).transform(ds.features)
    widths = numeric_block_widths(pre)
    encoder = pre.named_transformers_["numeric"].named_steps["scale"].named_steps["embed"]
    used = np.isfinite(encoder.edges_[:, 1:]).sum(axis=1)
    np.testing.assert_array_equal(widths, used + 1)
    assert widths.max() < encoding.width or (used == encoding.bins).all()
    n_cat = sum(ds.features[c].nunique() for c in ds.categorical_columns)
    assert x.shape[1] == widths.sum() + n_cat == len(pre.get_feature_names_out())
    ends = np.cumsum(widths) - 1  # each block's last column is the kept value, clipped
    assert np.abs(x[:, ends]).max() <= KEPT_VALUE_CLIP and np.abs(x[:, ends]).max() > 0.5


def test_a_model_saved_when_the_encoders_lived_in_preprocess_still_loads_and_predicts(tmp_path, monkeypatch):
    """A model directory saved before objectives.numeric_encoders existed names its robust scaling's clip and its
    embedding objectives.preprocess.*: both names are still trusted and found, and it predicts as a new one."""
    import pandas as pd
    import skops.io as sio

    import objectives.numeric_encoders as encoders
    from search.model.model_dir_loading import load_model_dir
    from tests.model_fixture import make_model_dir

    settings = {"numeric_scaling": "robust", "numeric_embedding": "piecewise_linear_target"}
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    new = make_model_dir(tmp_path / "new", **settings)
    with monkeypatch.context() as old_names:  # save as the code did then: the same objects, the old module
        old_names.setattr(encoders.PiecewiseLinearEncoder, "__module__", "objectives.preprocess")
        old_names.setattr(encoders.smooth_clip, "__module__", "objectives.preprocess")
        old = make_model_dir(tmp_path / "old", **settings)
    named = {
        which: set(sio.get_untrusted_types(file=paths["model"] / "artifacts" / "preprocessing.skops"))
        for which, paths in (("new", new), ("old", old))
    }
    assert {"objectives.preprocess.smooth_clip", "objectives.preprocess.PiecewiseLinearEncoder"} <= named["old"]
    assert {"objectives.numeric_encoders.smooth_clip", "objectives.numeric_encoders.PiecewiseLinearEncoder"} <= named[
        "new"
    ]
    test = pd.read_csv(new["test"])
    predicted = {which: load_model_dir(paths["model"]).predict(test) for which, paths in (("new", new), ("old", old))}
    np.testing.assert_allclose(predicted["old"]["proba"], predicted["new"]["proba"], rtol=1e-6)
