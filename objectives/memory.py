"""Will a trial fit in memory? An estimate made before anything is allocated, so that a network far too large
(``hidden`` may be up to 65,536 per layer) is one line naming the figure, not a failed 34 GB allocation.

The estimate counts what the engine holds at once (:mod:`objectives.engine`, :mod:`objectives.preprocess`):
the K folds' parameters, their gradients and Adam's two moments (fp32); the activations of one step
(``K x batch x width`` per layer, a few copies each for the forward values, dropout masks and the backward); the
validation forward over each fold's held-out rows; and the stacked fold features ``[K, N, D]`` in float32 with
the float64 table they are made from. It is an estimate (allocator overheads, Python, the libraries are not
counted) and errs on the high side for the activations; a trial is refused only when even that exceeds what the
machine has available.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from objectives.errors import LosstuneError

if TYPE_CHECKING:
    from objectives.config import TrialConfig
    from objectives.data import Dataset

FLOAT = 4
# forward value, post-activation, dropout mask and backward buffer per hidden unit and row
ACTIVATION_COPIES = 4


class OutOfMemory(LosstuneError):
    """A trial would need more memory than the machine has available."""


@dataclass(frozen=True)
class TrialShape:
    n_rows: int
    n_inputs: int  # width of the preprocessed features (numeric columns plus one-hot categories)
    hidden: tuple[int, ...]
    folds: int  # models trained together (1 for the final model)
    batch_size: int
    validation: bool = True


def parameter_count(n_inputs: int, hidden: tuple[int, ...]) -> int:
    widths = [n_inputs, *hidden, 1]
    return sum((a + 1) * b for a, b in pairwise(widths))


def estimate_bytes(shape: TrialShape) -> int:
    k, n = shape.folds, shape.n_rows
    params = parameter_count(shape.n_inputs, shape.hidden)
    state = 4 * params * k * FLOAT  # parameters, gradients, Adam's m and v
    batch = min(shape.batch_size, n)
    widths = sum(shape.hidden) + 1
    step = ACTIVATION_COPIES * k * batch * (widths + shape.n_inputs) * FLOAT
    val_rows = -(-n // k) if shape.validation else 0
    validation = 2 * k * val_rows * (max(shape.hidden, default=1) + shape.n_inputs) * FLOAT
    features = k * n * shape.n_inputs * FLOAT + n * shape.n_inputs * 8
    return state + step + validation + features


def available_bytes(device: str = "cpu") -> int | None:
    """Memory available now: CUDA's free memory on a GPU, else ``MemAvailable`` (Linux), else free pages."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None  # unknown: not refused


def check_fits(shape: TrialShape, device: str = "cpu", what: str = "a trial") -> int:
    """The estimate in bytes, or :class:`OutOfMemory` when it exceeds the available memory."""
    need = estimate_bytes(shape)
    have = available_bytes(device)
    if have is not None and need > have:
        params = parameter_count(shape.n_inputs, shape.hidden)
        raise OutOfMemory(
            f"{what} would need about {_gb(need)} of memory ({params:,} parameters per model x {shape.folds} "
            f"model(s), {shape.n_rows:,} rows x {shape.n_inputs} inputs) but {_gb(have)} is available"
            f"{' on the GPU' if device == 'cuda' else ''}: use a smaller model.hidden (now "
            f"{list(shape.hidden)}), a smaller batch_size or fewer folds"
        )
    return need


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check_trial_memory(dataset: Dataset, config: TrialConfig, final: bool = False, configs: int = 1) -> int:
    """:func:`check_fits` for ``config`` on ``dataset``: its repeated K-fold CV (``configs`` configurations trained
    together), or with ``final`` the ``configs`` models fitted on every row (no validation rows)."""
    from objectives.device import resolve_device

    n_inputs = len(dataset.numeric_columns) * config.model.numeric_encoding.width + sum(
        int(dataset.features[c].nunique()) for c in dataset.categorical_columns
    )
    shape = TrialShape(
        n_rows=dataset.n_rows,
        n_inputs=n_inputs,
        hidden=tuple(config.model.hidden),
        folds=configs if final else configs * config.cv.repeats * config.cv.folds,
        batch_size=config.train.batch_size,
        validation=not final,
    )
    device = resolve_device(config.train.device).type
    what = (
        ("the final model" if configs == 1 else f"the final models ({configs} trained together)")
        if final
        else f"a trial ({shape.folds} models trained together)"
    )
    if config.model.module is not None:  # a user's model: validated and measured by building it (its hidden is moot)
        from objectives.user_model_check import check_user_model

        return check_user_model(config.model, shape, device, what)
    return check_fits(shape, device, what)
