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

import math

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
        # kept on the host: the bias corrections are plain floats whenever every fold has taken as many steps
        self.steps = [0] * params[0].shape[0]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: list[bool] | None = None) -> None:
        """One update of every fold, or only of the folds where ``active`` is true."""
        grads = [p.grad for p in self.params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        if active is None or all(active):
            self.steps = [t + 1 for t in self.steps]
            torch._foreach_lerp_(self.exp_avg, grads, 1.0 - self.beta1)
            torch._foreach_mul_(self.exp_avg_sq, self.beta2)
            torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1.0 - self.beta2)
        else:
            self.steps = [t + int(a) for t, a in zip(self.steps, active)]
            on = torch.tensor([float(a) for a in active], device=self.params[0].device)
            for m, v, g in zip(self.exp_avg, self.exp_avg_sq, grads):
                mask = on.view(-1, *([1] * (g.dim() - 1)))
                m.lerp_(g, (1.0 - self.beta1) * mask)
                v.mul_(1.0 - (1.0 - self.beta2) * mask).addcmul_(g, g * mask, value=1.0 - self.beta2)
        if len(set(self.steps)) == 1 and (active is None or all(active)):
            self._update_in_lockstep(self.steps[0])
        else:
            self._update_per_fold(active)

    def _update_in_lockstep(self, t: int) -> None:
        step_size = self.lr / (1.0 - self.beta1**t)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1.0 - self.beta2**t))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom, value=-step_size)

    def _update_per_fold(self, active: list[bool] | None) -> None:
        device = self.params[0].device
        on = [1.0 if active is None or a else 0.0 for a in active or self.steps]
        # a fold that has not stepped yet (t = 0) is inactive, so its factor is 0 whatever the correction
        step_size = torch.tensor(
            [o * self.lr / (1.0 - self.beta1 ** max(t, 1)) for o, t in zip(on, self.steps)], device=device
        )
        bias2_sqrt = torch.tensor([math.sqrt(1.0 - self.beta2 ** max(t, 1)) for t in self.steps], device=device)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            shape = (-1, *([1] * (p.dim() - 1)))
            denom = (v.sqrt() / bias2_sqrt.view(shape)).add_(self.eps)
            p.sub_(m / denom * step_size.view(shape))
