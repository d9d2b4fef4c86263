"""The training engine: M small models trained together, vectorised over models.

A model is one (configuration, repeat, fold) of a cross-validation: ``x`` holds one preprocessed copy of the
table per (repeat, fold) split, and model m reads block ``blocks[m]`` of it, so configurations share their
splits without copying them. Read top to bottom: per epoch, every model draws its own permutation of its own
training rows; each step takes the next ``batch_size`` rows of every model at once (``[M, B, D]``), runs the M
MLPs with batched matmuls, computes each model's own loss (its loss parameters are ``[M, 1]`` columns, see
:class:`~objectives.losses.LossParams`), and takes one Adam step on the stacked weights. Adam and L2 weight decay
act element-wise, and each model's loss only reaches its own weights, so this is M independent trainings run in
lock-step. Folds differ in size by a row or two; the shorter ones are padded and the padding is masked out of
the loss (:class:`StepMasks`).

A step is: pick the rows, forward (keeping the activations), the loss and its derivative in one pass, the
hand-written backward into the gradient buffer, the fused Adam kernel. No autograd graph is built; at these sizes
its bookkeeping cost as much as the arithmetic.

A model whose loss becomes NaN/inf fails its group (its configuration) only: the rows are independent, so the
others train on unchanged; training stops early once every group has failed.

No early stopping: the fold being scored must not choose the number of epochs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from objectives.config import LossConfig, ModelConfig, TrainConfig
from objectives.errors import LosstuneError, TrainingDiverged
from objectives.losses import LossParams, combined_terms_and_grad
from objectives.model import Activations, FoldMLP, aligned
from objectives.optim import FoldAdam


@dataclass
class FoldTraining:
    """What training M models returns: their weights, validation logits and learning curves."""

    model: FoldMLP
    val_logits: list[np.ndarray]  # per model, in the order of that model's validation rows
    train_loss: np.ndarray  # [M, epochs], mean loss over each epoch's batches
    val_loss: np.ndarray  # [M, epochs], loss on the validation rows after each epoch (NaN without them)
    diverged: dict[int, TrainingDiverged] = field(default_factory=dict)  # group -> why it failed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LosstuneError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def _padded(rows: Sequence[np.ndarray | Tensor], device: torch.device, width: int | None = None) -> Tensor:
    """Ragged row lists as a ``[M, width]`` index tensor (default: the longest), padding pointing at row 0."""
    width = width or max(len(r) for r in rows)
    index = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        index[k, : len(r)] = r
    return torch.from_numpy(index).to(device)


def _masked_fold_means(terms: Tensor, lengths: list[int]) -> Tensor:
    """Each row's mean over its first ``lengths[m]`` entries, one row at a time: the sum of a row must not depend
    on how wide the other models' rows made the tensor (a longer row is summed in another order)."""
    return torch.stack([terms[m, :n].sum() / n for m, n in enumerate(lengths)])


