r"""The loss a trial tunes: BCE + focal loss, computed from logits, in one implementation.

For a logit :math:`z` and a label :math:`y \in \{0, 1\}`, write :math:`s = 2y - 1`, :math:`u = -s z` and
:math:`p_t = \sigma(s z)` (the probability given to the true class). Then

.. math::

    \mathrm{BCE}(z, y)   &= -\log p_t = \log(1 + e^{u}) \\
    \mathrm{Focal}(z, y) &= \alpha_t \, (1 - p_t)^{\gamma} \, (-\log p_t), \qquad
        \alpha_t = \begin{cases} \alpha & y = 1 \\ 1 - \alpha & y = 0 \end{cases} \\
    \mathrm{Combined}    &= w_{\mathrm{bce}} \, \mathrm{BCE} + w_{\mathrm{focal}} \, \mathrm{Focal}

``alpha`` is the RetinaNet / torchvision weight: ``alpha`` on positives, ``1 - alpha`` on negatives;
``alpha=None`` means :math:`\alpha_t = 1` (no class weighting). With ``gamma=0`` and ``alpha=None`` the focal
term *is* BCE, bit for bit: :math:`(1 - p_t)^0` is computed as :math:`e^0 = 1` exactly, and the weights as 1.

Stability: nothing here forms a probability and takes its log. :math:`-\log p_t` is torch's BCE from logits and
:math:`(1 - p_t)^\gamma = \exp(\gamma \log\sigma(u))`, so logits of :math:`\pm 100` (or :math:`\pm 10^4`) give
finite values and finite gradients (autograd differentiates these expressions; no hand-written derivative).

:func:`combined_terms` is the one implementation: the engine trains with it (one row of loss parameters per
model, :class:`LossParams`), and :class:`CombinedLoss` wraps it as an ``nn.Module`` for a training loop of your
own. A configuration in which one class gets no loss at all (``bce_weight=0`` with ``alpha`` 0 or 1) is refused
by :class:`objectives.config.LossConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objectives.config import LossConfig


@dataclass(frozen=True)
class LossParams:
    r"""The loss parameters of M models as ``[M, 1]`` columns, broadcast over each model's batch ``[M, B]``: the
    training loss of models with different loss configurations, computed in the same kernels.

    :math:`\alpha_t = a_0 + a_1 y` with :math:`(a_0, a_1) = (1 - \alpha, 2\alpha - 1)`, or :math:`(1, 0)` for
    ``alpha=None``: exactly 1, so an unweighted model's terms are not rounded by a weight. A single
    :class:`LossConfig` is :meth:`of` (0-d tensors, broadcast over any shape)."""

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
        """One configuration for every element of ``like``."""
        stacked = cls.stack([cfg], like.device, like.dtype)
        return cls(**{name: getattr(stacked, name).reshape(()) for name in cls.__dataclass_fields__})


def combined_terms(logits: Tensor, targets: Tensor, cfg: LossConfig | LossParams) -> Tensor:
    """Element-wise ``bce_weight * BCE + focal_weight * Focal(alpha, gamma)`` (no reduction), differentiable.

    ``targets`` holds 0/1 as floats. ``cfg`` is one configuration for every element, or :class:`LossParams`
    with one row per model (``logits`` is then ``[M, B]``)."""
    p = cfg if isinstance(cfg, LossParams) else LossParams.of(cfg, logits)
    u = logits * (1.0 - 2.0 * targets)  # -s z
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log p_t, stable for any z
    modulating = torch.exp(p.gamma * F.logsigmoid(u))  # (1 - p_t)^gamma; exactly 1 for gamma 0
    alpha_t = targets * p.alpha_slope + p.alpha_base
    return ce * (p.bce_weight + p.focal_weight * alpha_t * modulating)


class CombinedLoss(nn.Module):
    """``bce_weight * BCE + focal_weight * Focal(alpha, gamma)`` from logits, for a training loop of your own
    (the engine calls :func:`combined_terms` directly); ``reduction`` is ``mean``, ``sum`` or ``none``."""

    def __init__(
        self,
        alpha: float | None = None,
        gamma: float = 2.0,
        bce_weight: float = 0.5,
        focal_weight: float = 0.5,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.cfg = LossConfig(alpha=alpha, gamma=gamma, bce_weight=bce_weight, focal_weight=focal_weight)
        self.reduction = reduction

    @classmethod
    def from_config(cls, cfg: LossConfig, reduction: str = "mean") -> CombinedLoss:
        return cls(**cfg.model_dump(), reduction=reduction)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        terms = combined_terms(logits, targets.to(logits.dtype), self.cfg)
        if self.reduction == "mean":
            return terms.mean()
        return terms.sum() if self.reduction == "sum" else terms
