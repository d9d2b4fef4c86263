"""Ensemble selection, BBC-CV and the Holm-adjusted verdict, checked against a known truth by simulation.

A simulated week: n rows with a latent signal s and labels y ~ Bernoulli(sigmoid(2 s - 1.5)); configuration c's
OOF logits are ``strength_c * 2 s - 1.5`` plus its own row noise (what a different seed changes row by row) and
one offset per (configuration, fold) (what one fold model's initial weights change for all its rows). Truly
equal configurations have the same strength; the truth of any prediction rule is its score on fresh rows drawn
from the same process (fresh labels and fresh noise), which no estimate sees."""

from __future__ import annotations

import numpy as np
import pytest

from objectives.config import MetricConfig
from objectives.ensemble import best_scores, greedy_counts, select_ensemble
from objectives.scoring import threshold_scores
from objectives.selection_bias import adjusted_verdict, bbc_cv, holm_adjusted
from objectives.stats import BETTER, compare
from objectives.threshold import best_threshold, score_at

F1 = MetricConfig(name="f1")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def week(rng, n=1000, configs=10, folds=5, strength=None, noise=0.8, fold_sd=0.0):
    """(proba [configs, 1, n], y, fold [1, n], s): one simulated week's OOF probabilities; ``noise`` is one
    number or one per configuration."""
    noise = np.broadcast_to(np.asarray(noise, dtype=float), (configs,))[:, None]
    s = rng.normal(size=n)
    y = (rng.random(n) < sigmoid(2 * s - 1.5)).astype(np.int64)
    fold = rng.permutation(np.arange(n) % folds)
    a = np.ones(configs) if strength is None else np.asarray(strength)
    offsets = rng.normal(scale=fold_sd, size=(configs, folds))[:, fold] if fold_sd else 0.0
    z = a[:, None] * 2 * s[None, :] - 1.5 + noise * rng.normal(size=(configs, n)) + offsets
    return sigmoid(z)[:, None, :], y, fold[None, :], s


def fresh(rng, configs, n=100_000, strength=None, noise=0.8):
    """Fresh rows of the same process: (y, proba [configs, n]) for every configuration (its own fresh noise)."""
    s = rng.normal(size=n)
    y = (rng.random(n) < sigmoid(2 * s - 1.5)).astype(np.int64)
    a = np.ones(configs) if strength is None else np.asarray(strength)
    return y, sigmoid(a[:, None] * 2 * s[None, :] - 1.5 + noise * rng.normal(size=(configs, n)))


@pytest.mark.parametrize("metric", [F1, MetricConfig(name="macro_f1"), MetricConfig(name="fbeta", beta=2.0)])
def test_best_scores_is_best_threshold_row_by_row(metric):
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.3).astype(np.int64)
    p = rng.random((6, 500))
    p[1] = np.round(p[1], 1)  # heavy ties
    p[2] = 1.0  # one run: everything or nothing
    p[3, y == 1] = 0.9  # separable
    got = best_scores(y, p, metric)
    want = [best_threshold(y, row, metric).score for row in p]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_greedy_selection_never_below_the_best_single_and_stops():
    rng = np.random.default_rng(2)
    proba, y, fold, _ = week(rng, configs=6)
    counts = greedy_counts(proba[:, 0], y, F1, max_size=50)
    assert counts.sum() < 50  # stopped because nothing improved, not at the cap
    single = best_scores(y, proba[:, 0], F1)
    chosen = select_ensemble(proba, y, fold, F1, reference=0)
    assert chosen.oof_score >= single.max() - 1e-9
    assert abs(sum(chosen.weights) - 1.0) < 1e-12
    assert chosen.counts[chosen.best_single] >= 1 and int(np.argmax(single)) == chosen.best_single
    capped = greedy_counts(proba[:, 0], y, F1, max_size=2)
    assert capped.sum() <= 2


def test_a_duplicate_trial_adds_nothing():
    rng = np.random.default_rng(3)
    proba, y, _, _ = week(rng, configs=1)
    counts = greedy_counts(np.concatenate([proba, proba])[:, 0], y, F1)
    assert counts.tolist() == [1, 0]


def test_ensemble_of_configurations_equal_up_to_seed_beats_its_members_on_fresh_rows():
    """In expectation over weeks, the selected ensemble scores at least as well on fresh rows as its members
    (here better: averaging removes part of each member's own noise)."""
    rng = np.random.default_rng(4)
    ens_scores, member_scores = [], []
    for _ in range(15):
        proba, y, fold, _ = week(rng, n=2000, configs=5)
        chosen = select_ensemble(proba, y, fold, F1)
        y_new, p_new = fresh(rng, 5)
        w = np.asarray(chosen.weights)
        ens_scores.append(score_at(y_new, w @ p_new, chosen.threshold, F1))
        for c in range(5):
            t = best_threshold(y, proba[c, 0], F1).threshold
            member_scores.append(score_at(y_new, p_new[c], t, F1))
    assert np.mean(ens_scores) >= np.mean(member_scores)
    assert np.mean(ens_scores) - np.mean(member_scores) > 0.01  # a real gain, not a tie


