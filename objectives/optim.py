r"""Adam over stacked per-fold parameters, with a step count per fold.

For each fold :math:`k` with a gradient :math:`g` (plus :math:`\lambda\theta` with L2 weight decay, as
``torch.optim.Adam``), step :math:`t_k`:

.. math::

    m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \qquad
    \theta \leftarrow \theta - \frac{\eta}{1-\beta_1^{t_k}} \cdot
        \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^{t_k}} + \epsilon}

exactly ``torch.optim.Adam``'s update. Why not use that: folds differ in size by a row or two, so at the end of
an epoch a fold can have no rows left while the others take one more step. ``torch.optim.Adam`` would still move
that fold (its momentum does not stop for a zero gradient) and count the step; here the fold is left untouched,
so K folds trained together are the K folds trained alone.
"""

from __future__ import annotations

import torch
from torch import Tensor


class FoldAdam:
    def __init__(
        self,
        params: list[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = params
        self.lr, (self.beta1, self.beta2), self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(params[0].shape[0], dtype=torch.float64, device=params[0].device)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: Tensor | None = None) -> None:
        """One update of every fold, or only of the folds where ``active`` (a ``[K]`` 0/1 tensor) is 1."""
        grads = [p.grad for p in self.params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        if active is None:
            self.steps += 1
            torch._foreach_lerp_(self.exp_avg, grads, 1.0 - self.beta1)
            torch._foreach_mul_(self.exp_avg_sq, self.beta2)
            torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1.0 - self.beta2)
        else:
            self.steps += active
            for m, v, g in zip(self.exp_avg, self.exp_avg_sq, grads):
                on = active.view(-1, *([1] * (g.dim() - 1))).to(g.dtype)
                m.lerp_(g, (1.0 - self.beta1) * on)
                v.mul_(1.0 - (1.0 - self.beta2) * on).addcmul_(g, g * on, value=1.0 - self.beta2)
        safe_steps = self.steps.clamp_min(1.0)  # a fold that has not stepped yet is masked out below anyway
        step_size = (self.lr / (1.0 - self.beta1**safe_steps)).float()
        bias2_sqrt = (1.0 - self.beta2**safe_steps).sqrt().float()
        if active is not None:
            step_size = step_size * active.float()
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            shape = (-1, *([1] * (p.dim() - 1)))
            denom = (v.sqrt() / bias2_sqrt.view(shape)).add_(self.eps)
            p.sub_(m / denom * step_size.view(shape))
