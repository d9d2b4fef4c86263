"""Which rows each of the M models of a stack reads in each training step, and the mask of the shorter batches.

Model m reads block ``blocks[m]`` of the stacked table ``x`` ``[S, N, D]`` (its (repeat, fold) split's
preprocessing) and trains on its own rows, whose number differs from model to model by a row or two. A model
trained alone with ``n`` rows takes ``ceil(n / batch_size)`` steps an epoch, the last one shorter. The models of
one stack all take the same number of steps (:func:`same_step_stacks` splits a job into such stacks: usually one),
each step ``batch`` rows wide; a model's rows beyond its own count in its last step are padding, masked out of its
loss (:class:`EpochPlan`), so its mean loss and gradient are those of its real rows, as alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def same_step_stacks(sizes: list[int], batch_size: int) -> list[list[int]]:
    """The models (by position) grouped by their number of steps per epoch, ``ceil(n / batch_size)``: a model
    with fewer steps than the others would otherwise be moved in a step where it has no row (an Adam step on a
    zero gradient still moves it, and counts)."""
    stacks: dict[int, list[int]] = {}
    for m, n in enumerate(sizes):
        stacks.setdefault(math.ceil(n / batch_size), []).append(m)
    return list(stacks.values())


def padded(rows: list[np.ndarray], device: torch.device, width: int | None = None) -> Tensor:
    """Ragged row lists as a ``[M, width]`` index tensor (default: the longest), padding pointing at row 0."""
    width = width or max(len(r) for r in rows)
    index = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        index[k, : len(r)] = r
    return torch.from_numpy(index).to(device)


class EpochPlan:
    """The layout of an epoch's ``steps`` batches of ``batch`` rows for M models with the same number of steps;
    ``mask[step]`` ``[M, batch]`` is 1 on a model's real rows, 0 on padding; ``count[step]`` ``[M]`` its real
    rows (at least 1)."""

    def __init__(self, sizes: list[int], batch_size: int, device: torch.device) -> None:
        self.batch = min(batch_size, max(sizes))
        self.steps = math.ceil(max(sizes) / self.batch)
        if any(math.ceil(n / self.batch) != self.steps for n in sizes):
            raise ValueError(f"models of {sizes} rows take different numbers of steps: see same_step_stacks")
        self.sizes = torch.tensor(sizes, device=device, dtype=torch.float32)
        row = torch.arange(self.steps).view(-1, 1, 1) * self.batch + torch.arange(self.batch).view(1, 1, -1)
        self.mask = (row < torch.tensor(sizes).view(1, -1, 1)).float().to(device)  # [steps, M, batch]
        self.count = self.mask.sum(2)


class StackedTable:
    """The table ``x`` ``[S, N, D]`` (float32) and the targets ``y`` ``[N]`` on the device; a model reads block
    ``b`` as the rows ``b * N + i`` of the flattened ``[S*N, D]`` table (``offsets``: ``[M, 1]``, ``b * N``)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device) -> None:
        x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        self.device, self.n_rows = device, x_t.shape[1]
        self.y = torch.from_numpy(np.asarray(y, dtype=np.float32)).to(device)
        # rows are picked from the flattened table with index_select (far cheaper than 2-d fancy indexing)
        self.x_flat = x_t.reshape(x_t.shape[0] * x_t.shape[1], x_t.shape[2])

    def offsets(self, blocks: list[int]) -> Tensor:
        return torch.tensor(blocks, device=self.device).unsqueeze(1) * self.n_rows

    def epoch(
        self, train_rows: list[np.ndarray], generators: list[torch.Generator], plan: EpochPlan, offsets: Tensor
    ) -> tuple[Tensor, Tensor]:
        """An epoch's batches as row numbers of the flat table and their targets, both ``[steps, M, batch]``: each
        model's rows in the order of a permutation drawn from its own generator."""
        order = [torch.from_numpy(r)[torch.randperm(len(r), generator=g)] for r, g in zip(train_rows, generators)]
        rows = padded([o.numpy() for o in order], self.device, width=plan.steps * plan.batch)
        by_step = rows.view(len(order), plan.steps, plan.batch).transpose(0, 1).contiguous()
        return by_step + offsets.unsqueeze(0), self.y[by_step]

    def gather(self, flat_rows: Tensor) -> Tensor:
        """The features ``[M, batch, D]`` of one step's rows ``[M, batch]`` (from :meth:`epoch`)."""
        return self.x_flat.index_select(0, flat_rows.reshape(-1)).view(*flat_rows.shape, -1)

    def rows(self, rows: list[np.ndarray], offsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each model's ``rows`` at once: features ``[M, width, D]``, targets ``[M, width]`` and the mask of its
        real rows ``[M, width]`` (the padding points at row 0)."""
        index = padded(rows, self.device)
        mask = torch.arange(index.shape[1], device=self.device) < torch.tensor(
            [len(r) for r in rows], device=self.device
        ).unsqueeze(1)
        return self.gather(index + offsets), self.y[index], mask.float()