class StepMasks:
    """The layout of an epoch's batches, for models whose training sets differ in size.

    Every epoch each model's rows are cut into ``steps`` batches of ``batch`` rows, each stored ``width`` wide
    (``batch`` rounded up to 16); a model with fewer rows has a short last batch, or none at all. Its loss is
    the mean over its real rows (the padding counts for nothing), and a model with no row left in a step is not
    updated in it (no Adam step, no step counted), exactly as if it were trained alone.

    Why the width: element-wise kernels compute whole vectors and then a scalar remainder with other code (other
    roundings for exp, log and fused multiply-adds), so a model's values would depend on where its rows fall in
    the stacked tensor. With every row a multiple of 16 wide there is no remainder, whatever the number of models.
    """

    def __init__(self, sizes: list[int], batch_size: int, device: torch.device) -> None:
        self.batch = min(batch_size, max(sizes))
        self.steps = math.ceil(max(sizes) / self.batch)
        self.width = aligned(self.batch)
        self.sizes = torch.tensor(sizes, device=device, dtype=torch.float32)
        in_batch = torch.arange(self.width).view(1, 1, self.width) < self.batch
        step_start = torch.arange(self.steps).view(self.steps, 1, 1) * self.batch
        row = step_start + torch.arange(self.width).view(1, 1, self.width)
        n = torch.tensor(sizes).view(1, -1, 1)
        mask = (in_batch & (row < n)).float()  # [steps, M, width]
        self.mask = mask.to(device)
        # d(mean over the step's real rows)/d(row): 1/count on real rows, 0 on padding
        self.row_weight = (mask / mask.sum(2, keepdim=True).clamp_min(1.0)).to(device)
        counts = mask.sum(2)  # [steps, M]
        self._active = {
            step: (counts[step] > 0).tolist() for step in range(self.steps) if bool((counts[step] == 0).any())
        }

    def layout(self, index: Tensor) -> Tensor:
        """An epoch's row order ``[M, steps * batch]`` as ``[steps, M, width]``, contiguous (padding: row 0)."""
        by_step = index.view(index.shape[0], self.steps, self.batch)
        by_step = torch.nn.functional.pad(by_step, (0, self.width - self.batch))
        return by_step.transpose(0, 1).contiguous()

    def active(self, step: int) -> list[bool] | None:
        """The models updated in ``step`` (None: all of them)."""
        return self._active.get(step)

    def apply(self, step: int, terms: Tensor, dterms: Tensor) -> tuple[Tensor, Tensor]:
        """Per-row loss terms with the padding zeroed, and d(each model's mean loss)/d(logits)."""
        return terms.mul_(self.mask[step]), dterms.mul_(self.row_weight[step])


def _divergence(epoch: int, members: list[int], lr: float) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged at epoch {epoch + 1} (loss is NaN/inf in fold(s) {members}); "
        f"lower the learning rate (lr={lr:g})"
    )


