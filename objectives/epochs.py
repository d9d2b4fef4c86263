"""The number of epochs, chosen honestly: ONE epoch count for the whole trial, from the mean of its folds' scores.

Every model of a trial is scored at checkpoint epochs (``train.checkpoint_every``,
:func:`objectives.schedule.checkpoint_epochs`). At each checkpoint e, the trial's OOF probabilities after e epochs
are thresholded exactly as a trial's (:func:`objectives.threshold.best_threshold` on the pooled OOF rows of every
repeat) and each fold is scored at that threshold; the curve is the mean of those fold scores, and the trial keeps
the checkpoint with the best mean (the earliest on a tie). A fold never chooses its own best epoch: that would let
the rows being scored pick the model that scores them, an optimism of one choice per fold. One shared choice among
a few checkpoints is still a choice made on the scored rows; that (smaller) optimism is part of what the
study's selection-corrected estimate corrects, as the choice of the threshold is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objectives.config import MetricConfig
from objectives.threshold import best_threshold, score_at


@dataclass(frozen=True)
class EpochChoice:
    epochs: int  # the trial's epoch count
    curve: list[tuple[int, float]]  # (epochs, mean fold score) per checkpoint: the learning curve
    fold_curves: np.ndarray  # [checkpoints, splits]: each split's score at each checkpoint (the trial's threshold)


def checkpoint_scores(y: np.ndarray, oof: np.ndarray, fold_of_row: np.ndarray, metric: MetricConfig) -> np.ndarray:
    """Each split's score (repeat-major) at the threshold chosen on the pooled OOF rows: ``oof`` and
    ``fold_of_row`` are ``[repeats, n_rows]``."""
    repeats = oof.shape[0]
    t = best_threshold(np.tile(y, repeats), oof.reshape(-1), metric).threshold
    return np.array(
        [
            score_at(y[fold_of_row[r] == k], oof[r][fold_of_row[r] == k], t, metric)
            for r in range(repeats)
            for k in np.unique(fold_of_row[r])
        ]
    )


def choose_epochs(
    y: np.ndarray, oof_by_checkpoint: dict[int, tuple[np.ndarray, np.ndarray]], metric: MetricConfig
) -> EpochChoice:
    """The checkpoint whose MEAN fold score is best (the earliest among equals); ``oof_by_checkpoint[e]`` is the
    trial's ``(oof, fold_of_row)``, ``[repeats, n_rows]`` each, after ``e`` epochs."""
    epochs = sorted(oof_by_checkpoint)
    fold_curves = np.stack([checkpoint_scores(y, *oof_by_checkpoint[e], metric) for e in epochs])
    means = fold_curves.mean(axis=1)
    best = int(np.argmax(means))  # argmax: the first of equal maxima, i.e. the fewest epochs
    return EpochChoice(epochs[best], [(e, float(m)) for e, m in zip(epochs, means)], fold_curves)
