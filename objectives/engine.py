"""The training engine: M small models trained together, vectorised over models.

A model is one (configuration, repeat, fold) of a cross-validation: ``x`` holds one preprocessed copy of the
table per (repeat, fold) split, and model m reads block ``blocks[m]`` of it, so configurations share their
splits without copying them. Read top to bottom: per epoch, every model draws its own permutation of its own
training rows; each step takes the next ``batch_size`` rows of every model at once (``[M, B, D]``), runs the M
MLPs with batched matmuls, computes each model's own loss (its loss parameters are ``[M, 1]`` columns, see
:class:`~objectives.losses.LossParams`), and takes one Adam step on the stacked weights. Adam and L2 weight decay
act element-wise, and each model's loss only reaches its own weights, so this is M independent trainings run in
lock-step. Folds differ in size by a row or two; the shorter ones are padded and the padding is masked out of
the loss (:class:`~objectives.batches.StepMasks`).

A step is: pick the rows, forward (keeping the activations), the loss and its derivative in one pass, the
hand-written backward into the gradient buffer, the fused Adam kernel. No autograd graph is built; at these sizes
its bookkeeping cost as much as the arithmetic.

A model whose loss becomes NaN/inf fails its group (its configuration) only: the rows are independent, so the
others train on unchanged; training stops early once every group has failed.

No early stopping: the fold being scored must not choose the number of epochs.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from objectives.batches import StackedTable, StepMasks
from objectives.config import LossConfig, ModelConfig, TrainConfig
from objectives.errors import LosstuneError, TrainingDiverged
from objectives.losses import LossParams, combined_terms_and_grad
from objectives.model import Activations, FoldMLP
from objectives.optim import FoldAdam

log = logging.getLogger(__name__)


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


@dataclass
class _Validation:
    """Every model's validation rows, gathered once (``[M, width, D]``, padded), and how many each model has."""

    x: Tensor
    y: Tensor
    sizes: list[int]

    @classmethod
    def of(cls, table: StackedTable, val_rows: list[np.ndarray] | None) -> _Validation | None:
        """None when some model has no validation rows (the final model): no validation loss, no logits."""
        if not val_rows or not all(len(r) for r in val_rows):
            return None
        x, y = table.rows(val_rows)
        return cls(x, y, [len(r) for r in val_rows])

    def mean_loss(self, model: FoldMLP, loss_params: LossParams) -> Tensor:
        """Each model's mean loss ``[M]`` over its own validation rows."""
        terms, _ = combined_terms_and_grad(model.forward(self.x), self.y, loss_params)
        return _masked_fold_means(terms, self.sizes)

    def logits(self, model: FoldMLP) -> list[np.ndarray]:
        """Each model's logits on its validation rows, in float64."""
        final = model.forward(self.x).double().cpu().numpy()
        return [final[k, :n] for k, n in enumerate(self.sizes)]


def _masked_fold_means(terms: Tensor, lengths: list[int]) -> Tensor:
    """Each row's mean over its first ``lengths[m]`` entries, one row at a time: the sum of a row must not depend
    on how wide the other models' rows made the tensor (a longer row is summed in another order)."""
    return torch.stack([terms[m, :n].sum() / n for m, n in enumerate(lengths)])


# the dtype of the hidden layers' matmuls (None: the parameters' own, fp32); see TrainConfig.precision
_COMPUTE_DTYPE: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

EMULATED_BF16 = (
    "train.precision is bf16, but this CPU has no bf16 instructions (AVX512-BF16 or AMX): torch emulates them, "
    "about 10x slower than fp32 (measured on an AVX2-only EPYC); use precision fp32, the default"
)


@functools.cache  # a fact about the machine, read once per process
def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU multiplies bf16 natively: x86's ``avx512_bf16`` or ``amx_bf16`` flag, ARM's ``bf16``
    feature, read from ``/proc/cpuinfo``. None where that cannot be told (no such file: macOS, Windows)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":  # x86
            return bool({"avx512_bf16", "amx_bf16"} & set(value.split()))
        if key.strip() == "Features":  # ARM
            return "bf16" in value.split()
    return None


