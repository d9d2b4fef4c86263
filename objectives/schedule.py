"""The optimiser, its learning-rate schedule and the checkpoint epochs of one stacked training
(:mod:`objectives.engine`), from :class:`~objectives.config.TrainConfig`.

The stack's models share one optimiser over their stacked parameters; the schedule is a function of the step
alone (``torch.optim.lr_scheduler``), and every model of a stack takes the same steps, so each model follows
exactly the schedule it would follow trained alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from objectives.config import TrainConfig

ONE_CYCLE_WARMUP = 0.3  # torch's OneCycleLR default pct_start: the share of steps spent warming up


def make_optimizer(params: list[Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``weight_decay`` as L2 in the gradient) or ``AdamW`` (decoupled weight decay), the
    fused kernels."""
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule over ``schedule_epochs`` (default ``epochs``) times ``steps_per_epoch`` steps,
    stepped after every batch; None for a constant rate. Cosine: :class:`~torch.optim.lr_scheduler.CosineAnnealingLR`
    from ``lr`` to 0. One-cycle:
    :class:`~torch.optim.lr_scheduler.OneCycleLR` with ``max_lr = lr`` (its defaults otherwise: cosine warm-up
    from ``lr / 25`` over 30 % of the steps, then cosine annealing)."""
    total = max(1, (cfg.schedule_epochs or cfg.epochs) * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=ONE_CYCLE_WARMUP, cycle_momentum=False
        )
    return None


def checkpoint_epochs(cfg: TrainConfig) -> list[int]:
    """The epoch counts (1-based) at which every model is scored: every ``checkpoint_every`` epochs and the last;
    only the last without checkpoints."""
    if cfg.checkpoint_every <= 0:
        return [cfg.epochs]
    return sorted({*range(cfg.checkpoint_every, cfg.epochs + 1, cfg.checkpoint_every), cfg.epochs})
