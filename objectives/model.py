r"""The classifier: an MLP (Linear → ReLU → Dropout, ..., → Linear to one logit).

:class:`MLP` is the ordinary ``nn.Module`` used for the final model and for inference. :class:`FoldMLP` holds
K independent copies of the same MLP for K cross-validation folds, trained together with batched matrix
products instead of K Python loops. Each fold's weights are initialised from its own generator exactly as
``nn.Linear`` would, and can be exported as an :class:`MLP` state dict.

:class:`FoldMLP` differentiates itself (no autograd): for a layer :math:`a' = \mathrm{relu}(a W + b)` and the
gradient :math:`\delta` of the loss with respect to its pre-activation,

.. math::

    \frac{\partial L}{\partial W} = a^\top \delta, \qquad \frac{\partial L}{\partial b} = \textstyle\sum_{rows} \delta,
    \qquad \delta_{\text{below}} = (\delta W^\top) \odot [a > 0]

written straight into one ``[K, P]`` gradient buffer (row k is fold k's P parameters, laid out like the
parameters). A training step is then a dozen kernels and no graph, which is what makes a step of K small models
cheap on a CPU; ``tests/test_model.py`` checks the gradients against autograd on :class:`MLP`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

import torch
from torch import Tensor, nn

from objectives.config import ModelConfig
from objectives.torch_private import relu_backward


class MLP(nn.Module):
    def __init__(self, n_features: int, cfg: ModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


def build_module(model: ModelConfig, n_features: int) -> nn.Module:
    """The classifier ``model`` describes: a user's own ``nn.Module`` (:mod:`objectives.user_module`) when
    ``model.module`` is set, else the built-in :class:`MLP`."""
    if model.module is not None:
        from objectives.user_module import build_user_module

        return build_user_module(model, n_features)
    return MLP(n_features, model)


@dataclass
class Activations:
    """What :meth:`FoldMLP.backward` needs from a training forward pass: each layer's input, the dropout
    multipliers (``mask / keep``) applied to each hidden layer's output, and the weights as multiplied."""

    inputs: list[Tensor] = field(default_factory=list)
    dropout: list[Tensor | None] = field(default_factory=list)
    weights: list[Tensor] = field(default_factory=list)  # the hidden layers' weights in the compute dtype


class FoldMLP:
    """K independent MLPs; ``forward`` maps ``[K, B, D]`` to logits ``[K, B]``.

    ``params`` is ``[K, P]``: row k holds fold k's weights and biases. ``weights[i]`` (``[K, in, out]``) and
    ``biases[i]`` (``[K, 1, out]``) are views into it, as ``grad_weights``/``grad_biases`` are into ``grad``.
    ``compute_dtype`` is the dtype of the matrix products (bf16 for mixed precision); parameters, gradients and
    the last layer stay in the parameters' dtype.
    """

    def __init__(
        self,
        n_features: int,
        cfg: ModelConfig,
        generators: list[torch.Generator],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        self.cfg = cfg
        self.compute_dtype = compute_dtype or dtype
        sizes = [n_features, *cfg.hidden, 1]
        self.shapes = list(pairwise(sizes))
        self._starts, n_params = self._layout()
        self.params = torch.zeros(len(generators), n_params, dtype=dtype, device=device)
        self.grad = torch.zeros_like(self.params)
        self.weights, self.biases = self._views(self.params)
        self.grad_weights, self.grad_biases = self._views(self.grad)
        for w, b, (fan_in, fan_out) in zip(self.weights, self.biases, self.shapes):
            # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias alike, weight first
            bound = 1.0 / math.sqrt(fan_in)
            w.copy_(torch.stack([_uniform((fan_out, fan_in), bound, g) for g in generators]).transpose(1, 2))
            b.copy_(torch.stack([_uniform((fan_out,), bound, g) for g in generators]).unsqueeze(1))

    def _layout(self) -> tuple[list[tuple[int, int]], int]:
        """Where each layer's weight and bias start in a parameter row, and the row's length.

        Every block starts at a multiple of 64 bytes, and so does every row: the BLAS kernels take other code
        paths (other summation orders) for differently aligned operands, so without this a model in row 5
        would not compute bit for bit what the same model computes alone in row 0. The gaps stay zero."""
        starts, at = [], 0
        for fan_in, fan_out in self.shapes:
            weight_at = at
            at = aligned(at + fan_in * fan_out)
            starts.append((weight_at, at))
            at = aligned(at + fan_out)
        return starts, at

    def _views(self, flat: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Each layer's weight ``[K, in, out]`` and bias ``[K, 1, out]`` as views into the rows of ``flat``."""
        weights, biases = [], []
        for (weight_at, bias_at), (fan_in, fan_out) in zip(self._starts, self.shapes):
            weights.append(flat[:, weight_at : weight_at + fan_in * fan_out].view(flat.shape[0], fan_in, fan_out))
            biases.append(flat[:, bias_at : bias_at + fan_out].view(flat.shape[0], 1, fan_out))
        return weights, biases

    @torch.no_grad()
    def forward(
        self, x: Tensor, dropout_generator: torch.Generator | None = None, keep: Activations | None = None
    ) -> Tensor:
        """Logits ``[K, B]``. Dropout only with a generator (training); ``keep`` collects what backward needs."""
        h = x.to(self.compute_dtype)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            w = w.to(h.dtype)  # cast once per step (bf16), reused by backward
            if keep is not None:
                keep.inputs.append(h)
                keep.weights.append(w)
            # bmm then add: baddbmm would first copy the broadcast bias into the whole output
            h = torch.bmm(h, w).add_(b.to(h.dtype)).relu_()
            multiplier = None
            if dropout_generator is not None and self.cfg.dropout:
                p_keep = 1.0 - self.cfg.dropout
                multiplier = torch.empty_like(h).bernoulli_(p_keep, generator=dropout_generator).div_(p_keep)
                h = h * multiplier
            if keep is not None:
                keep.dropout.append(multiplier)
        if keep is not None:
            keep.inputs.append(h)
        # The last layer has one output: a multiply-and-sum, several times cheaper than a [.., 1]-wide bmm.
        w, b = self.weights[-1], self.biases[-1]
        return torch.sum(h.to(w.dtype) * w.transpose(1, 2), dim=-1) + b.squeeze(-1)

    @torch.no_grad()
    def backward(self, acts: Activations, dlogits: Tensor) -> None:
        """Write d(loss)/d(params) into ``grad``, given d(loss)/d(logits) ``[K, B]`` and the forward's ``acts``."""
        last = len(self.shapes) - 1
        delta = dlogits.unsqueeze(-1)  # [K, B, 1]: gradient w.r.t. the last layer's output
        for i in range(last, -1, -1):
            a = acts.inputs[i]
            if i == last:  # one output column: outer products instead of bmm (see forward)
                torch.sum(a.to(delta.dtype) * delta, dim=1, keepdim=True, out=self.grad_weights[i].transpose(1, 2))
            else:
                _bmm_into(self.grad_weights[i], a.transpose(1, 2), delta)
            torch.sum(delta, dim=1, keepdim=True, dtype=self.grad.dtype, out=self.grad_biases[i])
            if i == 0:
                break  # no gradient for the data
            if i == last:
                delta = delta * self.weights[i].transpose(1, 2)
            else:
                delta = torch.bmm(delta, acts.weights[i].transpose(1, 2))
            multiplier = acts.dropout[i - 1]
            if multiplier is not None:
                delta = delta * multiplier
            # relu's derivative; a (the layer's input) is zero exactly where the relu (or dropout) zeroed it
            delta = relu_backward(delta.to(self.compute_dtype), a)

    def state_dict_of_fold(self, k: int) -> dict[str, Tensor]:
        """Fold ``k``'s weights as an :class:`MLP` state dict."""
        names = [name for name, _ in MLP(self.weights[0].shape[1], self.cfg).named_parameters()]
        tensors = []
        for w, b in zip(self.weights, self.biases):
            tensors += [w[k].t().contiguous().cpu(), b[k, 0].clone().cpu()]
        return dict(zip(names, tensors))


_ALIGN_ELEMENTS = 16  # 64 bytes of fp32: a cache line, the widest vector loads


def aligned(n: int) -> int:
    """``n`` rounded up to a multiple of 16."""
    return -(-n // _ALIGN_ELEMENTS) * _ALIGN_ELEMENTS


def _bmm_into(out: Tensor, a: Tensor, b: Tensor) -> None:
    if a.dtype == out.dtype:
        torch.bmm(a, b, out=out)
    else:  # bf16 product into the fp32 gradient
        out.copy_(torch.bmm(a, b))


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound
