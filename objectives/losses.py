r"""The losses a trial tunes: focal loss and the BCE + focal combination, both computed from logits.

For a logit :math:`z` and a label :math:`y \in \{0, 1\}`, write :math:`s = 2y - 1` and
:math:`p_t = \sigma(s z)` (the probability given to the true class). Then

.. math::

    \mathrm{BCE}(z, y)   &= -\log p_t = \operatorname{softplus}(-s z) \\
    \mathrm{Focal}(z, y) &= \alpha_t \, (1 - p_t)^{\gamma} \, (-\log p_t), \qquad
        \alpha_t = \begin{cases} \alpha & y = 1 \\ 1 - \alpha & y = 0 \end{cases} \\
    \mathrm{Combined}    &= w_{\mathrm{bce}} \, \mathrm{BCE} + w_{\mathrm{focal}} \, \mathrm{Focal}

``alpha`` is the RetinaNet / torchvision weight: ``alpha`` on positives, ``1 - alpha`` on negatives;
``alpha=None`` means :math:`\alpha_t = 1` (no class weighting). With ``gamma=0`` and ``alpha=None`` the focal
term *is* BCE, bit for bit.

Stability: nothing here forms a probability and takes its log. :math:`-\log p_t` is ``softplus(-s z)`` and
:math:`(1 - p_t)^\gamma = \exp(\gamma \log\sigma(-s z))`, so logits of :math:`\pm 100` (or :math:`\pm 10^4`)
give finite values and finite gradients. (BCE on probabilities clamps at :math:`\log 10^{-12}` and has a zero
gradient there.)

The training loop uses :func:`combined_terms_and_grad`: the same values and their derivative, computed together
(the network is differentiated by hand, see :mod:`objectives.model`). With :math:`q = 1 - p_t = \sigma(-s z)`:

.. math::

    \frac{\partial\,\mathrm{BCE}}{\partial z} = -s\,q, \qquad
    \frac{\partial\,\mathrm{Focal}}{\partial z} = -s\,\alpha_t\,q^{\gamma}\left(\gamma\,p_t\,(-\log p_t) + q\right)

A configuration in which one class gets no loss at all (``bce_weight=0`` with ``alpha`` 0 or 1) is refused by
:class:`objectives.config.LossConfig`, not merely warned about.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objectives.config import LossConfig


def alpha_weights(alpha: float, targets: Tensor) -> Tensor:
    r""":math:`\alpha_t`: ``alpha`` on positives, ``1 - alpha`` on negatives."""
    return (1.0 - alpha) + (2.0 * alpha - 1.0) * targets


def focal_terms(logits: Tensor, targets: Tensor, alpha: float | None, gamma: float) -> Tensor:
    """Element-wise focal loss (no reduction). ``targets`` holds 0/1 as a float tensor."""
    signed = logits * (2.0 * targets - 1.0)
    # -log p_t; not F.softplus(-signed), which returns its input unchanged above 20 (off by up to 2e-9)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma == 0.0:
        modulated = ce
    else:
        modulated = torch.exp(gamma * F.logsigmoid(-signed)) * ce  # (1 - p_t)^gamma * ce
    if alpha is None:
        return modulated
    return alpha_weights(alpha, targets) * modulated


def combined_terms(logits: Tensor, targets: Tensor, cfg: LossConfig) -> Tensor:
    """Element-wise ``bce_weight * BCE + focal_weight * Focal(alpha, gamma)`` (no reduction)."""
    total = torch.zeros_like(logits)
    if cfg.bce_weight:
        total = total + cfg.bce_weight * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if cfg.focal_weight:
        total = total + cfg.focal_weight * focal_terms(logits, targets, cfg.alpha, cfg.gamma)
    return total


@dataclass(frozen=True)
class LossParams:
    r"""The loss parameters of M models as ``[M, 1]`` float32 columns, broadcast over each model's batch: the
    training loss of models with different loss configurations, computed in the same kernels.

    :math:`\alpha_t = a_0 + a_1 y` with :math:`(a_0, a_1) = (1 - \alpha, 2\alpha - 1)`, or :math:`(1, 0)` for
    ``alpha=None``: exactly 1, so an unweighted model's terms are not rounded by a weight. ``gamma`` 0 gives
    :math:`q^0 = 1` exactly. A single :class:`LossConfig` is :meth:`of` (broadcast over every element)."""

    bce_weight: Tensor
    focal_weight: Tensor
    gamma: Tensor
    alpha_base: Tensor  # a_0
    alpha_slope: Tensor  # a_1

    @classmethod
    def stack(
        cls, configs: list[LossConfig], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> LossParams:
        def column(values: list[float]) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)

        return cls(
            bce_weight=column([c.bce_weight for c in configs]),
            focal_weight=column([c.focal_weight for c in configs]),
            gamma=column([c.gamma for c in configs]),
            alpha_base=column([1.0 if c.alpha is None else 1.0 - c.alpha for c in configs]),
            alpha_slope=column([0.0 if c.alpha is None else 2.0 * c.alpha - 1.0 for c in configs]),
        )

    @classmethod
    def of(cls, cfg: LossConfig, like: Tensor) -> LossParams:
        """One configuration for every element of ``like`` (0-d tensors, so any shape broadcasts unchanged)."""
        stacked = cls.stack([cfg], like.device, like.dtype)
        return cls(**{name: getattr(stacked, name).reshape(()) for name in cls.__dataclass_fields__})


def combined_terms_and_grad(logits: Tensor, targets: Tensor, cfg: LossConfig | LossParams) -> tuple[Tensor, Tensor]:
    r""":func:`combined_terms` and its derivative with respect to ``logits`` (see the module docstring), in one
    pass: the training loss, which differentiates the network by hand. ``targets`` holds 0/1 as floats.
    ``cfg`` is one configuration for every row, or :class:`LossParams` with one row per model (``logits`` is
    then ``[M, B]``): the same kernels either way, so a model's values do not depend on the others'.

    Written for few kernels (it runs once per training step): with :math:`u = -s z`, :math:`-\log p_t =
    \log(1 + e^u)` and :math:`q = 1 - p_t = \sigma(u)`; tests hold it to :func:`combined_terms` and autograd.
    """
    p = cfg if isinstance(cfg, LossParams) else LossParams.of(cfg, logits)
    neg_sign = 1.0 - 2.0 * targets  # -s
    u = logits * neg_sign
    ce = torch.logaddexp(u.new_zeros(()), u)  # -log p_t, exact for any u
    q = torch.sigmoid(u)
    total = ce * p.bce_weight
    slope = q * p.bce_weight  # d total / d z, divided by -s
    weight = (targets * p.alpha_slope + p.alpha_base).mul_(p.focal_weight)  # focal_weight * alpha_t
    weighted = q.pow(p.gamma).mul_(weight)  # focal_weight * alpha_t * q^gamma
    total.addcmul_(weighted, ce)
    # d/dz of q^gamma (-log p_t), over -s: q^gamma (gamma p_t (-log p_t) + q)
    slope.addcmul_(weighted, torch.sigmoid(-u).mul_(ce).mul_(p.gamma).add_(q))
    return total, slope.mul_(neg_sign)


def _reduce(terms: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return terms.mean()
    if reduction == "sum":
        return terms.sum()
    if reduction == "none":
        return terms
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class FocalLoss(nn.Module):
    """Focal loss from logits, :math:`\\alpha_t (1 - p_t)^\\gamma (-\\log p_t)`; see the module docstring."""

    def __init__(self, alpha: float | None = None, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__()
        # Validation lives in LossConfig; focal_weight=1, bce_weight=0 is the pure focal loss.
        self.cfg = LossConfig(alpha=alpha, gamma=gamma, bce_weight=0.0, focal_weight=1.0)
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return _reduce(focal_terms(logits, targets.to(logits.dtype), self.cfg.alpha, self.cfg.gamma), self.reduction)


class CombinedLoss(nn.Module):
    """``bce_weight * BCE + focal_weight * Focal(alpha, gamma)`` from logits; see the module docstring."""

    def __init__(
        self,
        alpha: float | None = None,
        gamma: float = 2.0,
        bce_weight: float = 0.5,
        focal_weight: float = 0.5,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.cfg = LossConfig(alpha=alpha, gamma=gamma, bce_weight=bce_weight, focal_weight=focal_weight)
        self.reduction = reduction

    @classmethod
    def from_config(cls, cfg: LossConfig, reduction: str = "mean") -> CombinedLoss:
        return cls(**cfg.model_dump(), reduction=reduction)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return _reduce(combined_terms(logits, targets.to(logits.dtype), self.cfg), self.reduction)
