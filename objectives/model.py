"""The classifier: any ``nn.Module`` mapping ``(batch, n_features)`` float inputs to one logit per row, built by
:func:`build_module` (the one place a model is built: cross-validation, the final model, loading a saved one).

The built-in model is :class:`MLP` (Linear → ReLU → Dropout, ..., → Linear to one logit), configured by
:class:`~objectives.config.ModelConfig`. The engine trains many copies of the module at once
(:mod:`objectives.stack`); a saved model is the ``state_dict`` of one plain module, loaded with
``build_module(...).load_state_dict(...)``.
"""

from __future__ import annotations

from collections.abc import Callable

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


def build_module(model: ModelConfig, n_features: int) -> nn.Module:
    """A new, freshly initialised model for ``n_features`` inputs (its init draws from torch's global RNG: seed
    it first for a reproducible model): a user's own ``nn.Module`` (:mod:`objectives.user_module`) when
    ``model.module`` is set, else the built-in :class:`MLP`."""
    if model.module is not None:
        from objectives.user_module import build_user_module

        return build_user_module(model, n_features)
    return MLP(n_features, model)


def row_logits(module: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``module(x)`` as one logit per row, ``[B]``: a ``[B, 1]`` output is accepted and flattened."""
    out = module(x)
    return out.squeeze(-1) if out.dim() == 2 and out.shape[-1] == 1 else out
