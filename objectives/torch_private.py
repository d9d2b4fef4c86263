"""torch's private functions (and one aten operator) that the training step calls, each wrapped here and called
nowhere else.

A name that starts with an underscore is outside torch's compatibility promise: a release may remove it, change
its arguments or what it computes. ``tests/test_torch_private.py`` holds each wrapper to torch's public API (the
fused step against ``torch.optim.Adam`` on a tiny tensor, the arguments against the operator's schema), so that
an upgrade that changes one fails there, by name, rather than training other models or failing mid-search.

What they pay for: :class:`objectives.optim.FoldAdam` steps M models' parameter rows in one call of the kernel
that ``torch.optim.Adam(fused=True)`` runs, leaving out the models with no row in a step (so that every model
is the model trained alone), where ``torch.optim.Adam`` re-walks its parameter groups in Python on every step, at
more than the kernel's cost for a few small models, and cannot leave a model out. The kernel came with the
training step without autograd (commit 0e1aef5), which together took bank_full's 5-fold ``evaluate`` from 5.7 s
to 4.8 s (``tests/benchmarks/last_run.md`` of 2026-11-22); its own share was not measured apart.
"""

from __future__ import annotations

import torch
from torch import Tensor


def relu_backward(grad: Tensor, relu_input: Tensor) -> Tensor:
    """``grad`` where ``relu_input > 0``, else 0: the gradient through a ReLU, in one kernel.

    ``torch.ops.aten.threshold_backward`` is the operator autograd itself runs for ``relu``; it is not part of
    torch's documented Python API (``torch.where(relu_input > 0, grad, 0)`` is, at the cost of a mask tensor)."""
    return torch.ops.aten.threshold_backward(grad, relu_input, 0.0)


def foreach_add_(tensors: list[Tensor], value: float) -> None:
    """``t.add_(value)`` for every tensor of ``tensors``, in one call (the kernel's step counts are tensors)."""
    torch._foreach_add_(tensors, value)


def fused_adam_(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    wd: float,
) -> None:
    """One Adam step of each tensor of ``params`` in place, as ``torch.optim.Adam(fused=True)`` takes it (L2
    weight decay ``wd``, no AMSGrad, minimising): its gradient, its two moments (updated too) and its step count,
    a float32 0-d tensor already counting this step."""
    torch._fused_adam_(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],  # max_exp_avg_sqs: AMSGrad's, unused
        steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=wd,
        eps=eps,
        amsgrad=False,
        maximize=False,
    )
