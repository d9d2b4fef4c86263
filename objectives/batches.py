"""Which rows each of the M models reads in each training step, and the masks that make the padding count for
nothing.

Model m reads block ``blocks[m]`` of the stacked table ``x`` ``[S, N, D]`` (its (repeat, fold) split's
preprocessing) and trains on its own rows, whose number differs from model to model by a row or two. Every epoch
each model draws its own permutation of its rows (:meth:`StackedTable.epoch`); :class:`StepMasks` cuts it into
the epoch's steps, pads the short ones and says which models a step updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from objectives.model import aligned


def padded(rows: Sequence[np.ndarray | Tensor], device: torch.device, width: int | None = None) -> Tensor:
    """Ragged row lists as a ``[M, width]`` index tensor (default: the longest), padding pointing at row 0."""
    width = width or max(len(r) for r in rows)
    index = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        index[k, : len(r)] = r
    return torch.from_numpy(index).to(device)


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


class StackedTable:
    """The table ``x`` ``[S, N, D]`` and the targets ``y`` ``[N]`` on the device, ``x`` cast once to the compute
    dtype (not per batch); model m reads block ``blocks[m]``."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, blocks: list[int], dtype: torch.dtype, device: torch.device
    ) -> None:
        x_t = torch.from_numpy(x).to(device, dtype)
        self.device = device
        self.y = torch.from_numpy(np.asarray(y, dtype=np.float32)).to(device)
        # rows are picked from the flattened [S*N, D] table with index_select (far cheaper than 2-d fancy indexing)
        self.x_flat = x_t.reshape(x_t.shape[0] * x_t.shape[1], x_t.shape[2])
        self.block_offset = torch.tensor(blocks, device=device).unsqueeze(1) * x_t.shape[1]

    def epoch(
        self, train_rows: list[np.ndarray], generators: list[torch.Generator], masks: StepMasks
    ) -> tuple[Tensor, Tensor]:
        """An epoch's batches as row numbers of the flat table and their targets, both ``[steps, M, width]``: each
        model's rows in the order of a permutation drawn from its own generator. Each step is a contiguous slice,
        so a step does no indexing work beyond :meth:`gather`."""
        order = [torch.from_numpy(r)[torch.randperm(len(r), generator=g)] for r, g in zip(train_rows, generators)]
        rows = masks.layout(padded(order, self.device, width=masks.steps * masks.batch))
        return rows + self.block_offset.unsqueeze(0), self.y[rows]

    def gather(self, flat_rows: Tensor) -> Tensor:
        """The features ``[M, width, D]`` of one step's rows ``[M, width]`` (from :meth:`epoch`)."""
        return self.x_flat.index_select(0, flat_rows.view(-1)).view(*flat_rows.shape, -1)

    def rows(self, rows: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        """Each model's ``rows`` at once, features ``[M, width, D]`` and targets ``[M, width]``, stored a multiple
        of 16 wide (no remainder: see :class:`StepMasks`), the padding pointing at row 0."""
        index = padded(rows, self.device, width=aligned(max(len(r) for r in rows)))
        return self.x_flat[(index + self.block_offset).reshape(-1)].view(*index.shape, -1), self.y[index]
