r"""Estimates and verdicts that account for having chosen the winner among N trials.

**BBC-CV** (Tsamardinos, Greasidou and Borboudakis 2018, *Bootstrapping the out-of-sample predictions for
efficient and accurate cross-validation*, Machine Learning 107). The study's winner is the best of N on the same
OOF rows, so its OOF (or honest) score is biased upward by the selection: the maximum of N noisy scores. BBC-CV
re-runs the *selection* on bootstrap samples of the rows and scores what it picked on the rows it did not see:
for b = 1..B, draw n rows with replacement (in-bag), choose the winner on them (each trial scored at its own
optimal threshold on the in-bag rows; for the ensemble, the whole greedy selection of
:mod:`objectives.ensemble`), and score the winner, at the threshold it chose in-bag, on the out-of-bag rows
(about 37 % of them). The estimate is the mean over b of those out-of-bag scores; no model is retrained (the
OOF probabilities are reused), so it costs seconds. Repeats are pooled: a row drawn brings all its repeats.

What it corrects: the luck of the rows (a trial that happens to fit these rows' noise wins, and its edge does not
carry to rows it has not seen). What it does not: luck that is shared by all of a fold's rows (one fold model's
initial weights), which the row bootstrap sees as signal; and the training set size (the OOF models saw
(K-1)/K of the rows, the final model sees all). ``spread`` is the standard deviation of the out-of-bag scores
over b, a conservative standard error (Tsamardinos et al. use its percentiles as a confidence interval);
``mc_se`` is the Monte Carlo error of the estimate itself (``spread / sqrt(B)``).

**Adjusted verdict** (Holm 1979). A winner's paired corrected t-test against the reference (:mod:`objectives.stats`)
holds its level for one pre-chosen comparison, not for the best of N: with N truly equal configurations the best
one is called better far more often than 2.5 %. :func:`holm_adjusted` adjusts the p-values of the N - 1
comparisons with the reference by Holm's step-down rule, which bounds the chance of calling *any* of them
different when none is (under any dependence between the tests), so in particular the winner's. The fold-level
noise (initial weights, the overlap of the training sets) stays accounted for by the corrected t-test, which a
row bootstrap would miss. It is strict: over nine comparisons of four degrees of freedom (5 folds, one repeat)
it rarely calls even a clearly better configuration.

**BBC verdict** (:attr:`BBCEstimate.verdict`, the one the study's ensemble carries): the out-of-bag difference
between what the selection picked in-bag and the reference, both at their in-bag thresholds, over the
bootstraps; "better" when its 2.5 % percentile is above 0. Because the selection is redone in every bootstrap,
the winner's luck on the in-bag rows does not follow it to the out-of-bag ones, so it holds its level for the
best of N (tested by simulation: at most 5 % of weeks with ten equal configurations) and keeps its power; like
the estimate, it does not see luck shared by a whole fold's rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from objectives.config import MetricConfig
from objectives.ensemble import DEFAULT_MAX_SIZE, best_scores, ensemble_of, greedy_counts
from objectives.stats import BETTER, LEVEL, SAME, WORSE, Comparison, _verdict
from objectives.threshold import best_threshold, score_at

DEFAULT_BOOTSTRAPS = 200


@dataclass(frozen=True)
class BBCEstimate:
    """A selection-corrected estimate: the mean out-of-bag score of what the selection chose in-bag."""

    procedure: str  # "best single trial" or "ensemble selection"
    estimate: float
    spread: float  # SD of the out-of-bag scores over the bootstraps (conservative SE)
    mc_se: float  # Monte Carlo error of ``estimate``
    low: float  # 2.5 % and 97.5 % percentiles of the out-of-bag scores
    high: float
    diff_vs_reference: float | None  # mean out-of-bag difference from the reference (same rows, own thresholds)
    diff_low: float | None  # its 2.5 % and 97.5 % percentiles over the bootstraps
    diff_high: float | None
    bootstraps: int

    @property
    def verdict(self) -> str | None:
        """BETTER when even the 2.5 % percentile of the out-of-bag difference from the reference is above 0,
        WORSE when the 97.5 % one is below, else SAME; None without a reference."""
        if self.diff_low is None or self.diff_high is None:
            return None
        return BETTER if self.diff_low > 0 else WORSE if self.diff_high < 0 else SAME


@dataclass(frozen=True)
class BBCResult:
    best_single: BBCEstimate
    ensemble: BBCEstimate | None
    naive_best: float  # the best OOF score of the N, uncorrected: what the selection would quote


def _summary(procedure: str, oob: list[float], diffs: list[float] | None) -> BBCEstimate:
    x = np.asarray(oob)
    spread = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return BBCEstimate(
        procedure=procedure,
        estimate=float(x.mean()),
        spread=spread,
        mc_se=spread / math.sqrt(len(x)),
        low=float(np.percentile(x, 2.5)),
        high=float(np.percentile(x, 97.5)),
        diff_vs_reference=None if diffs is None else float(np.mean(diffs)),
        diff_low=None if diffs is None else float(np.percentile(diffs, 2.5)),
        diff_high=None if diffs is None else float(np.percentile(diffs, 97.5)),
        bootstraps=len(x),
    )


def _oob_score(inbag: np.ndarray, y_in: np.ndarray, oob: np.ndarray, y_out: np.ndarray, metric: MetricConfig) -> float:
    t = best_threshold(y_in, inbag, metric).threshold
    return score_at(y_out, oob, t, metric)


def bbc_cv(
    proba: np.ndarray,
    y: np.ndarray,
    metric: MetricConfig,
    reference: int | None = None,
    bootstraps: int = DEFAULT_BOOTSTRAPS,
    seed: int = 0,
    with_ensemble: bool = True,
    max_size: int = DEFAULT_MAX_SIZE,
) -> BBCResult:
    """BBC-CV of "the best single trial" and (``with_ensemble``) of "ensemble selection", from ``proba``
    ``[N, repeats, rows]`` and labels ``y``; ``reference`` (an index) adds each one's mean out-of-bag difference
    from the reference trial on the same rows."""
    proba = np.asarray(proba, dtype=np.float64)
    n_trials, repeats, rows = proba.shape
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    single, ens, single_d, ens_d = [], [], [], []
    for _ in range(bootstraps):
        drawn = rng.integers(0, rows, rows)
        out = np.ones(rows, dtype=bool)
        out[drawn] = False
        if not out.any():
            continue
        p_in = proba[:, :, drawn].reshape(n_trials, -1)
        p_out = proba[:, :, out].reshape(n_trials, -1)
        y_in, y_out = np.tile(y[drawn], repeats), np.tile(y[out], repeats)
        winner = int(np.argmax(best_scores(y_in, p_in, metric)))
        single.append(_oob_score(p_in[winner], y_in, p_out[winner], y_out, metric))
        ref = None if reference is None else _oob_score(p_in[reference], y_in, p_out[reference], y_out, metric)
        if ref is not None:
            single_d.append(single[-1] - ref)
        if with_ensemble:
            w = greedy_counts(p_in, y_in, metric, max_size)
            w = w / w.sum()
            ens.append(_oob_score(ensemble_of(p_in, w), y_in, ensemble_of(p_out, w), y_out, metric))
            if ref is not None:
                ens_d.append(ens[-1] - ref)
    naive = float(best_scores(np.tile(y, repeats), proba.reshape(n_trials, -1), metric).max())
    return BBCResult(
        best_single=_summary("best single trial", single, single_d if reference is not None else None),
        ensemble=_summary("ensemble selection", ens, ens_d if reference is not None else None)
        if with_ensemble
        else None,
        naive_best=naive,
    )


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: sorted ascending, :math:`\\tilde p_{(i)} = \\max_{j \\le i}
    \\min(1, (m - j + 1)\\, p_{(j)})`. Rejecting where :math:`\\tilde p < \\alpha` bounds the family-wise error
    rate by :math:`\\alpha`. NaN p-values (no test possible) stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, np.nan)
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


@dataclass(frozen=True)
class AdjustedVerdict:
    """A winner's comparison with the reference, its p-value adjusted for the ``family`` comparisons it was
    chosen among."""

    comparison: Comparison
    adjusted_p: float
    family: int
    verdict: str  # BETTER, WORSE or SAME at ``level`` after adjustment


def comparison_of(diff: float, se: float, df: int, level: float = LEVEL) -> Comparison:
    """The corrected t-test's comparison from a stored difference, its SE and degrees of freedom (R*K - 1)."""
    return _verdict(diff, se, df, level)


def adjusted_verdict(comparisons: Sequence[Comparison], winner: int, level: float = LEVEL) -> AdjustedVerdict:
    """The verdict on ``comparisons[winner]`` (winner minus reference) after Holm's adjustment over all of
    ``comparisons`` (every candidate against the reference on the same splits, the reference itself left out)."""
    adjusted = holm_adjusted([c.p_value for c in comparisons])
    c, p = comparisons[winner], adjusted[winner]
    verdict = SAME if math.isnan(p) or p >= level else (BETTER if c.diff > 0 else WORSE)
    return AdjustedVerdict(comparison=c, adjusted_p=p, family=sum(not math.isnan(v) for v in adjusted), verdict=verdict)
