"""The training engine: the M models of a job (configurations x repeats x folds) trained as one stacked model.

A model is one (configuration, repeat, fold) of a cross-validation: ``x`` holds one preprocessed copy of the
table per (repeat, fold) split, and model m reads block ``blocks[m]`` of it, so configurations share their
splits without copying them. The models are built by :func:`objectives.model.build_module` (any ``nn.Module``
giving one logit per row) and stacked (:class:`objectives.stack.ModelStack`: ``torch.func.stack_module_state``
and ``vmap(functional_call)``). Per epoch, every model draws its own permutation of its own training rows; each
step takes the next ``batch_size`` rows of every model at once (``[M, B, D]``), runs the stack, computes each
model's mean loss over its real rows with its own loss parameters (``[M, 1]`` columns,
:class:`~objectives.losses.LossParams`), backpropagates the sum of the M means (each model's gradient is that
of its own mean) and takes one ``torch.optim.Adam`` step (the fused kernel; L2 ``weight_decay`` as
``torch.optim.Adam``'s) on the stacked parameters. Adam acts element-wise, so these are M independent trainings
run in lock-step.

Folds differ in size by a row or two. Models that take the same number of steps an epoch share a stack and the
last, shorter batches are masked (padding rows count for nothing in a model's loss); a model that would take a
step fewer (its rows fit a batch fewer) is trained in a stack of its own (:func:`~objectives.batches.
same_step_stacks`), so no model is moved in a step where it has no row. A model trained in a stack gives the
same validation logits as the same model trained alone within float32 rounding (no dropout): the kernels of a
stack sum in other orders, so the results are not bit-for-bit. ``tests/test_preprocess_and_engine.py`` holds
OOF probabilities to :data:`ALONE_RTOL` after a few hundred steps. Training amplifies rounding differences, as it
amplifies those between two CPUs: on bank marketing's 45,211 rows (5 folds, batch 256, Adam 1e-3) the stacked and
the lone model differ by 1e-6 relative after one epoch, 1e-3 after four, and by up to 0.14 in a probability after
twenty (OOF F1 0.6163 against 0.6154): the same model up to rounding, not the same numbers.

A model whose loss becomes NaN/inf fails its group (its configuration) only: the models are independent, so the
others train on unchanged; training stops early once every group has failed.

No early stopping per fold: the fold being scored must not choose its own number of epochs. With
``train.checkpoint_every``, every model's validation logits are kept at checkpoint epochs
(``FoldTraining.checkpoint_logits``) and :mod:`objectives.epochs` chooses ONE epoch count for the whole trial from
the mean of the folds' scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from objectives.batches import EpochPlan, StackedTable, same_step_stacks
from objectives.config import LossConfig, ModelConfig, TrainConfig
from objectives.device import training_device
from objectives.errors import TrainingDiverged
from objectives.losses import LossParams, combined_terms
from objectives.schedule import checkpoint_epochs, make_optimizer, make_scheduler
from objectives.stack import ModelStack

log = logging.getLogger(__name__)

# OOF probabilities of a model trained in a stack against the same model trained alone (fp32, no dropout), for
# trainings of a few hundred steps (the tests measure about 1e-7): relative, with an absolute floor near 0
ALONE_RTOL, ALONE_ATOL = 1e-5, 1e-7


@dataclass
class FoldTraining:
    """What training M models returns: their weights, validation logits and learning curves."""

    stacks: list[tuple[list[int], ModelStack]]  # the models (by position) each stack holds
    val_logits: list[np.ndarray]  # per model, in the order of that model's validation rows
    train_loss: np.ndarray  # [M, epochs], mean loss over each epoch's batches
    val_loss: np.ndarray  # [M, epochs], loss on the validation rows after each epoch (NaN without them)
    diverged: dict[int, TrainingDiverged] = field(default_factory=dict)  # group -> why it failed
    # epoch count -> per model, its validation logits after that many epochs (objectives.schedule's checkpoints;
    # the last epoch's are val_logits)
    checkpoint_logits: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def state_dict(self, m: int) -> dict[str, Tensor]:
        """Model ``m`` as the ``state_dict`` of one plain module (``build_module(...).load_state_dict``)."""
        for members, stack in self.stacks:
            if m in members:
                return stack.member_state_dict(members.index(m))
        raise IndexError(f"no model {m}")


@dataclass
class _Validation:
    """A stack's validation rows, gathered once (``[M, width, D]``, padded, with the mask of the real rows), run
    ``chunk`` rows at a time (the training batch: the allocator reuses the training step's buffers, where one
    forward over all rows allocates, at 20 models, ~100 MB per layer afresh every epoch, page by page)."""

    x: Tensor
    y: Tensor
    mask: Tensor
    sizes: list[int]
    chunk: int

    @classmethod
    def of(
        cls, table: StackedTable, val_rows: list[np.ndarray] | None, offsets: Tensor, chunk: int
    ) -> _Validation | None:
        """None when some model has no validation rows (the final model): no validation loss, no logits."""
        if not val_rows or not all(len(r) for r in val_rows):
            return None
        x, y, mask = table.rows(val_rows, offsets)
        return cls(x, y, mask, [len(r) for r in val_rows], chunk)

    def _logits(self, stack: ModelStack) -> Tensor:
        width = self.x.shape[1]
        return torch.cat([stack(self.x[:, a : a + self.chunk], train=False) for a in range(0, width, self.chunk)], 1)

    @torch.no_grad()
    def mean_loss(self, stack: ModelStack, loss_params: LossParams) -> Tensor:
        """Each model's mean loss ``[M]`` over its own validation rows (evaluation mode: no dropout)."""
        terms = combined_terms(self._logits(stack).float(), self.y, loss_params) * self.mask
        return terms.sum(1) / self.mask.sum(1)

    @torch.no_grad()
    def logits(self, stack: ModelStack) -> list[np.ndarray]:
        """Each model's logits on its validation rows, in float64."""
        final = self._logits(stack).double().cpu().numpy()
        return [final[k, :n] for k, n in enumerate(self.sizes)]


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
    """Train M models. ``x`` is ``[S, N, D]`` (split s's preprocessing of every row), ``y`` is ``[N]``.

    Model m reads ``x[blocks[m]]`` (default: block m), trains on ``train_rows[m]`` with loss ``loss[m]`` (or one
    loss for all) and is validated on ``val_rows[m]``; its init and batch order come from ``seeds[m]`` alone, so
    a model trained here and alone gives the same weights within float32 rounding (dropout masks come from one
    stream per stack). ``groups[m]`` says which configuration model m belongs to: a single group (the default)
    raises :class:`TrainingDiverged` as soon as one of its models diverges; with several,
    ``FoldTraining.diverged`` says which groups failed and why."""
    device, n_models = training_device(train_cfg), len(train_rows)
    job = _Job(
        table=StackedTable(x, y, device),
        train_rows=train_rows,
        val_rows=val_rows,
        losses=[loss] * n_models if isinstance(loss, LossConfig) else list(loss),
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        seeds=seeds,
        blocks=list(range(n_models)) if blocks is None else blocks,
        failures=_Failures([0] * n_models if groups is None else groups, train_cfg.lr),
    )
    train_curve = np.full((n_models, train_cfg.epochs), np.nan)
    val_curve = np.full((n_models, train_cfg.epochs), np.nan)
    val_logits: list[np.ndarray] = [np.zeros(0)] * n_models
    stacks, checkpoints = [], {e: [np.zeros(0)] * n_models for e in checkpoint_epochs(train_cfg)}
    for members in same_step_stacks([len(r) for r in train_rows], train_cfg.batch_size):
        stack, logits = job.train(members, train_curve, val_curve, checkpoints)
        stacks.append((members, stack))
        for m, z in zip(members, logits):
            val_logits[m] = z
    kept = checkpoints if val_rows and len(checkpoints) > 1 else {}
    return FoldTraining(stacks, val_logits if val_rows else [], train_curve, val_curve, job.failures.diverged, kept)


