r"""Adam over K folds' parameters held as the rows of one ``[K, P]`` tensor, with a step count per fold.

For each fold :math:`k` with a gradient :math:`g` (plus :math:`\lambda\theta` with L2 weight decay, as
``torch.optim.Adam``), step :math:`t_k`:

.. math::

    m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \qquad
    \theta \leftarrow \theta - \frac{\eta}{1-\beta_1^{t_k}} \cdot
        \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^{t_k}} + \epsilon}

exactly ``torch.optim.Adam``'s update, computed by the same fused kernel that ``torch.optim.Adam(fused=True)``
runs (``tests/test_model.py`` checks the two agree; the private function is wrapped, with why it is worth it, in
:mod:`objectives.torch_private`). Why not that class itself: it re-walks its parameter groups in Python on every
step, which costs more than the kernel for a few small models; and folds differ in size by a row or two, so at
the end of an epoch a fold can have no rows left while the others take one more step.
That fold must be left untouched (no momentum step, no step counted), so that K folds trained together are the
K folds trained alone; here it is simply left out of the kernel's lists.
"""

from __future__ import annotations

import torch
from torch import Tensor

from objectives.torch_private import foreach_add_, fused_adam_


class FoldAdam:
    def __init__(
        self,
        params: Tensor,
        grad: Tensor,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        """``params`` and ``grad`` are ``[K, P]``; ``grad`` is read at each :meth:`step`, ``params`` updated."""
        self.lr, (self.beta1, self.beta2), self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        n_folds = params.shape[0]
        # per-fold rows of each tensor, in the kernel's argument order
        self._rows = [[t[k] for k in range(n_folds)] for t in (params, grad, self.exp_avg, self.exp_avg_sq)]
        self.steps = [torch.zeros((), dtype=torch.float32, device=params.device) for _ in range(n_folds)]

    @torch.no_grad()
    def step(self, active: list[bool] | None = None) -> None:
        """One update of every fold, or only of the folds where ``active`` is true."""
        if active is None:
            rows, steps = self._rows, self.steps
        else:
            rows = [[r for r, on in zip(tensor_rows, active) if on] for tensor_rows in self._rows]
            steps = [s for s, on in zip(self.steps, active) if on]
        if not steps:
            return
        foreach_add_(steps, 1.0)
        params, grads, exp_avgs, exp_avg_sqs = rows
        fused_adam_(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            steps,
            lr=self.lr,
            beta1=self.beta1,
            beta2=self.beta2,
            eps=self.eps,
            wd=self.weight_decay,
        )

    def fold_steps(self) -> list[int]:
        return [int(s.item()) for s in self.steps]
