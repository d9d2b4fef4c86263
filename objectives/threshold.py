r"""Exact threshold selection on out-of-fold probabilities.

A threshold :math:`t` predicts positive when :math:`p \ge t`. Only the distinct values of :math:`p` matter, so
we sort once (:math:`O(n \log n)`), take cumulative true/false positive counts at every distinct cut
(:math:`O(n)`), score every cut at once and keep the best. No grid: the optimum found is *the* optimum over
all thresholds. The returned threshold is the midpoint between the cut's value and the next lower distinct
value (the max-margin choice; it classifies the OOF rows exactly as the cut does). Ties between cuts go to the
highest threshold (the fewest predicted positives).

The cut "nothing positive" is included, so a metric for which predicting all negatives is best (macro F1 on a
hopeless model, say) is handled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objectives.config import MetricConfig
from objectives.metrics import score_from_counts


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    score: float


@dataclass(frozen=True)
class _Cuts:
    """Confusion counts at every distinct cut, from highest threshold ("nothing positive") to lowest."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray


def _cuts(y_true: np.ndarray, proba: np.ndarray) -> _Cuts:
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise ValueError("y_true and proba must be non-empty 1-d arrays of the same length")
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    # last index of every run of equal probabilities: cutting there puts the whole run on the positive side
    run_end = np.flatnonzero(np.r_[p_sorted[1:] != p_sorted[:-1], True])
    tp = np.r_[0, np.cumsum(y_sorted)[run_end]]
    fp = np.r_[0, run_end + 1 - tp[1:]]
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    values = p_sorted[run_end]
    lower = np.r_[values[1:], -np.inf]
    # midpoint to the next lower distinct value; the lowest cut keeps its own value (everything positive)
    mids = np.where(np.isfinite(lower), (values + lower) / 2.0, values)
    # guard the midpoint against rounding onto the lower value (adjacent floats)
    mids = np.where(mids > lower, mids, values)
    above_max = np.nextafter(values[0], np.inf)
    return _Cuts(
        thresholds=np.r_[above_max, mids],
        tp=tp,
        fp=fp,
        fn=n_pos - tp,
        tn=n_neg - fp,
    )


def best_threshold(y_true: np.ndarray, proba: np.ndarray, metric: MetricConfig) -> ThresholdChoice:
    """The threshold maximising ``metric`` on ``(y_true, proba)``, exactly."""
    cuts = _cuts(y_true, proba)
    scores = score_from_counts(cuts.tp, cuts.fp, cuts.fn, cuts.tn, metric)
    # first maximum = highest threshold among ties, ties up to rounding: an exact tie reached from different counts
    # (macro F1 of 11/21 at two cuts, say) can differ in the last bit, and argmax alone would then pick either cut
    best = int(np.flatnonzero(scores >= scores.max() * (1.0 - 1e-12))[0])
    return ThresholdChoice(threshold=float(cuts.thresholds[best]), score=float(scores[best]))


def metric_curve(y_true: np.ndarray, proba: np.ndarray, metric: MetricConfig) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, scores) at every distinct cut, highest threshold first: the metric-versus-threshold curve."""
    cuts = _cuts(y_true, proba)
    return cuts.thresholds, score_from_counts(cuts.tp, cuts.fp, cuts.fn, cuts.tn, metric)


def cross_fitted_scores(
    y_true: np.ndarray, proba: np.ndarray, fold_of_row: np.ndarray, metric: MetricConfig
) -> np.ndarray:
    """The honest estimate: for each fold k, the threshold chosen on the OOF rows of the *other* folds,
    scored on fold k. The OOF score at the OOF-optimal threshold is optimistic (the threshold has seen the rows
    it is scored on); these are not."""
    y = np.asarray(y_true)
    p = np.asarray(proba)
    folds = np.unique(fold_of_row)
    scores = np.empty(len(folds))
    for i, k in enumerate(folds):
        held = fold_of_row == k
        choice = best_threshold(y[~held], p[~held], metric)
        scores[i] = score_at(y[held], p[held], choice.threshold, metric)
    return scores


def score_at(y_true: np.ndarray, proba: np.ndarray, threshold: float, metric: MetricConfig) -> float:
    """The metric when predicting positive for ``proba >= threshold``."""
    y = np.asarray(y_true, dtype=bool)
    pred = np.asarray(proba) >= threshold
    tp = np.sum(pred & y)
    fp = np.sum(pred & ~y)
    fn = np.sum(~pred & y)
    tn = np.sum(~pred & ~y)
    return float(score_from_counts(np.array([tp]), np.array([fp]), np.array([fn]), np.array([tn]), metric)[0])
