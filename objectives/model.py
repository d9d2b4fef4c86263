"""The classifier: an MLP (Linear → ReLU → Dropout, ..., → Linear to one logit).

:class:`MLP` is the ordinary ``nn.Module`` used for the final model and for inference. :class:`FoldMLP` holds
K independent copies of the same MLP as stacked weights (``[K, in, out]``), so that K cross-validation folds
train together with batched matrix products instead of K Python loops. Each fold's weights are initialised from
its own generator exactly as ``nn.Linear`` would, and can be exported as an :class:`MLP` state dict.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from objectives.config import ModelConfig


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


class FoldMLP:
    """K independent MLPs as stacked parameters; ``forward`` maps ``[K, B, D]`` to logits ``[K, B]``."""

    def __init__(self, n_features: int, cfg: ModelConfig, generators: list[torch.Generator], device: torch.device):
        self.cfg = cfg
        sizes = [n_features, *cfg.hidden, 1]
        self.weights: list[Tensor] = []
        self.biases: list[Tensor] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias alike
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.stack([_uniform((fan_out, fan_in), bound, g) for g in generators]).transpose(1, 2)
            b = torch.stack([_uniform((fan_out,), bound, g) for g in generators]).unsqueeze(1)
            self.weights.append(w.contiguous().to(device).requires_grad_())
            self.biases.append(b.to(device).requires_grad_())

    def parameters(self) -> list[Tensor]:
        return [*self.weights, *self.biases]

    def forward(self, x: Tensor, dropout_generator: torch.Generator | None = None) -> Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.relu(x)
                if dropout_generator is not None and self.cfg.dropout:
                    keep = 1.0 - self.cfg.dropout
                    mask = torch.empty_like(x).bernoulli_(keep, generator=dropout_generator)
                    x = x * mask / keep
        return x.squeeze(-1)

    def state_dict_of_fold(self, k: int) -> dict[str, Tensor]:
        """Fold ``k``'s weights as an :class:`MLP` state dict."""
        names = [name for name, _ in MLP(self.weights[0].shape[1], self.cfg).named_parameters()]
        tensors = []
        for w, b in zip(self.weights, self.biases):
            tensors += [w[k].detach().t().contiguous().cpu(), b[k, 0].detach().cpu()]
        return dict(zip(names, tensors))


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound
