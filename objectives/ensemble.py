r"""Ensemble selection over finished trials' out-of-fold (OOF) probabilities (Caruana, Niculescu-Mizil, Crew and
Ksikes 2004, *Ensemble selection from libraries of models*, ICML).

Given N trials' OOF probabilities on the same splits, :math:`P_1, \dots, P_N` (each ``[repeats, rows]``), the
ensemble is a weighted average :math:`\bar P = \sum_i w_i P_i` with :math:`w_i = c_i / \sum_j c_j`, the counts
:math:`c_i` found by **greedy forward selection with replacement**: start from nothing; at each step add the
trial (possibly one already in) whose addition gives the best score, where each candidate average is scored at
**its own metric-optimal threshold** (exact, :mod:`objectives.threshold`, on the pooled repeats), because the
threshold of an average is not any member's; stop when no addition improves the score, or at ``max_size``
members. The first step picks the best single trial, so the ensemble's OOF score is never below it.

That OOF score is optimistic twice over (the weights and the threshold were chosen on the rows it is scored on),
so :func:`select_ensemble` also gives the **cross-fitted (nested) score**: for fold k of repeat r, the whole
selection (weights and threshold) is redone on the other folds' rows of that repeat and scored on fold k, whose
labels it never saw. Its paired differences from the reference and from the best single trial use the corrected
resampled t-test of :mod:`objectives.stats` on fold scores, as for any trial.

Pure numpy (plus :mod:`objectives.scoring`): no training, no Optuna, no MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objectives.config import MetricConfig
from objectives.metrics import score_from_counts
from objectives.scoring import ThresholdScores, threshold_scores
from objectives.stats import Comparison, compare, corrected_se
from objectives.threshold import best_threshold, score_at

DEFAULT_MAX_SIZE = 20  # members counted with repetition; Caruana et al. found gains flatten after a few dozen
_IMPROVES = 1e-6  # an addition must raise the score by more than rounding (scores are float32 in the search)


def best_scores(y: np.ndarray, proba: np.ndarray, metric: MetricConfig) -> np.ndarray:
    """The score at the metric-optimal threshold of each row of ``proba`` (``[C, rows]``, probabilities in
    [0, 1]) against ``y``: what :func:`objectives.threshold.best_threshold` finds for each row (every distinct cut,
    "nothing positive" included), vectorised over the rows.

    Fast because it sorts numbers, not indices: each probability, rounded to float32, carries the row's label in
    the last bit of its bits (which order as integers for non-negative floats), so one SIMD sort of int32 keys
    orders the probabilities and brings their labels along. The price: probabilities closer than about 1e-7
    (relative) count as a tie, which moves a score by at most a row or two's worth of a cut; the final threshold
    and score of a selection are always found by ``best_threshold`` itself, exactly."""
    p = np.atleast_2d(np.asarray(proba, dtype=np.float32))
    yy = np.asarray(y, dtype=np.int32)
    n, n_pos = yy.size, int(yy.sum())
    keys = np.sort((p.view(np.int32) & ~np.int32(1)) | yy[None, :], axis=1)  # ascending
    # the cut between sorted positions i and i + 1 predicts positive the n - 1 - i rows above it
    below = np.cumsum(keys & 1, axis=1, dtype=np.int32)[:, :-1]
    tp = n_pos - below
    k = np.arange(n - 1, 0, -1)
    if metric.name in ("f1", "fbeta"):  # tp + fp = k and tp + fn = n_pos: one division per cut
        b2 = 1.0 if metric.name == "f1" else metric.beta**2
        # float32 (exact counts below 2**24 rows; the score to 1e-7, far finer than one row's worth of it)
        scores = tp.astype(np.float32) * np.float32(1.0 + b2) / (b2 * n_pos + k).astype(np.float32)
    else:
        scores = score_from_counts(tp, k - tp, n_pos - tp, n - n_pos - (k - tp), metric)
    value = keys >> 1
    cut = value[:, :-1] != value[:, 1:]  # a cut inside a run of equal values is not a cut
    inner = np.where(cut, scores, -1.0).max(axis=1) if n > 1 else np.full(len(p), -1.0)  # every score is >= 0
    z = np.zeros(2, dtype=np.int64)  # the two cuts always there: nothing positive, everything positive
    tp_ends, k_ends = np.array([0, n_pos]), np.array([0, n])
    ends = score_from_counts(tp_ends, k_ends - tp_ends, n_pos - tp_ends, n - n_pos - (k_ends - tp_ends) + z, metric)
    return np.maximum(inner, ends.max())


def greedy_counts(
    proba: np.ndarray, y: np.ndarray, metric: MetricConfig, max_size: int = DEFAULT_MAX_SIZE
) -> np.ndarray:
    """Caruana's forward selection with replacement: how many times each of the N rows of ``proba``
    (``[N, rows]``, repeats pooled) is in the ensemble. Ties go to the lowest index (the earliest trial)."""
    p = np.asarray(proba, dtype=np.float64)
    counts = np.zeros(p.shape[0], dtype=np.int64)
    total = np.zeros(p.shape[1])
    score = -np.inf
    for size in range(1, max_size + 1):
        candidates = best_scores(y, (total[None, :] + p) / size, metric)
        i = int(np.argmax(candidates))
        if not candidates[i] > score + _IMPROVES:
            break
        counts[i] += 1
        total += p[i]
        score = float(candidates[i])
    return counts


def pooled(proba: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, repeats, rows]`` probabilities as ``[N, repeats * rows]`` and the labels tiled to match."""
    n, r, rows = proba.shape
    return proba.reshape(n, r * rows), np.tile(y, r)