@dataclass
class _Job:
    """Everything the stacks of one :func:`train_folds` call share."""

    table: StackedTable
    train_rows: list[np.ndarray]
    val_rows: list[np.ndarray] | None
    losses: list[LossConfig]
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    seeds: list[int]
    blocks: list[int]
    failures: _Failures

    def train(
        self,
        members: list[int],
        train_curve: np.ndarray,
        val_curve: np.ndarray,
        checkpoints: dict[int, list[np.ndarray]],
    ) -> tuple[ModelStack, list[np.ndarray]]:
        """Train the models ``members`` as one stack, writing their rows of the curves and their validation
        logits at each checkpoint epoch; their validation logits at the end."""
        device, cfg = self.table.device, self.train_cfg
        stack = ModelStack.build(self.model_cfg, self.table.x_flat.shape[1], [self.seeds[m] for m in members], device)
        optimizer = make_optimizer(stack.parameters(), cfg)
        loss_params = LossParams.stack([self.losses[m] for m in members], device)
        offsets = self.table.offsets([self.blocks[m] for m in members])
        rows = [self.train_rows[m] for m in members]
        plan = EpochPlan([len(r) for r in rows], cfg.batch_size, device)
        scheduler = make_scheduler(optimizer, cfg, plan.steps)
        generators = [torch.Generator().manual_seed(int(self.seeds[m])) for m in members]
        val_rows = None if not self.val_rows else [self.val_rows[m] for m in members]
        val = _Validation.of(self.table, val_rows, offsets, cfg.batch_size)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(self.seeds[members[0]]) + 7919)  # the stack's dropout masks
            for epoch in range(cfg.epochs):
                batches, targets = self.table.epoch(rows, generators, plan, offsets)
                running = torch.zeros(len(members), device=device)
                for step in range(plan.steps):
                    optimizer.zero_grad(set_to_none=True)
                    with autocast:
                        logits = stack(self.table.gather(batches[step]), train=True)
                    terms = combined_terms(logits.float(), targets[step], loss_params).mul(plan.mask[step]).sum(1)
                    terms.div(plan.count[step]).sum().backward()  # each model's gradient: that of its own mean
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    running += terms.detach()
                epoch_loss = running / plan.sizes
                train_curve[members, epoch] = epoch_loss.cpu().numpy()
                if self.failures.check(epoch, epoch_loss, members):  # with a single group, raises its failure
                    break  # every configuration of this stack failed: nothing left worth training
                if val is not None:
                    val_curve[members, epoch] = val.mean_loss(stack, loss_params).cpu().numpy()
                    if epoch + 1 in checkpoints and epoch + 1 < cfg.epochs:  # the last: the logits returned
                        for m, z in zip(members, val.logits(stack)):
                            checkpoints[epoch + 1][m] = z
        final = [] if val is None else val.logits(stack)
        for m, z in zip(members, final):
            checkpoints[cfg.epochs][m] = z
        return stack, final


