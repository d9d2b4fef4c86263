"""The one loss (objectives.losses.combined_terms, CombinedLoss around it) against hand arithmetic: BCE, focal with
and without alpha, mixtures, gamma 0 equals BCE; its gradients, its stability, per-model parameters, and
LossConfig's refusals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from objectives.config import LossConfig
from objectives.losses import CombinedLoss, LossParams, combined_terms


def FocalLoss(alpha: float | None = None, gamma: float = 2.0, reduction: str = "mean") -> CombinedLoss:
    """The pure focal loss: the combination with bce_weight 0, focal_weight 1."""
    return CombinedLoss(alpha=alpha, gamma=gamma, bce_weight=0.0, focal_weight=1.0, reduction=reduction)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# (logit, label) pairs worked by hand below
Z = [2.0, -1.0, 0.5]
Y = [1.0, 0.0, 0.0]


def _t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def test_focal_matches_hand_arithmetic_alpha_quarter_gamma_two():
    # z=2, y=1: p_t = sigma(2); -log p_t = log(1 + e^-2); alpha_t = alpha = 0.25
    p1 = 1.0 / (1.0 + math.exp(-2.0))
    f1 = 0.25 * (1.0 - p1) ** 2 * math.log(1.0 + math.exp(-2.0))
    # z=-1, y=0: p_t = 1 - sigma(-1) = sigma(1); -log p_t = log(1 + e^-1); alpha_t = 1 - alpha = 0.75
    p2 = 1.0 - 1.0 / (1.0 + math.exp(1.0))
    f2 = 0.75 * (1.0 - p2) ** 2 * math.log(1.0 + math.exp(-1.0))
    # z=0.5, y=0: p_t = 1 - sigma(0.5); -log p_t = -log(1 - sigma(0.5)) = log(1 + e^0.5)
    p3 = 1.0 - 1.0 / (1.0 + math.exp(-0.5))
    f3 = 0.75 * (1.0 - p3) ** 2 * -math.log(p3)
    assert f3 == pytest.approx(0.75 * (1.0 - p3) ** 2 * math.log(1.0 + math.exp(0.5)), rel=1e-14)

    got = FocalLoss(alpha=0.25, gamma=2.0, reduction="none")(_t(Z), _t(Y))
    assert got.tolist() == pytest.approx([f1, f2, f3], rel=1e-12, abs=0)
    assert FocalLoss(alpha=0.25, gamma=2.0)(_t(Z), _t(Y)).item() == pytest.approx((f1 + f2 + f3) / 3, rel=1e-12)
    assert FocalLoss(alpha=0.25, gamma=2.0, reduction="sum")(_t(Z), _t(Y)).item() == pytest.approx(
        f1 + f2 + f3, rel=1e-12
    )
    # sanity of the hand numbers themselves (so a sign slip in the arithmetic above cannot go unnoticed)
    assert f1 == pytest.approx(0.25 * (1 - 0.8807970779778823) ** 2 * 0.12692801104297263, rel=1e-12)


def test_focal_without_alpha_is_unweighted_and_gamma_modulated():
    got = FocalLoss(alpha=None, gamma=1.5, reduction="none")(_t(Z), _t(Y)).tolist()
    expected = []
    for z, y in zip(Z, Y):
        p_t = _sigmoid(z) if y == 1 else 1.0 - _sigmoid(z)
        expected.append((1.0 - p_t) ** 1.5 * -math.log(p_t))
    assert got == pytest.approx(expected, rel=1e-12, abs=0)


def test_combined_is_weighted_sum_of_bce_and_focal_by_hand():
    alpha, gamma, wb, wf = 0.25, 2.0, 0.3, 0.7
    expected = []
    for z, y in zip(Z, Y):
        p_t = _sigmoid(z) if y == 1 else 1.0 - _sigmoid(z)
        ce = -math.log(p_t)
        alpha_t = alpha if y == 1 else 1.0 - alpha
        expected.append(wb * ce + wf * alpha_t * (1.0 - p_t) ** gamma * ce)
    loss = CombinedLoss(alpha=alpha, gamma=gamma, bce_weight=wb, focal_weight=wf, reduction="none")
    assert loss(_t(Z), _t(Y)).tolist() == pytest.approx(expected, rel=1e-12, abs=0)
    cfg = LossConfig(alpha=alpha, gamma=gamma, bce_weight=wb, focal_weight=wf)
    assert CombinedLoss.from_config(cfg)(_t(Z), _t(Y)).item() == pytest.approx(sum(expected) / 3, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.5, 0.9])
def test_alpha_weights_positives_by_alpha_and_negatives_by_one_minus_alpha(alpha):
    z = _t([-3.0, -0.2, 0.7, 4.0, -3.0, -0.2, 0.7, 4.0])
    y = _t([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    weighted = FocalLoss(alpha=alpha, gamma=2.0, reduction="none")(z, y)
    plain = FocalLoss(alpha=None, gamma=2.0, reduction="none")(z, y)
    ratio = weighted / plain
    assert ratio[:4].tolist() == pytest.approx([alpha] * 4, rel=1e-12)
    assert ratio[4:].tolist() == pytest.approx([1.0 - alpha] * 4, rel=1e-12)


def test_alpha_half_halves_the_unweighted_loss():
    z, y = _t(Z), _t(Y)
    assert torch.allclose(FocalLoss(alpha=0.5)(z, y), 0.5 * FocalLoss(alpha=None)(z, y), rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gamma_zero_without_alpha_is_bce_bit_for_bit(dtype):
    """The same kernel, times a weight of exactly 1 and a modulation of exactly e^0 = 1."""
    gen = torch.Generator().manual_seed(0)
    # include |z| > 20, where softplus switches to its linear approximation
    z = torch.cat([torch.randn(2000, generator=gen, dtype=dtype) * 8, _t([-40, -21, -20, 0, 20, 21, 40], dtype)])
    y = (torch.rand(z.shape, generator=gen) < 0.5).to(dtype)
    for reduction in ("none", "mean", "sum"):
        focal = FocalLoss(alpha=None, gamma=0.0, reduction=reduction)(z, y)
        bce = F.binary_cross_entropy_with_logits(z, y, reduction=reduction)
        assert torch.equal(focal, bce), reduction


def test_gamma_zero_without_alpha_gradient_is_sigmoid_minus_label():
    z = _t([-3.0, -0.5, 0.0, 1.0, 6.0]).requires_grad_()
    y = _t([1.0, 0.0, 1.0, 0.0, 1.0])
    FocalLoss(alpha=None, gamma=0.0, reduction="sum")(z, y).backward()
    assert torch.allclose(z.grad, torch.sigmoid(z.detach()) - y, rtol=1e-12, atol=1e-15)


def test_targets_may_be_integers():
    z = _t(Z)
    assert torch.equal(FocalLoss(0.25)(z, torch.tensor([1, 0, 0])), FocalLoss(0.25)(z, _t(Y)))


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="avg")(_t(Z), _t(Y))


GRAD_CASES = [(None, 0.0), (0.25, 0.0), (None, 0.5), (0.25, 0.5), (0.25, 2.0), (0.75, 1.0), (0.5, 3.0)]


@pytest.mark.parametrize(("alpha", "gamma"), GRAD_CASES)
def test_focal_gradcheck_float64(alpha, gamma):
    gen = torch.Generator().manual_seed(1)
    z = (torch.randn(24, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    y = (torch.arange(24) % 2).to(torch.float64)
    assert torch.autograd.gradcheck(FocalLoss(alpha=alpha, gamma=gamma, reduction="none"), (z, y))
    assert torch.autograd.gradgradcheck(FocalLoss(alpha=alpha, gamma=gamma, reduction="sum"), (z, y))


@pytest.mark.parametrize(("alpha", "gamma"), GRAD_CASES)
def test_combined_gradcheck_float64(alpha, gamma):
    gen = torch.Generator().manual_seed(2)
    z = (torch.randn(24, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    y = (torch.arange(24) % 3 == 0).to(torch.float64)
    loss = CombinedLoss(alpha=alpha, gamma=gamma, bce_weight=0.4, focal_weight=0.6, reduction="mean")
    assert torch.autograd.gradcheck(loss, (z, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("big", [100.0, 1e4])
@pytest.mark.parametrize(("alpha", "gamma"), [(None, 0.0), (0.25, 2.0), (0.25, 0.5), (0.6, 1.0)])
def test_extreme_logits_give_finite_values_and_gradients(dtype, big, alpha, gamma):
    # confidently right and confidently wrong, for both classes
    z = torch.tensor([big, -big, big, -big], dtype=dtype, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    for pure, loss in ((True, FocalLoss(alpha, gamma, "none")), (False, CombinedLoss(alpha, gamma, 0.5, 0.5, "none"))):
        z.grad = None
        values = loss(z, y)
        values.sum().backward()
        assert torch.isfinite(values).all()
        assert torch.isfinite(z.grad).all()
        a_pos = 1.0 if alpha is None else alpha
        a_neg = 1.0 if alpha is None else 1.0 - alpha
        if pure:
            # right: (1 - p_t) ~ 0 so nothing; wrong: -log p_t = |z| and (1 - p_t)^gamma = 1
            assert values.tolist() == pytest.approx([0.0, 0.0, a_neg * big, a_pos * big], rel=1e-6, abs=1e-30)
            # wrong predictions keep a full-size gradient (no clamping to zero)
            assert z.grad.tolist() == pytest.approx([0.0, 0.0, a_neg, -a_pos], rel=1e-6, abs=1e-30)


def test_large_logits_do_not_saturate_like_probability_bce():
    # BCE on probabilities clamps; from logits the loss keeps growing with the margin of the error
    z = _t([50.0, 100.0, 1000.0])
    y = _t([0.0, 0.0, 0.0])
    values = FocalLoss(alpha=None, gamma=2.0, reduction="none")(z, y)
    assert values.tolist() == pytest.approx([50.0, 100.0, 1000.0], rel=1e-12)


# --- LossConfig ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "silent"), [(0.0, "positives"), (1.0, "negatives")])
def test_loss_config_refuses_a_class_with_no_loss(alpha, silent):
    with pytest.raises(ValidationError, match=silent):
        LossConfig(alpha=alpha, bce_weight=0.0, focal_weight=1.0)
    with pytest.raises(ValidationError):
        FocalLoss(alpha=alpha)  # pure focal loss: bce_weight is 0
    # with a BCE term every class still gets a loss, so the same alpha is fine
    assert LossConfig(alpha=alpha, bce_weight=0.1, focal_weight=1.0).alpha == alpha


def test_loss_config_refuses_both_weights_zero():
    with pytest.raises(ValidationError, match="both 0"):
        LossConfig(bce_weight=0.0, focal_weight=0.0)
    with pytest.raises(ValidationError):
        CombinedLoss(bce_weight=0.0, focal_weight=0.0)
    assert LossConfig(bce_weight=0.0, focal_weight=1.0, alpha=0.5).focal_weight == 1.0
    assert LossConfig(bce_weight=1.0, focal_weight=0.0).bce_weight == 1.0


@pytest.mark.parametrize("gamma", [-0.5, -1e-9])
def test_loss_config_refuses_negative_gamma(gamma):
    with pytest.raises(ValidationError):
        LossConfig(gamma=gamma)


@pytest.mark.parametrize("alpha", [-0.01, 1.01, 2.0])
def test_loss_config_refuses_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValidationError):
        LossConfig(alpha=alpha)


@pytest.mark.parametrize("weight", ["bce_weight", "focal_weight"])
def test_loss_config_refuses_negative_weights_and_unknown_keys(weight):
    with pytest.raises(ValidationError):
        LossConfig(**{weight: -0.1})
    with pytest.raises(ValidationError):
        LossConfig(betta=1.0)


def test_loss_config_accepts_the_edges():
    assert LossConfig(alpha=0.0, gamma=0.0).gamma == 0.0
    assert LossConfig(alpha=1.0).alpha == 1.0


def test_bce_alone_by_hand():
    """bce_weight 1, focal_weight 0: -log p_t, whatever alpha and gamma say (they weigh the focal term only)."""
    expected = [math.log(1.0 + math.exp(-2.0)), math.log(1.0 + math.exp(-1.0)), math.log(1.0 + math.exp(0.5))]
    loss = CombinedLoss(alpha=0.3, gamma=4.0, bce_weight=1.0, focal_weight=0.0, reduction="none")
    assert loss(_t(Z), _t(Y)).tolist() == pytest.approx(expected, rel=1e-12, abs=0)


def test_float32_values_match_the_hand_numbers():
    """The engine trains in float32: the mixture of alpha 0.25, gamma 2 at weights 0.3 / 0.7, to float32 rounding."""
    p_t = [_sigmoid(2.0), _sigmoid(1.0), 1.0 - _sigmoid(0.5)]
    alpha_t = [0.25, 0.75, 0.75]
    expected = [(0.3 + 0.7 * a * (1.0 - p) ** 2) * -math.log(p) for p, a in zip(p_t, alpha_t)]
    cfg = LossConfig(alpha=0.25, gamma=2.0, bce_weight=0.3, focal_weight=0.7)
    got = combined_terms(_t(Z, torch.float32), _t(Y, torch.float32), cfg)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_per_model_loss_parameters_equal_each_configuration_alone():
    """One [M, B] call with M configurations' parameters as [M, 1] columns: row m is the call with configuration
    m alone (to float rounding: the columns are broadcast, the scalars folded), values and autograd gradients."""
    configs = [
        LossConfig(),
        LossConfig(alpha=0.25, gamma=2.0),
        LossConfig(alpha=0.9, gamma=0.5, bce_weight=0.2, focal_weight=0.8),
        LossConfig(alpha=None, gamma=0.0, bce_weight=0.0, focal_weight=1.0),
        LossConfig(alpha=0.3, gamma=5.0, bce_weight=1.0, focal_weight=0.0),
    ]
    gen = torch.Generator().manual_seed(1)
    for dtype, rtol in ((torch.float32, 1e-6), (torch.float64, 1e-14)):
        z = (torch.randn(len(configs), 300, generator=gen, dtype=dtype) * 6).requires_grad_()
        with torch.no_grad():
            z[:, :4] = torch.tensor([100.0, -100.0, 1e4, -1e4], dtype=dtype)
        y = (torch.rand(len(configs), 300, generator=gen) < 0.3).to(dtype)
        terms = combined_terms(z, y, LossParams.stack(configs, dtype=dtype))
        (grad,) = torch.autograd.grad(terms.sum(), z)
        assert torch.isfinite(terms).all() and torch.isfinite(grad).all()
        for m, cfg in enumerate(configs):
            zm = z[m].detach().clone().requires_grad_()
            one = combined_terms(zm, y[m], cfg)
            (one_grad,) = torch.autograd.grad(one.sum(), zm)
            torch.testing.assert_close(terms[m].detach(), one.detach(), rtol=rtol, atol=0)
            torch.testing.assert_close(grad[m], one_grad, rtol=rtol, atol=1e-30)


def test_the_gradient_matches_central_differences():
    cfg = LossConfig(alpha=0.9, gamma=0.5, bce_weight=0.2, focal_weight=0.8)
    gen = torch.Generator().manual_seed(0)
    z = (torch.randn(300, generator=gen, dtype=torch.float64) * 6).requires_grad_()
    y = (torch.rand(300, generator=gen, dtype=torch.float64) < 0.3).double()
    (grad,) = torch.autograd.grad(combined_terms(z, y, cfg).sum(), z)
    h = 1e-6
    numeric = (combined_terms(z.detach() + h, y, cfg) - combined_terms(z.detach() - h, y, cfg)) / (2 * h)
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)