@dataclass(frozen=True)
class EnsembleSelection:
    """The selected ensemble: weights over the N trials given, one threshold, and its scores with their noise."""

    counts: tuple[int, ...]  # times each trial was added (0: not a member)
    weights: tuple[float, ...]  # counts / their sum
    threshold: float  # optimal on the ensemble's own pooled OOF probabilities
    oof_score: float  # optimistic: weights and threshold chosen on these rows
    oof_se: float  # corrected resampled SE of the fold scores at the threshold
    fold_scores: tuple[float, ...]
    honest_score: float  # nested cross-fitting: weights and threshold chosen without fold k's labels
    honest_se: float
    honest_fold_scores: tuple[float, ...]
    best_single: int  # index of the best single trial (by OOF score)
    vs_best: Comparison  # ensemble minus the best single trial, OOF fold scores
    vs_best_honest: Comparison  # the same on honest fold scores (nested for the ensemble)
    vs_reference: Comparison | None
    vs_reference_honest: Comparison | None

    @property
    def members(self) -> list[int]:
        return [i for i, c in enumerate(self.counts) if c > 0]


def ensemble_of(proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted average of ``proba`` ``[N, ...]`` over its first axis."""
    return np.tensordot(np.asarray(weights, dtype=np.float64), np.asarray(proba, dtype=np.float64), axes=1)


def nested_fold_scores(
    proba: np.ndarray, y: np.ndarray, fold: np.ndarray, metric: MetricConfig, max_size: int = DEFAULT_MAX_SIZE
) -> np.ndarray:
    """Fold k of repeat r scored by the ensemble (weights and threshold) selected on that repeat's other folds."""
    scores = []
    for r in range(proba.shape[1]):
        for k in np.unique(fold[r]):
            held = fold[r] == k
            inner = proba[:, r, ~held]
            counts = greedy_counts(inner, y[~held], metric, max_size)
            w = counts / counts.sum()
            t = best_threshold(y[~held], ensemble_of(inner, w), metric).threshold
            scores.append(score_at(y[held], ensemble_of(proba[:, r, held], w), t, metric))
    return np.array(scores)


def select_ensemble(
    proba: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    metric: MetricConfig,
    reference: int | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> EnsembleSelection:
    """Ensemble selection over ``proba`` ``[N, repeats, rows]`` (N trials on the same splits ``fold``
    ``[repeats, rows]``, labels ``y``); ``reference`` is the index of the study's reference trial, if among them."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    folds = len(np.unique(fold[0]))
    counts = greedy_counts(*pooled(proba, y), metric, max_size)
    weights = counts / counts.sum()
    ens = threshold_scores(y, ensemble_of(proba, weights), fold, metric)  # scored as a trial is
    honest = nested_fold_scores(proba, y, fold, metric, max_size)
    singles = [threshold_scores(y, proba[i], fold, metric) for i in range(proba.shape[0])]
    top = int(np.argmax([s.oof_score for s in singles]))

    def against(other: ThresholdScores) -> tuple[Comparison, Comparison]:
        oof = compare(ens.fold_scores, other.fold_scores, folds, diff=ens.oof_score - other.oof_score)
        return oof, compare(honest, other.honest_fold_scores, folds)

    vs_best, vs_best_honest = against(singles[top])
    vs_ref, vs_ref_honest = (None, None) if reference is None else against(singles[reference])
    return EnsembleSelection(
        counts=tuple(int(c) for c in counts),
        weights=tuple(float(w) for w in weights),
        threshold=ens.threshold,
        oof_score=ens.oof_score,
        oof_se=corrected_se(ens.fold_scores, folds),
        fold_scores=tuple(float(v) for v in ens.fold_scores),
        honest_score=float(honest.mean()),
        honest_se=corrected_se(honest, folds),
        honest_fold_scores=tuple(float(v) for v in honest),
        best_single=top,
        vs_best=vs_best,
        vs_best_honest=vs_best_honest,
        vs_reference=vs_ref,
        vs_reference_honest=vs_ref_honest,
    )
