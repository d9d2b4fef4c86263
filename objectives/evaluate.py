"""One trial, measured: stratified K-fold CV of the MLP under one loss configuration, then the threshold.

``evaluate(dataset, config)`` is the whole objective: split, fit preprocessing inside each fold, train the K fold
models together, collect out-of-fold (OOF) probabilities, pick the metric-optimal threshold on them exactly, and
report both the optimistic OOF score at that threshold and the honest cross-fitted one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from objectives.config import CVConfig, MetricConfig, TrialConfig
from objectives.data import Dataset, check_folds
from objectives.engine import train_folds
from objectives.memory import check_trial_memory
from objectives.preprocess import fit_fold_preprocessors
from objectives.threshold import best_threshold, cross_fitted_scores, score_at

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Everything one trial measured. ``to_dict()`` is the JSON the CLI prints (curves and arrays left out)."""

    metric: str
    threshold: float
    oof_score: float  # optimistic: the threshold was chosen on these same OOF rows
    honest_score_mean: float  # cross-fitted: fold k scored at the threshold chosen on the other folds
    honest_score_std: float
    honest_fold_scores: list[float]
    fold_scores: list[float]  # each fold's metric at the global threshold
    f1_at_0_5: float
    precision: float
    recall: float
    roc_auc: float
    pr_auc: float
    log_loss: float
    confusion_matrix: list[list[int]]  # [[tn, fp], [fn, tp]] at the threshold
    n_rows: int
    positive_rate: float
    fingerprint: str
    seconds: float
    # arrays: the OOF predictions and the learning curves
    oof_proba: np.ndarray = field(repr=False)
    fold_of_row: np.ndarray = field(repr=False)
    y_true: np.ndarray = field(repr=False)
    train_loss: np.ndarray = field(repr=False)  # [folds, epochs]
    val_loss: np.ndarray = field(repr=False)  # [folds, epochs]

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("oof_proba", "fold_of_row", "y_true", "train_loss", "val_loss"):
            d.pop(key)
        return d


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) per fold; shuffled, stratified, deterministic in ``seed``."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr.astype(np.int64), va.astype(np.int64)) for tr, va in splitter.split(np.zeros(len(y)), y)]


def fold_seeds(seed: int, folds: int) -> list[int]:
    """Independent seeds for each fold's init, batch order and dropout, derived from the CV seed."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(folds)]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # exact sigmoid without overflow for large |z|


@dataclass(frozen=True)
class PreparedFolds:
    """The CV split and each fold's preprocessed rows. They depend only on the data and ``cv``, not on the loss,
    so a search prepares them once and every trial reuses them."""

    fingerprint: str
    cv: CVConfig
    train_rows: list[np.ndarray]
    val_rows: list[np.ndarray]
    x: np.ndarray  # [folds, rows, features], fold k's preprocessing of every row


def prepare_folds(dataset: Dataset, cv: CVConfig) -> PreparedFolds:
    check_folds(dataset, cv.folds)
    splits = stratified_folds(dataset.y, cv.folds, cv.seed)
    train_rows = [tr for tr, _ in splits]
    _, x = fit_fold_preprocessors(dataset.features, dataset.numeric_columns, dataset.categorical_columns, train_rows)
    return PreparedFolds(dataset.fingerprint, cv, train_rows, [va for _, va in splits], x)


def evaluate(dataset: Dataset, config: TrialConfig, prepared: PreparedFolds | None = None) -> EvaluationResult:
    """Cross-validate ``config`` on ``dataset``; ``prepared`` (from :func:`prepare_folds`) skips re-splitting
    and re-fitting the preprocessing when several configurations share the data and the CV settings."""
    start = time.perf_counter()
    check_trial_memory(dataset, config)  # a network that cannot fit is one line, not a failed allocation
    if prepared is None:
        prepared = prepare_folds(dataset, config.cv)
    elif prepared.fingerprint != dataset.fingerprint or prepared.cv != config.cv:
        raise ValueError("prepared folds were made for other data or other CV settings")
    val_rows = prepared.val_rows
    trained = train_folds(
        prepared.x, dataset.y, prepared.train_rows, val_rows, config.loss, config.model, config.train,
        fold_seeds(config.cv.seed, config.cv.folds),
    )  # fmt: skip

    oof = np.empty(dataset.n_rows, dtype=np.float64)
    fold_of_row = np.empty(dataset.n_rows, dtype=np.int64)
    for k, (rows, logits) in enumerate(zip(val_rows, trained.val_logits)):
        oof[rows] = sigmoid(logits)
        fold_of_row[rows] = k
    result = score_oof(dataset.y, oof, fold_of_row, config.metric)
    result.update(train_loss=trained.train_loss, val_loss=trained.val_loss)
    seconds = time.perf_counter() - start
    log.info("evaluated %s in %.2fs: oof %s=%.4f", config.loss, seconds, config.metric.label, result["oof_score"])
    return EvaluationResult(
        n_rows=dataset.n_rows,
        positive_rate=dataset.positive_rate,
        fingerprint=dataset.fingerprint,
        seconds=seconds,
        **result,
    )


def score_oof(y: np.ndarray, oof: np.ndarray, fold_of_row: np.ndarray, metric: MetricConfig) -> dict:
    """Threshold and every score, from OOF probabilities alone."""
    choice = best_threshold(y, oof, metric)
    honest = cross_fitted_scores(y, oof, fold_of_row, metric)
    pred = oof >= choice.threshold
    yb = y.astype(bool)
    tp, fp = int(np.sum(pred & yb)), int(np.sum(pred & ~yb))
    fn, tn = int(np.sum(~pred & yb)), int(np.sum(~pred & ~yb))
    f1 = MetricConfig(name="f1")
    return dict(
        metric=metric.label,
        threshold=choice.threshold,
        oof_score=choice.score,
        honest_score_mean=float(honest.mean()),
        honest_score_std=float(honest.std()),
        honest_fold_scores=honest.tolist(),
        fold_scores=[score_at(y[fold_of_row == k], oof[fold_of_row == k], choice.threshold, metric)
                     for k in np.unique(fold_of_row)],
        f1_at_0_5=score_at(y, oof, 0.5, f1),
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn) if tp + fn else 0.0,
        roc_auc=float(roc_auc_score(y, oof)),
        pr_auc=float(average_precision_score(y, oof)),
        log_loss=float(log_loss(y, np.clip(oof, 1e-15, 1 - 1e-15), labels=[0, 1])),
        confusion_matrix=[[tn, fp], [fn, tp]],
        oof_proba=oof,
        fold_of_row=fold_of_row,
        y_true=y,
    )