def train_folds(
    x: np.ndarray,
    y: np.ndarray,
    train_rows: list[np.ndarray],
    val_rows: list[np.ndarray] | None,
    loss: LossConfig | list[LossConfig],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seeds: list[int],
    blocks: list[int] | None = None,
    groups: list[int] | None = None,
) -> FoldTraining:
    """Train M MLPs. ``x`` is ``[S, N, D]`` (split s's preprocessing of every row), ``y`` is ``[N]``.

    Model m reads ``x[blocks[m]]`` (default: block m), trains on ``train_rows[m]`` with loss ``loss[m]`` (or one
    loss for all) and is validated on ``val_rows[m]``; its randomness (init, batch order, dropout) comes from
    ``seeds[m]`` alone, so a model trained here and alone gives the same weights. ``groups[m]`` says which
    configuration model m belongs to: a single group (the default) raises :class:`TrainingDiverged` as soon as
    one of its models diverges; with several, ``FoldTraining.diverged`` says which groups failed and why.
    """
    device = resolve_device(train_cfg.device)
    n_models = len(train_rows)
    blocks = list(range(n_models)) if blocks is None else list(blocks)
    groups = [0] * n_models if groups is None else list(groups)
    losses = [loss] * n_models if isinstance(loss, LossConfig) else list(loss)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    # Dropout masks for all models come from one extra stream (one call per layer per step, not M); so with
    # dropout > 0 a model is reproducible for a given set of models but not bit-equal to the same model alone.
    dropout_gen = None
    if model_cfg.dropout:
        dropout_gen = torch.Generator(device=device).manual_seed(int(seeds[0]) + 7919)
    low_precision = train_cfg.precision == "bf16"
    model = FoldMLP(x.shape[2], model_cfg, gens, device, compute_dtype=torch.bfloat16 if low_precision else None)
    optimizer = FoldAdam(model.params, model.grad, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    loss_params = LossParams.stack(losses, device)

    x_t = torch.from_numpy(x).to(device, model.compute_dtype)  # cast once, not per batch
    y_t = torch.from_numpy(np.asarray(y, dtype=np.float32)).to(device)
    masks = StepMasks([len(r) for r in train_rows], train_cfg.batch_size, device)
    # rows are picked from the flattened [S*N, D] table with index_select (far cheaper than 2-d fancy indexing)
    x_flat = x_t.reshape(x_t.shape[0] * x_t.shape[1], x_t.shape[2])
    block_offset = torch.tensor(blocks, device=device).unsqueeze(1) * x_t.shape[1]

    checked_val: list[np.ndarray] = val_rows if val_rows and all(len(r) for r in val_rows) else []
    has_val = bool(checked_val)
    if has_val:
        val_sizes = [len(r) for r in checked_val]
        val_index = _padded(checked_val, device, width=aligned(max(val_sizes)))  # no remainder: see StepMasks
        x_val = x_flat[(val_index + block_offset).reshape(-1)].view(*val_index.shape, -1)
        y_val = y_t[val_index]
    train_curve = torch.zeros(n_models, train_cfg.epochs, device=device)
    val_curve = torch.full((n_models, train_cfg.epochs), float("nan"), device=device)
    diverged: dict[int, TrainingDiverged] = {}

    for epoch in range(train_cfg.epochs):
        order = [torch.from_numpy(r)[torch.randperm(len(r), generator=g)] for r, g in zip(train_rows, gens)]
        index = _padded(order, device, width=masks.steps * masks.batch)
        # this epoch's batches as [steps, M, width], each step a contiguous slice: no per-step indexing work
        rows = masks.layout(index)
        flat_rows, targets = rows + block_offset.unsqueeze(0), y_t[rows]
        running = torch.zeros(n_models, device=device)
        for step in range(masks.steps):
            acts = Activations()
            x_batch = x_flat.index_select(0, flat_rows[step].view(-1)).view(n_models, masks.width, -1)
            logits = model.forward(x_batch, dropout_generator=dropout_gen, keep=acts)
            terms, dterms = combined_terms_and_grad(logits, targets[step], loss_params)
            terms, dlogits = masks.apply(step, terms, dterms)  # each model's mean over its real rows
            model.backward(acts, dlogits)
            optimizer.step(masks.active(step))
            running += terms.sum(1)
        train_curve[:, epoch] = running / masks.sizes
        _record_divergence(train_curve[:, epoch], groups, epoch, train_cfg.lr, diverged)
        if diverged and len(set(groups)) == 1:
            raise next(iter(diverged.values()))
        if len(diverged) == len(set(groups)):
            break  # every configuration failed: nothing left worth training
        if has_val:
            val_terms, _ = combined_terms_and_grad(model.forward(x_val), y_val, loss_params)
            val_curve[:, epoch] = _masked_fold_means(val_terms, val_sizes)

    val_logits: list[np.ndarray] = []
    if has_val:
        final = model.forward(x_val).double().cpu().numpy()
        val_logits = [final[k, :n] for k, n in enumerate(val_sizes)]
    return FoldTraining(model, val_logits, train_curve.cpu().numpy(), val_curve.cpu().numpy(), diverged)


def _record_divergence(
    epoch_loss: Tensor, groups: list[int], epoch: int, lr: float, diverged: dict[int, TrainingDiverged]
) -> None:
    """Note, for each group not failed yet, the models (by position in the group) whose loss is not finite."""
    finite = torch.isfinite(epoch_loss)
    if bool(finite.all()):
        return
    bad: dict[int, list[int]] = {}
    position: dict[int, int] = {}
    for ok, g in zip(finite.tolist(), groups):
        at = position[g] = position.get(g, -1) + 1
        if not ok and g not in diverged:
            bad.setdefault(g, []).append(at)
    for g, members in bad.items():
        diverged[g] = _divergence(epoch, members, lr)
