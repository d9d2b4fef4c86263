"""The yardstick: scikit-learn's ``HistGradientBoostingClassifier`` with its defaults, cross-validated on exactly
the study's splits and scored exactly as a trial is.

Why: a user who tunes the loss of a weak network all week should be told how far a default gradient-boosting
model, with no tuning at all, is ahead. The yardstick is measured, not exported: it is no competitor of the
trials, only the distance to a model that costs nothing to try.

How, so that the comparison is paired and fair:

- the splits are :func:`objectives.evaluate.cv_splits` of the study's ``cv`` (the function the trials' CV uses:
  the same rows in the same folds, every repeat);
- the model sees numeric columns as they are (its own missing-value handling) and categorical columns as
  categories (native categorical support: :func:`objectives.preprocess.category_codes`, fitted on nothing); a
  categorical column with more distinct values than the model's bins (255) is given as ordinal codes instead;
- its OOF probabilities go through :func:`objectives.scoring.score_oof` (the trials' threshold choice on pooled
  OOF probabilities, the same fold scores), its ± is :func:`objectives.stats.estimate`'s corrected resampled SE,
  and :func:`versus_baseline` is the paired fold-by-fold difference of a trial from it
  (:func:`objectives.stats.compare`).

Defaults but one: ``random_state`` is fixed (``cv.seed``), because with more than 10,000 rows the model holds out
10 % of its training rows for early stopping at random; otherwise two runs would give two yardsticks. It runs
on one OpenMP thread: on a shared machine (measured: 2 cores, load 10) OpenMP's spin-waiting threads made one
fit 12x slower with 2 threads than with 1 (6.3 s against 0.5 s on 800 rows); the yardstick is small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from objectives.config import CVConfig, MetricConfig
from objectives.stats import Comparison, Estimate, compare, estimate

if TYPE_CHECKING:  # pandas and scikit-learn only where the yardstick is trained: status reads records alone
    from objectives.data import Dataset

NAME = "gradient boosting"
MAX_NATIVE_CATEGORIES = 255  # HistGradientBoostingClassifier's limit for a categorical feature (max_bins)


@dataclass(frozen=True)
class BaselineResult:
    """The yardstick's scores on the study's splits (fold scores repeat-major, as a trial's)."""

    metric: str
    oof_score: float
    threshold: float
    estimate: Estimate
    fold_scores: list[float]
    folds: int
    seconds: float
    fold_of_row_by_repeat: np.ndarray = field(repr=False)  # [repeats, rows]
    oof_proba_by_repeat: np.ndarray = field(repr=False)

    def record(self) -> dict[str, Any]:
        """Plain JSON-able data (what a study stores and ``status --json`` shows)."""
        return {
            "model": NAME,
            "metric": self.metric,
            "score": self.oof_score,
            "se": self.estimate.se,
            "threshold": self.threshold,
            "fold_scores": list(self.fold_scores),
            "folds": self.folds,
            "seconds": self.seconds,
        }


def _model_table(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Numeric columns as floats then categorical columns as codes (NaN where missing); which are categorical."""
    from objectives.preprocess import category_codes

    coded, vocabulary = category_codes(dataset.features, dataset.categorical_columns)
    table = coded[list(dataset.numeric_columns) + list(dataset.categorical_columns)].to_numpy(dtype=np.float64)
    native = [len(vocabulary[c]) <= MAX_NATIVE_CATEGORIES for c in dataset.categorical_columns]
    return table, np.array([False] * len(dataset.numeric_columns) + native, dtype=bool)


def evaluate_baseline(dataset: Dataset, cv: CVConfig, metric: MetricConfig) -> BaselineResult:
    """Cross-validate the yardstick on the splits of ``cv`` (every repeat) and score it as a trial."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    from objectives.data import check_folds
    from objectives.scoring import score_oof

    start = time.perf_counter()
    check_folds(dataset, cv.folds)
    table, categorical = _model_table(dataset)
    with threadpool_limits(1, user_api="openmp"):  # why: see the module docstring
        oof, fold_of_row = _cross_validate(dataset, cv, table, categorical)
    scores = score_oof(dataset.y, oof, fold_of_row, metric)
    return BaselineResult(
        metric=metric.label,
        oof_score=scores.oof_score,
        threshold=scores.threshold,
        estimate=estimate(scores.fold_scores, cv.folds, mean=scores.oof_score),
        fold_scores=[float(v) for v in scores.fold_scores],
        folds=cv.folds,
        seconds=time.perf_counter() - start,
        fold_of_row_by_repeat=fold_of_row,
        oof_proba_by_repeat=oof,
    )


def yardstick_model(categorical: np.ndarray, seed: int) -> Any:
    """``HistGradientBoostingClassifier`` with its defaults, native categories, a fixed ``random_state``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        categorical_features=categorical if categorical.any() else None, random_state=seed
    )


def _cross_validate(
    dataset: Dataset, cv: CVConfig, table: np.ndarray, categorical: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """OOF probabilities and fold numbers ``[repeats, rows]`` of the yardstick on the splits of ``cv``."""
    from objectives.evaluate import cv_splits

    oof = np.empty((cv.repeats, dataset.n_rows), dtype=np.float64)
    fold_of_row = np.empty((cv.repeats, dataset.n_rows), dtype=np.int64)
    for s, (train, val) in enumerate(cv_splits(dataset.y, cv)):
        r, k = divmod(s, cv.folds)
        model = yardstick_model(categorical, cv.seed).fit(table[train], dataset.y[train])
        oof[r, val] = model.predict_proba(table[val])[:, 1]
        fold_of_row[r, val] = k
    return oof, fold_of_row


def versus_baseline(
    trial_fold_scores: list[float], trial_score: float, baseline: dict[str, Any] | BaselineResult
) -> Comparison:
    """The trial minus the yardstick, paired fold by fold on the same splits (negative: the trial is behind);
    the point estimate is the difference of the two pooled OOF scores, the SE the corrected one of the fold
    differences."""
    record = baseline.record() if isinstance(baseline, BaselineResult) else baseline
    return compare(trial_fold_scores, record["fold_scores"], record["folds"], diff=trial_score - record["score"])


def baseline_line(baseline: dict[str, Any], trial: Comparison | None = None, who: str = "best trial") -> str:
    """``baseline gradient boosting 0.725 ± 0.003; best trial -0.034 ± 0.004 behind``."""
    text = f"baseline {NAME} {baseline['score']:.3f} ± {baseline['se']:.3f}"
    if trial is None:
        return text
    side = "behind" if trial.diff < 0 else "ahead"
    return f"{text}; {who} {trial.diff:+.3f} ± {trial.se:.3f} {side} ({trial.verdict})"
