"""The training engine: K fold models trained together, vectorised over folds.

Read top to bottom: per epoch, every fold draws its own permutation of its own training rows; each step takes
the next ``batch_size`` rows of every fold at once (``[K, B, D]``), runs the K MLPs with batched matmuls, and
takes one Adam step on the stacked weights. Adam and L2 weight decay act element-wise, and each fold's loss only
reaches its own weights, so this is K independent trainings run in lock-step. Folds differ in size by a row or
two; the shorter ones are padded and the padding is masked out of the loss.

A step is: pick the rows, forward (keeping the activations), the loss and its derivative in one pass, the
hand-written backward into the gradient buffer, the fused Adam kernel. No autograd graph is built; at these sizes
its bookkeeping cost as much as the arithmetic.

No early stopping: the fold being scored must not choose the number of epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from objectives.config import LossConfig, ModelConfig, TrainConfig
from objectives.errors import LosstuneError, TrainingDiverged
from objectives.losses import combined_terms, combined_terms_and_grad
from objectives.model import Activations, FoldMLP
from objectives.optim import FoldAdam


@dataclass
class FoldTraining:
    """What training K models returns: their weights, validation logits and learning curves."""

    model: FoldMLP
    val_logits: list[np.ndarray]  # per fold, in the order of that fold's validation rows
    train_loss: np.ndarray  # [K, epochs], mean loss over each epoch's batches
    val_loss: np.ndarray  # [K, epochs], loss on the validation rows after each epoch (NaN without them)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LosstuneError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def _padded(rows: list[np.ndarray], device: torch.device) -> tuple[Tensor, Tensor]:
    """Ragged row lists as a ``[K, max_len]`` index tensor (padding points at row 0) and its 0/1 mask."""
    width = max(len(r) for r in rows)
    index = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.float32)
    for k, r in enumerate(rows):
        index[k, : len(r)] = r
        mask[k, : len(r)] = 1.0
    return torch.from_numpy(index).to(device), torch.from_numpy(mask).to(device)


def _by_step(t: Tensor, steps: int, batch: int) -> Tensor:
    """``[K, steps * batch]`` as ``[steps, K, batch]``, contiguous."""
    return t.view(t.shape[0], steps, batch).transpose(0, 1).contiguous()


def _masked_fold_means(terms: Tensor, mask: Tensor) -> Tensor:
    return (terms * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def train_folds(
    x: np.ndarray,
    y: np.ndarray,
    train_rows: list[np.ndarray],
    val_rows: list[np.ndarray] | None,
    loss_cfg: LossConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    fold_seeds: list[int],
) -> FoldTraining:
    """Train one MLP per fold. ``x`` is ``[K, N, D]`` (fold k's preprocessing of every row), ``y`` is ``[N]``.

    Fold k trains on ``train_rows[k]`` and is validated on ``val_rows[k]``; its randomness (init, batch order,
    dropout) comes from ``fold_seeds[k]`` alone, so a fold trained here and alone gives the same weights.
    """
    device = resolve_device(train_cfg.device)
    n_folds = x.shape[0]
    gens = [torch.Generator().manual_seed(int(s)) for s in fold_seeds]
    # Dropout masks for all folds come from one extra stream (one call per layer per step, not K); so with
    # dropout > 0 a fold is reproducible for a given set of folds but not bit-equal to the same fold trained alone.
    dropout_gen = None
    if model_cfg.dropout:
        dropout_gen = torch.Generator(device=device).manual_seed(int(fold_seeds[0]) + 7919)
    low_precision = train_cfg.precision == "bf16"
    model = FoldMLP(x.shape[2], model_cfg, gens, device, compute_dtype=torch.bfloat16 if low_precision else None)
    optimizer = FoldAdam(model.params, model.grad, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)

    x_t = torch.from_numpy(x).to(device, model.compute_dtype)  # cast once, not per batch
    y_t = torch.from_numpy(np.asarray(y, dtype=np.float32)).to(device)
    sizes = [len(r) for r in train_rows]
    batch = min(train_cfg.batch_size, max(sizes))
    steps = math.ceil(max(sizes) / batch)
    # rows of each fold in each step, the same every epoch: [steps, K]
    counts = torch.tensor(
        [[min(max(n - step * batch, 0), batch) for n in sizes] for step in range(steps)], dtype=torch.float32
    ).to(device)
    # a fold with no rows left in a step (the last one of an epoch, folds differing by a row) is not updated in it
    full_steps = {step for step in range(steps) if all((step + 1) * batch <= n for n in sizes)}
    partial_steps = {step: [step * batch < n for n in sizes] for step in range(steps) if any(step * batch >= n for n in sizes)}
    # rows are picked from the flattened [K*N, D] table with index_select (far cheaper than 2-d fancy indexing)
    x_flat = x_t.reshape(n_folds * x_t.shape[1], x_t.shape[2])
    fold_offset = torch.arange(n_folds, device=device).unsqueeze(1) * x_t.shape[1]

    has_val = bool(val_rows) and all(len(r) for r in val_rows)
    if has_val:
        val_index, val_mask = _padded(val_rows, device)
        x_val = x_flat[(val_index + fold_offset).reshape(-1)].view(*val_index.shape, -1)
        y_val = y_t[val_index]
    train_curve = torch.zeros(n_folds, train_cfg.epochs, device=device)
    val_curve = torch.full((n_folds, train_cfg.epochs), float("nan"), device=device)

    by_step = partial(_by_step, steps=steps, batch=batch)
    for epoch in range(train_cfg.epochs):
        order = [torch.from_numpy(r)[torch.randperm(len(r), generator=g)] for r, g in zip(train_rows, gens)]
        index, mask = _padded(order, device)
        pad = steps * batch - index.shape[1]
        index, mask = torch.nn.functional.pad(index, (0, pad)), torch.nn.functional.pad(mask, (0, pad))
        # this epoch's batches as [steps, K, batch], each step a contiguous slice: no per-step indexing work
        flat_rows, targets, mask = by_step(index + fold_offset), by_step(y_t[index]), by_step(mask)
        running = torch.zeros(n_folds, device=device)
        for step in range(steps):
            acts = Activations()
            x_batch = x_flat.index_select(0, flat_rows[step].view(-1)).view(n_folds, batch, -1)
            logits = model.forward(x_batch, dropout_generator=dropout_gen, keep=acts)
            terms, dterms = combined_terms_and_grad(logits, targets[step], loss_cfg)
            # each fold's loss is the mean over its rows in this step; the padding rows count for nothing
            if step in full_steps:
                dlogits = dterms.mul_(1.0 / batch)
            else:
                weight = mask[step] / counts[step].clamp_min(1.0).unsqueeze(1)
                terms, dlogits = terms * mask[step], dterms * weight
            model.backward(acts, dlogits)
            optimizer.step(partial_steps.get(step))
            running += terms.sum(1)
        train_curve[:, epoch] = running / torch.tensor(sizes, device=device, dtype=torch.float32)
        if not torch.isfinite(train_curve[:, epoch]).all():
            bad = [k for k in range(n_folds) if not math.isfinite(float(train_curve[k, epoch]))]
            raise TrainingDiverged(
                f"training diverged at epoch {epoch + 1} (loss is NaN/inf in fold(s) {bad}); "
                f"lower the learning rate (lr={train_cfg.lr:g})"
            )
        if has_val:
            val_logits_t = model.forward(x_val)
            val_curve[:, epoch] = _masked_fold_means(combined_terms(val_logits_t, y_val, loss_cfg), val_mask)

    val_logits: list[np.ndarray] = []
    if has_val:
        final = model.forward(x_val).double().cpu().numpy()
        val_logits = [final[k, : len(r)] for k, r in enumerate(val_rows)]
    return FoldTraining(model, val_logits, train_curve.cpu().numpy(), val_curve.cpu().numpy())