class _Failures:
    """Which groups (configurations) have diverged, and why: a group fails at the first epoch whose mean loss is
    not finite in one of its models; the others train on."""

    def __init__(self, groups: list[int], lr: float) -> None:
        self.groups, self.lr = list(groups), lr
        self.diverged: dict[int, TrainingDiverged] = {}

    def check(self, epoch: int, epoch_loss: Tensor, members: list[int]) -> bool:
        """Note the groups failing at ``epoch`` (``epoch_loss[i]`` is model ``members[i]``'s); True when every group
        of these models has failed. With a single group in all, its failure is the call's: raised here."""
        self._record(epoch, epoch_loss, members)
        if self.diverged and len(set(self.groups)) == 1:
            raise next(iter(self.diverged.values()))
        return {self.groups[m] for m in members} <= set(self.diverged)

    def _record(self, epoch: int, epoch_loss: Tensor, members: list[int]) -> None:
        """Note, for each group not failed yet, the models (by position in the group) whose loss is not finite."""
        finite = torch.isfinite(epoch_loss)
        if bool(finite.all()):
            return
        bad: dict[int, list[int]] = {}
        for ok, m in zip(finite.tolist(), members):
            g = self.groups[m]
            at = self.groups[:m].count(g)  # the model's position in its group: its fold
            if not ok and g not in self.diverged:
                bad.setdefault(g, []).append(at)
        for g, members in bad.items():
            self.diverged[g] = TrainingDiverged(
                f"training diverged at epoch {epoch + 1} (loss is NaN/inf in fold(s) {members}); "
                f"lower the learning rate (lr={self.lr:g})"
            )
