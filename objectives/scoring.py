"""Every score of a trial from its out-of-fold (OOF) probabilities alone: the threshold chosen on them, the
optimistic OOF score at it, the honest cross-fitted one, each repeat's and each fold's score, and the pooled
threshold-free metrics. No training here: a test or a report can score OOF predictions it made itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from objectives.config import MetricConfig
from objectives.threshold import best_threshold, cross_fitted_scores, score_at


@dataclass
class OofScores:
    """Every score of OOF probabilities (:func:`score_oof`); :class:`~objectives.evaluate.EvaluationResult`
    extends it with what training measured (not frozen, so that the result, which tests and reports adjust, can
    extend it)."""

    metric: str
    threshold: float
    oof_score: float  # optimistic: the threshold was chosen on these same OOF rows
    honest_score_mean: float  # cross-fitted: fold k scored at the threshold chosen on the other folds
    honest_score_std: float
    honest_fold_scores: list[float]
    fold_scores: list[float]  # each fold's metric at the threshold, repeat-major (r * folds + k)
    repeats: int
    repeat_scores: list[float]  # repeat r's OOF score at the threshold; oof_score is their mean
    f1_at_0_5: float
    precision: float
    recall: float
    roc_auc: float
    pr_auc: float
    log_loss: float
    confusion_matrix: list[list[int]]  # [[tn, fp], [fn, tp]] at the threshold
    oof_proba: np.ndarray = field(repr=False)  # repeat 0's, [rows]
    fold_of_row: np.ndarray = field(repr=False)
    y_true: np.ndarray = field(repr=False)
    oof_proba_by_repeat: np.ndarray = field(repr=False)  # [repeats, rows]
    fold_of_row_by_repeat: np.ndarray = field(repr=False)

    def by_name(self) -> dict[str, Any]:
        """Every field by its name, the arrays not copied (``dataclasses.asdict`` would copy them)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ThresholdScores:
    """The scores of OOF probabilities that depend on the threshold (:func:`threshold_scores`): what a trial's
    noise and paired comparisons are made of, and all an ensemble selection needs of a trial."""

    threshold: float  # chosen on the pooled repeats
    oof_score: float  # optimistic: the mean of the repeats' scores at the threshold
    repeat_scores: list[float]
    fold_scores: np.ndarray  # each fold's metric at the threshold, repeat-major (r * folds + k)
    honest_fold_scores: np.ndarray  # cross-fitted: fold k at the threshold chosen on the other folds


def threshold_scores(y: np.ndarray, oof: np.ndarray, fold_of_row: np.ndarray, metric: MetricConfig) -> ThresholdScores:
    """The threshold and the scores at it (see :func:`score_oof`, which adds the threshold-free ones): ``oof``
    and ``fold_of_row`` are ``[n_rows]`` (one repeat) or ``[repeats, n_rows]``."""
    oof, fold_of_row = np.atleast_2d(oof), np.atleast_2d(fold_of_row)
    repeats = oof.shape[0]
    choice = best_threshold(np.tile(y, repeats), oof.reshape(-1), metric)
    t = choice.threshold
    repeat_scores = [score_at(y, oof[r], t, metric) for r in range(repeats)]
    honest = np.concatenate([cross_fitted_scores(y, oof[r], fold_of_row[r], metric) for r in range(repeats)])
    fold_scores = [
        score_at(y[fold_of_row[r] == k], oof[r][fold_of_row[r] == k], t, metric)
        for r in range(repeats)
        for k in np.unique(fold_of_row[r])
    ]
    # one repeat: the score found with the threshold, as before; several: the mean of the repeats'
    return ThresholdScores(
        threshold=t,
        oof_score=choice.score if repeats == 1 else float(np.mean(repeat_scores)),
        repeat_scores=[choice.score] if repeats == 1 else repeat_scores,
        fold_scores=np.array(fold_scores),
        honest_fold_scores=honest,
    )


def score_oof(y: np.ndarray, oof: np.ndarray, fold_of_row: np.ndarray, metric: MetricConfig) -> OofScores:
    """Threshold and every score, from OOF probabilities alone: ``oof`` and ``fold_of_row`` are ``[n_rows]``
    (one repeat) or ``[repeats, n_rows]``.

    The threshold is chosen on the pooled predictions of all repeats; each repeat is scored at it
    (``repeat_scores``, ``oof_score`` their mean) and each of its folds too (``fold_scores``). The honest score
    of fold k of repeat r uses the threshold chosen on the other folds of the same repeat. Precision, recall,
    F1 at 0.5, ROC-AUC, PR-AUC, log loss and the confusion matrix are of the pooled predictions (with several
    repeats the confusion matrix counts each row once per repeat)."""
    # sklearn here, not on import: threshold_scores is also what `status` reaches (through the study's ensemble),
    # which stays free of sklearn, scipy and pandas (tests/test_fast_commands.py)
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    scores = threshold_scores(y, oof, fold_of_row, metric)
    oof, fold_of_row = np.atleast_2d(oof), np.atleast_2d(fold_of_row)
    repeats, t, honest = oof.shape[0], scores.threshold, scores.honest_fold_scores
    y_pooled, p_pooled = np.tile(y, repeats), oof.reshape(-1)
    pred = p_pooled >= t
    yb = y_pooled.astype(bool)
    tp, fp = int(np.sum(pred & yb)), int(np.sum(pred & ~yb))
    fn, tn = int(np.sum(~pred & yb)), int(np.sum(~pred & ~yb))
    f1 = MetricConfig(name="f1")
    return OofScores(
        metric=metric.label,
        threshold=t,
        oof_score=scores.oof_score,
        honest_score_mean=float(honest.mean()),
        honest_score_std=float(honest.std()),
        honest_fold_scores=honest.tolist(),
        fold_scores=scores.fold_scores.tolist(),
        repeats=repeats,
        repeat_scores=scores.repeat_scores,
        f1_at_0_5=score_at(y_pooled, p_pooled, 0.5, f1),
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn) if tp + fn else 0.0,
        roc_auc=float(roc_auc_score(y_pooled, p_pooled)),
        pr_auc=float(average_precision_score(y_pooled, p_pooled)),
        log_loss=float(log_loss(y_pooled, np.clip(p_pooled, 1e-15, 1 - 1e-15), labels=[0, 1])),
        confusion_matrix=[[tn, fp], [fn, tp]],
        oof_proba=oof[0],
        fold_of_row=fold_of_row[0],
        y_true=y,
        oof_proba_by_repeat=oof,
        fold_of_row_by_repeat=fold_of_row,
    )
