"""The corrected resampled t-test: calibrated where the truth is known, and on real trials of the real engine."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import objectives.evaluate as evaluate_module
from objectives.config import CVConfig, ModelConfig, TrainConfig, TrialConfig
from objectives.data import DataSpec, load_dataset
from objectives.evaluate import evaluate, fold_seeds
from objectives.stats import BETTER, SAME, WORSE, compare, corrected_se, estimate, repeats_of, student_t_two_sided_p

K = 5


def correlated_scores(rng, n_sim: int, repeats: int, folds: int = K, sigma: float = 0.01) -> np.ndarray:
    """Fold scores whose pairwise correlation is rho = 1/K, the model under which Nadeau and Bengio's
    correction is exact: x_i = sqrt(rho) z0 + sqrt(1 - rho) z_i, so Var(mean) = sigma^2 (rho + (1 - rho) / n)."""
    rho = 1.0 / folds
    n = repeats * folds
    shared = rng.normal(size=(n_sim, 1))
    own = rng.normal(size=(n_sim, n))
    return sigma * (math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * own)


def test_corrected_variance_is_unbiased_where_the_naive_one_is_not():
    rng = np.random.default_rng(0)
    for repeats in (1, 3):
        x = correlated_scores(rng, 20_000, repeats)
        true_var = x.mean(axis=1).var()
        corrected = np.mean([corrected_se(row, K) ** 2 for row in x])
        naive = np.mean(x.var(axis=1, ddof=1) / x.shape[1])
        assert corrected == pytest.approx(true_var, rel=0.05)
        assert naive < 0.6 * true_var  # the naive SE is far too small: why the correction exists


def test_se_shrinks_as_repeats_grow():
    rng = np.random.default_rng(1)
    mean_se = [np.mean([corrected_se(row, K) for row in correlated_scores(rng, 4000, r)]) for r in (1, 2, 3, 10)]
    assert all(a > b for a, b in itertools.pairwise(mean_se)), mean_se


def test_identical_configurations_are_not_distinguishable_in_far_more_than_90_percent():
    """Two configurations identical up to their init seed: the split's luck is shared (it cancels in the paired
    difference), the init noise is their own."""
    rng = np.random.default_rng(2)
    n_sim = 4000
    split = correlated_scores(rng, n_sim, 1)
    a = 0.70 + split + correlated_scores(rng, n_sim, 1, sigma=0.004)
    b = 0.70 + split + correlated_scores(rng, n_sim, 1, sigma=0.004)
    verdicts = [compare(ra, rb, K).verdict for ra, rb in zip(a, b)]
    same = verdicts.count(SAME) / n_sim
    # the noise here follows the correction's own model, so the test keeps its nominal level: 95 % (more when
    # the real fold correlation is below 1/K, as with independent init noise)
    assert same > 0.93, same
    assert verdicts.count(BETTER) > 0 and verdicts.count(WORSE) > 0  # errors either way, both rare


def test_a_real_difference_is_seen_and_its_sign_is_right():
    rng = np.random.default_rng(3)
    noise = correlated_scores(rng, 200, 3, sigma=0.004)
    better = [compare(0.72 + row, 0.70 + row + 0.001 * rng.normal(size=row.size), K) for row in noise]
    assert all(c.verdict == BETTER for c in better)
    assert all(compare(0.70 + row, 0.72 + row + 0.001 * rng.normal(size=row.size), K).verdict == WORSE for row in noise)


def test_estimate_per_repeat_and_degenerate_cases():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.2, 0.3, 0.4, 0.5, 0.6]
    e = estimate(scores, K)
    assert (e.repeats, e.repeat_means) == (2, pytest.approx((0.3, 0.4)))
    assert e.mean == pytest.approx(0.35)
    s2 = np.var(scores, ddof=1)
    assert e.se == pytest.approx(math.sqrt((1 / 10 + 1 / 4) * s2))
    assert estimate(scores, K, mean=0.9).mean == 0.9
    assert repeats_of([0.0] * 15, 5) == 3
    with pytest.raises(ValueError, match="whole repeats"):
        repeats_of([0.0] * 7, 5)
    with pytest.raises(ValueError, match="same folds"):
        compare([0.1] * 5, [0.1] * 10, K)
    same = compare([0.5] * 5, [0.5] * 5, K)
    assert (same.diff, same.verdict) == (0.0, SAME)
    shifted = compare([0.6] * 5, [0.5] * 5, K)  # every fold better by the same amount
    assert shifted.verdict == BETTER and shifted.se == 0.0
    centred = compare([0.6, 0.5, 0.7, 0.6, 0.5], [0.5] * 5, K, diff=0.01)
    assert centred.diff == 0.01 and centred.se == pytest.approx(corrected_se([0.1, 0, 0.2, 0.1, 0], K))


def test_p_value_is_the_two_sided_student_t_tail():
    # t = 2.776445 is the 97.5% quantile of Student t with 4 degrees of freedom (tables): two-sided p = 0.05.
    d = [0.02, 0.01, 0.03, 0.0, 0.04]  # 5 folds: df = 4
    c = compare(d, [0.0] * 5, K)
    assert c.df == 4
    at_p05 = compare(d, [0.0] * 5, K, diff=2.776445 * c.se)  # the same SE, the difference set at t = 2.776445
    assert at_p05.p_value == pytest.approx(0.05, abs=1e-6)
    # df = 1: P(|T| >= t) = 1 - 2 atan(t) / pi exactly (Cauchy)
    two = compare([0.1, 0.3], [0.0, 0.0], 2, diff=0.15)
    assert two.p_value == pytest.approx(1 - 2 * math.atan(two.t) / math.pi, rel=1e-12)
    from scipy.stats import t as student_t  # the reference distribution, imported here only

    for row in correlated_scores(np.random.default_rng(11), 20, 3):
        got = compare(row + 0.002, np.zeros_like(row), K)
        assert got.p_value == pytest.approx(2 * student_t.sf(abs(got.t), got.df), rel=1e-10)
    certain = compare([0.6] * 5, [0.5] * 5, K)  # zero SE, a non-zero difference: t is infinite
    assert (certain.t, certain.p_value) == (math.inf, 0.0)


@pytest.mark.parametrize("df", [0.5, 1, 2, 3, 4, 5, 9, 14, 19, 29, 49, 99, 199, 1000])
def test_student_t_p_value_matches_scipy(df):
    """The written-out incomplete beta against scipy's Student t, from t = 0 (p = 1) through both branches of
    the continued fraction to the far tail (p near 1e-300), and symmetric in t."""
    from scipy.stats import t as student_t

    for t in [0.0, 1e-12, 1e-6, 0.01, 0.1, 0.5, 1, 1.5, 2, 2.776445, 3, 5, 10, 30, 100, 1e3, 1e8]:
        want = 2 * student_t.sf(t, df)
        got = student_t_two_sided_p(t, df)
        assert got == student_t_two_sided_p(-t, df)
        if want > 1e-290:
            assert got == pytest.approx(want, rel=1e-10, abs=0), (t, df)
        else:
            assert got < 1e-280, (t, df)


def test_student_t_p_value_refuses_what_has_none():
    for t, df in [(1.0, 0), (1.0, -2), (math.nan, 4), (1.0, math.nan)]:
        with pytest.raises(ValueError, match="df > 0 and a number t"):
            student_t_two_sided_p(t, df)


# ---------------------------------------------------------------------------------------- with the engine


@pytest.fixture
def learnable(write_csv):
    return load_dataset(DataSpec(path=write_csv(n=400, seed=5, missing=False), target="label"))


def _config(seed: int, epochs: int = 8, lr: float = 1e-2) -> TrialConfig:
    return TrialConfig(
        model=ModelConfig(hidden=(8,)),
        train=TrainConfig(epochs=epochs, batch_size=64, lr=lr, device="cpu"),
        cv=CVConfig(folds=K, seed=seed),
    )


def test_real_trials_identical_up_to_init_seed_are_not_distinguishable(learnable, monkeypatch):
    """The same configuration on the same splits with other init seeds (what differs between two configurations
    whose losses make no difference), over many split seeds."""
    offset = {"value": 0}
    monkeypatch.setattr(evaluate_module, "fold_seeds", lambda seed, folds: fold_seeds(seed + offset["value"], folds))
    verdicts = []
    for seed in range(20):
        offset["value"] = 0
        a = evaluate(learnable, _config(seed))
        offset["value"] = 10_000
        b = evaluate(learnable, _config(seed))
        assert a.fold_scores != b.fold_scores  # really other init seeds
        verdicts.append(compare(a.fold_scores, b.fold_scores, K, diff=a.oof_score - b.oof_score).verdict)
    assert verdicts.count(SAME) >= 19, verdicts


def test_real_crippled_configuration_is_reported_worse(learnable):
    for seed in (0, 1):
        good = evaluate(learnable, _config(seed, epochs=30))
        crippled = evaluate(learnable, _config(seed, epochs=1, lr=1e-4))
        c = compare(good.fold_scores, crippled.fold_scores, K, diff=good.oof_score - crippled.oof_score)
        assert c.verdict == BETTER, c
        assert compare(crippled.fold_scores, good.fold_scores, K).verdict == WORSE