def test_bbc_is_unbiased_for_equal_configurations_and_the_naive_best_of_n_is_not():
    rng = np.random.default_rng(5)
    bbc_err, naive_err, honest_err = [], [], []
    for _ in range(60):
        proba, y, fold, _ = week(rng, n=1500, configs=10)
        result = bbc_cv(proba, y, F1, bootstraps=40, seed=int(rng.integers(1 << 30)), with_ensemble=False)
        winner = int(np.argmax(best_scores(y, proba[:, 0], F1)))
        t = best_threshold(y, proba[winner, 0], F1).threshold
        y_new, p_new = fresh(rng, 1, n=50_000)
        truth = score_at(y_new, p_new[0], t, F1)  # equal configurations: any one's fresh rows stand for the winner
        bbc_err.append(result.best_single.estimate - truth)
        naive_err.append(result.naive_best - truth)
        honest_err.append(threshold_scores(y, proba[winner], fold, F1).honest_fold_scores.mean() - truth)
    mc = np.std(bbc_err, ddof=1) / np.sqrt(len(bbc_err))
    assert abs(np.mean(bbc_err)) < 3 * mc, (np.mean(bbc_err), mc)
    naive_mc = np.std(naive_err, ddof=1) / np.sqrt(len(naive_err))
    assert np.mean(naive_err) > 3 * naive_mc, (np.mean(naive_err), naive_mc)
    assert np.mean(naive_err) > np.mean(bbc_err) + 0.01


def test_bbc_includes_the_ensemble_procedure_and_a_reference():
    rng = np.random.default_rng(6)
    proba, y, _, _ = week(rng, n=800, configs=4)
    r = bbc_cv(proba, y, F1, reference=0, bootstraps=20, seed=1)
    assert r.ensemble is not None and r.ensemble.bootstraps == 20
    assert r.best_single.diff_vs_reference is not None and r.ensemble.diff_vs_reference is not None
    assert r.ensemble.low <= r.ensemble.estimate <= r.ensemble.high
    assert r.best_single.estimate < r.naive_best


def test_holm_adjusted_p_values():
    got = holm_adjusted([0.01, 0.04, 0.03, float("nan"), 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 with m = 4: 0.02, 0.03, 0.06, 0.06 (monotone)
    np.testing.assert_allclose([got[i] for i in (4, 0, 2, 1)], [0.02, 0.03, 0.06, 0.06])
    assert np.isnan(got[3])


def _verdicts(rng, weeks, noise):
    """How often the week's winner (the best OOF score) is called better than the reference (configuration 0):
    by the plain paired test, by the Holm-adjusted one and by BBC-CV's out-of-bag difference."""
    naive = holm = bbc = 0
    for _ in range(weeks):
        proba, y, fold, _ = week(rng, n=2000, configs=len(noise), noise=noise, fold_sd=0.15)
        scored = [threshold_scores(y, proba[c], fold, F1) for c in range(len(noise))]
        seed = int(rng.integers(1 << 30))
        bbc += (
            bbc_cv(proba, y, F1, reference=0, bootstraps=100, seed=seed, with_ensemble=False).best_single.verdict
            == BETTER
        )
        winner = int(np.argmax([s.oof_score for s in scored]))
        if winner == 0:
            continue  # the reference itself: never "better than the reference"
        ref = scored[0]
        comparisons = [compare(s.fold_scores, ref.fold_scores, 5, diff=s.oof_score - ref.oof_score) for s in scored[1:]]
        naive += comparisons[winner - 1].verdict == BETTER
        holm += adjusted_verdict(comparisons, winner - 1).verdict == BETTER
    return naive / weeks, holm / weeks, bbc / weeks


@pytest.mark.slow
def test_adjusted_verdicts_hold_their_level_for_the_best_of_n_and_bbc_still_finds_a_better_configuration():
    """Ten truly equal configurations (row noise and fold-model offsets only): the winner is called better than
    the reference in at most 5 % of weeks by the Holm-adjusted test and by BBC-CV. One configuration with a third
    of the others' noise: BBC-CV calls it better in most weeks (Holm, over nine comparisons of 4 degrees of
    freedom each, rarely does: it is the strict one)."""
    rng = np.random.default_rng(7)
    naive, holm, bbc = _verdicts(rng, 150, [1.5] * 10)
    assert holm <= 0.05 and bbc <= 0.05, (naive, holm, bbc)
    _, _, power = _verdicts(rng, 40, [1.5] + [0.5] + [1.5] * 8)  # one configuration truly better
    assert power >= 0.8, power