def _generators(
    seeds: list[int], model_cfg: ModelConfig, device: torch.device
) -> tuple[list[torch.Generator], torch.Generator | None]:
    """Each model's generator (init, then batch order), and the one stream the dropout masks of all models come
    from (one call per layer per step, not M; None without dropout). So with dropout > 0 a model is reproducible
    for a given set of models but not bit-equal to the same model alone."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    if not model_cfg.dropout:
        return gens, None
    return gens, torch.Generator(device=device).manual_seed(int(seeds[0]) + 7919)


def _training_device(train_cfg: TrainConfig) -> torch.device:
    """The device to train on; a warning when bf16 was asked for on a CPU that can only emulate it."""
    device = resolve_device(train_cfg.device)
    if train_cfg.precision == "bf16" and device.type == "cpu" and cpu_has_bf16() is False:
        log.warning(EMULATED_BF16)  # it works, but a user who chose bf16 for speed gets the opposite
    return device


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
    one of its models diverges; with several, ``FoldTraining.diverged`` says which groups failed and why."""
    device, n_models = _training_device(train_cfg), len(train_rows)
    gens, dropout_gen = _generators(seeds, model_cfg, device)
    model = FoldMLP(x.shape[2], model_cfg, gens, device, compute_dtype=_COMPUTE_DTYPE[train_cfg.precision])
    optimizer = FoldAdam(model.params, model.grad, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    loss_params = LossParams.stack([loss] * n_models if isinstance(loss, LossConfig) else list(loss), device)
    table = StackedTable(x, y, list(range(n_models)) if blocks is None else blocks, model.compute_dtype, device)
    masks = StepMasks([len(r) for r in train_rows], train_cfg.batch_size, device)
    val = _Validation.of(table, val_rows)
    train_curve = torch.zeros(n_models, train_cfg.epochs, device=device)
    val_curve = torch.full((n_models, train_cfg.epochs), float("nan"), device=device)
    failures = _Failures([0] * n_models if groups is None else groups, train_cfg.lr)

    for epoch in range(train_cfg.epochs):
        rows, targets = table.epoch(train_rows, gens, masks)  # [steps, M, width]
        running = torch.zeros(n_models, device=device)
        for step in range(masks.steps):
            acts = Activations()
            logits = model.forward(table.gather(rows[step]), dropout_generator=dropout_gen, keep=acts)
            terms, dterms = combined_terms_and_grad(logits, targets[step], loss_params)
            terms, dlogits = masks.apply(step, terms, dterms)  # each model's mean over its real rows
            model.backward(acts, dlogits)
            optimizer.step(masks.active(step))  # a model with no row left in this step is not moved
            running += terms.sum(1)
        train_curve[:, epoch] = running / masks.sizes
        if failures.check(epoch, train_curve[:, epoch]):  # with a single group, raises its TrainingDiverged
            break  # every configuration failed: nothing left worth training
        if val is not None:
            val_curve[:, epoch] = val.mean_loss(model, loss_params)

    val_logits = [] if val is None else val.logits(model)
    return FoldTraining(model, val_logits, train_curve.cpu().numpy(), val_curve.cpu().numpy(), failures.diverged)


class _Failures:
    """Which groups (configurations) have diverged, and why: a group fails at the first epoch whose mean loss is
    not finite in one of its models; the others train on."""

    def __init__(self, groups: list[int], lr: float) -> None:
        self.groups, self.lr = list(groups), lr
        self.diverged: dict[int, TrainingDiverged] = {}

    def check(self, epoch: int, epoch_loss: Tensor) -> bool:
        """Note the groups failing at ``epoch``; True when every group has failed. With a single group, its
        failure is the call's: raised here."""
        self._record(epoch, epoch_loss)
        if self.diverged and len(set(self.groups)) == 1:
            raise next(iter(self.diverged.values()))
        return len(self.diverged) == len(set(self.groups))

    def _record(self, epoch: int, epoch_loss: Tensor) -> None:
        """Note, for each group not failed yet, the models (by position in the group) whose loss is not finite."""
        finite = torch.isfinite(epoch_loss)
        if bool(finite.all()):
            return
        bad: dict[int, list[int]] = {}
        position: dict[int, int] = {}
        for ok, g in zip(finite.tolist(), self.groups):
            at = position[g] = position.get(g, -1) + 1
            if not ok and g not in self.diverged:
                bad.setdefault(g, []).append(at)
        for g, members in bad.items():
            self.diverged[g] = TrainingDiverged(
                f"training diverged at epoch {epoch + 1} (loss is NaN/inf in fold(s) {members}); "
                f"lower the learning rate (lr={self.lr:g})"
            )
