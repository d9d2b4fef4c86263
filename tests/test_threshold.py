"""The exact threshold sweep against brute force with scikit-learn, ties included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, fbeta_score

from objectives.config import MetricConfig
from objectives.metrics import score_from_counts
from objectives.threshold import (
    best_threshold,
    cross_fitted_scores,
    metric_curve,
    score_at,
)

METRICS = {
    "f1": (MetricConfig(name="f1"), lambda y, pred: f1_score(y, pred, zero_division=0)),
    "macro_f1": (
        MetricConfig(name="macro_f1"),
        lambda y, pred: f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0),
    ),
    "f2": (MetricConfig(name="fbeta", beta=2.0), lambda y, pred: fbeta_score(y, pred, beta=2.0, zero_division=0)),
    "f0.5": (MetricConfig(name="fbeta", beta=0.5), lambda y, pred: fbeta_score(y, pred, beta=0.5, zero_division=0)),
}
# the property tests call scikit-learn once per cut, which dominates their runtime: f0.5 only in fixed examples
PROPERTY_METRICS = ["f1", "macro_f1", "f2"]

# few distinct values, so that ties (between rows and between classes) are the rule, not the exception
TIED_VALUES = [0.0, 0.1, 0.25, 0.5, 0.5, 0.9, 1.0]
probability = st.one_of(
    st.sampled_from(TIED_VALUES),
    st.floats(0.0, 1.0).map(lambda v: round(v, 1)),
    st.floats(0.0, 1.0, allow_subnormal=False),
)


@st.composite
def labelled_probabilities(draw, max_size: int = 40):
    n = draw(st.integers(2, max_size))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.int64)
    assume(0 < y.sum() < n)  # both classes present
    tied_only = draw(st.booleans())
    values = st.sampled_from(TIED_VALUES) if tied_only else probability
    p = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float64)
    return y, p


def _brute_force(y, p, score):
    """Every distinct cut ``p >= t`` for t among the values, plus "nothing positive"; (score, n predicted pos)."""
    out = [(score(y, np.zeros_like(y, dtype=bool)), 0)]
    for t in np.unique(p):
        pred = p >= t
        out.append((score(y, pred), int(pred.sum())))
    return out


@pytest.mark.parametrize("name", PROPERTY_METRICS)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=labelled_probabilities())
def test_best_threshold_is_the_exact_optimum_over_all_cuts(name, data):
    y, p = data
    metric, sk = METRICS[name]
    choice = best_threshold(y, p, metric)
    candidates = _brute_force(y, p, sk)
    best = max(s for s, _ in candidates)

    assert choice.score == pytest.approx(best, rel=1e-12, abs=1e-12)
    # the returned threshold really achieves the returned score
    pred = p >= choice.threshold
    assert sk(y, pred) == pytest.approx(choice.score, rel=1e-12, abs=1e-12)
    # ties go to the highest threshold: the fewest predicted positives among the optimal cuts
    fewest = min(n for s, n in candidates if s == pytest.approx(best, rel=1e-12, abs=1e-12))
    assert int(pred.sum()) == fewest
    # and it is a cut: the same rows as ">= some value", never splitting a run of equal probabilities
    assert not (set(p[pred].tolist()) & set(p[~pred].tolist()))
    assert score_at(y, p, choice.threshold, metric) == pytest.approx(choice.score, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", PROPERTY_METRICS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=labelled_probabilities(), t=probability)
def test_score_at_matches_sklearn(name, data, t):
    y, p = data
    metric, sk = METRICS[name]
    for threshold in (t, *p[:3].tolist()):  # includes thresholds exactly equal to a probability (>=)
        assert score_at(y, p, threshold, metric) == pytest.approx(sk(y, p >= threshold), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", PROPERTY_METRICS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=labelled_probabilities(max_size=25))
def test_metric_curve_scores_every_cut_highest_threshold_first(name, data):
    y, p = data
    metric, sk = METRICS[name]
    thresholds, scores = metric_curve(y, p, metric)
    assert len(thresholds) == len(np.unique(p)) + 1
    assert np.all(np.diff(thresholds) < 0)
    assert not np.any(p >= thresholds[0])  # first cut: nothing positive
    assert np.all(p >= thresholds[-1])  # last cut: everything positive
    for t, s in zip(thresholds, scores):
        assert s == pytest.approx(sk(y, p >= t), rel=1e-12, abs=1e-12)


def test_threshold_is_the_midpoint_between_distinct_values():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.7, 0.3, 0.1])
    choice = best_threshold(y, p, MetricConfig(name="f1"))
    assert choice.threshold == pytest.approx(0.5)
    assert choice.score == 1.0


def test_exact_ties_that_differ_in_the_last_bit_go_to_the_highest_threshold():
    # macro F1 is exactly 11/21 at the cuts 0.25 and 0.1, but the two floats computed differ by one ulp
    y = np.array([0, 0, 0, 1] + [0] * 9 + [1] * 17)
    p = np.array([0.0] * 4 + [0.1] + [0.25] * 19 + [0.0, 0.0, 0.1, 0.1, 0.25, 0.25])
    choice = best_threshold(y, p, MetricConfig(name="macro_f1"))
    assert choice.score == pytest.approx(11 / 21, rel=1e-12)
    assert choice.threshold == pytest.approx(0.175)  # midpoint of 0.25 and 0.1, not of 0.1 and 0.0


def test_adjacent_floats_still_separate():
    lo = np.nextafter(0.5, 0.0)
    y = np.array([1, 0])
    p = np.array([0.5, lo])
    choice = best_threshold(y, p, MetricConfig(name="f1"))
    assert choice.score == 1.0
    assert list(p >= choice.threshold) == [True, False]


def test_predict_nothing_positive_is_a_candidate():
    # a hopeless model: the positive has the lowest score; for macro F1 calling everything negative is best
    y = np.array([1, 0, 0, 0])
    p = np.array([0.1, 0.9, 0.9, 0.9])
    choice = best_threshold(y, p, MetricConfig(name="macro_f1"))
    assert choice.score == pytest.approx(0.5 * (0.0 + 6.0 / 7.0))
    assert choice.threshold > 0.9
    assert not np.any(p >= choice.threshold)


def test_all_tied_probabilities():
    y = np.array([1, 0, 1, 0, 0])
    p = np.full(5, 0.3)
    choice = best_threshold(y, p, MetricConfig(name="f1"))
    assert choice.score == pytest.approx(2 * 2 / (2 * 2 + 3))
    assert np.all(p >= choice.threshold)


@pytest.mark.parametrize(
    ("y", "p"), [([], []), ([1, 0], [0.5]), ([[1, 0]], [[0.5, 0.5]])], ids=["empty", "length", "2-d"]
)
def test_bad_shapes_are_refused(y, p):
    with pytest.raises(ValueError):
        best_threshold(np.array(y), np.array(p), MetricConfig())


# --- metrics from counts ----------------------------------------------------------------------------------------


def test_score_from_counts_by_hand():
    tp, fp, fn, tn = np.array([3, 0, 0]), np.array([1, 0, 2]), np.array([2, 0, 5]), np.array([4, 10, 1])
    f1 = score_from_counts(tp, fp, fn, tn, MetricConfig(name="f1"))
    assert f1.tolist() == pytest.approx([6 / (6 + 1 + 2), 0.0, 0.0])
    f2 = score_from_counts(tp, fp, fn, tn, MetricConfig(name="fbeta", beta=2.0))
    assert f2[0] == pytest.approx(5 * 3 / (5 * 3 + 4 * 2 + 1))
    macro = score_from_counts(tp, fp, fn, tn, MetricConfig(name="macro_f1"))
    # negative-class F1 of the first column: tp'=tn=4, fp'=fn=2, fn'=fp=1
    assert macro[0] == pytest.approx(0.5 * (6 / 9 + 8 / (8 + 2 + 1)))
    assert macro[1] == pytest.approx(0.5 * (0.0 + 1.0))  # no positives at all, every negative right


# --- cross-fitting ------------------------------------------------------------------------------------------


def _brute_force_cross_fitted(y, p, fold, sk):
    """For each fold: on the other folds, try every cut (midpoint thresholds, highest first), keep the first best;
    score the held fold at that threshold."""
    out = []
    for k in np.unique(fold):
        held = fold == k
        yt, pt = y[~held], p[~held]
        values = np.unique(pt)[::-1]
        thresholds = [np.nextafter(values[0], np.inf)]
        thresholds += [(a + b) / 2 for a, b in itertools.pairwise(values)] + [values[-1]]
        scores = [sk(yt, pt >= t) for t in thresholds]
        t = thresholds[int(np.argmax(scores))]
        out.append(sk(y[held], p[held] >= t))
    return np.array(out)


def test_cross_fitted_scores_by_hand():
    # fold 0's threshold comes from fold 1 (values 0.45 pos, 0.3 neg: midpoint 0.375): fold 0 is perfect.
    # fold 1's threshold comes from fold 0 (0.8 pos, 0.2 neg: midpoint 0.5): fold 1 gets no positive at all.
    y = np.array([1, 0, 1, 0])
    p = np.array([0.8, 0.2, 0.45, 0.3])
    fold = np.array([0, 0, 1, 1])
    assert cross_fitted_scores(y, p, fold, MetricConfig(name="f1")).tolist() == [1.0, 0.0]
    # whereas the OOF-optimal threshold, chosen on all rows, scores a flattering 1.0
    assert best_threshold(y, p, MetricConfig(name="f1")).score == 1.0


@pytest.mark.parametrize("name", list(METRICS))
def test_cross_fitted_scores_match_brute_force(name):
    metric, sk = METRICS[name]
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.35, 0.6, 0.2, 0.45, 0.3, 0.1, 0.55, 0.65, 0.05, 0.3, 0.3, 0.62])
    fold = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    got = cross_fitted_scores(y, p, fold, metric)
    expected = _brute_force_cross_fitted(y, p, fold, sk)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=labelled_probabilities(max_size=24), n_folds=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_cross_fitted_scores_match_brute_force_random(data, n_folds, seed):
    y, p = data
    assume(len(y) >= 2 * n_folds)
    fold = np.random.default_rng(seed).permutation(np.arange(len(y)) % n_folds)
    for k in range(n_folds):  # every training side needs both classes to be a meaningful case
        assume(0 < y[fold != k].sum() < (fold != k).sum())
    metric, sk = METRICS["f1"]
    np.testing.assert_allclose(
        cross_fitted_scores(y, p, fold, metric), _brute_force_cross_fitted(y, p, fold, sk), rtol=1e-12, atol=1e-12
    )
