"""Is a user's own model usable? Checked before anything is written or trained, each failure one
:class:`~objectives.user_module.UserModelError` line: importable, a ``nn.Module`` subclass, constructible, with
trainable parameters, a dry forward on two rows giving ``(2,)`` or ``(2, 1)`` finite floats, and its M stacked
copies fitting in memory.

The model is first built on PyTorch's ``meta`` device (shapes, no storage), so a model far too large is refused
before a byte of it is allocated. The estimate counts, per model, its parameters four times (weights, gradients,
Adam's two moments), its buffers, and its activations as measured on the dry forward (a forward hook on every
submodule sums their outputs per row), times the batch, with the validation forward and the stacked fold
features counted as :mod:`objectives.memory` counts them for the MLP. It is an estimate (autograd may keep more
or less than four copies of an activation; allocator overheads are not counted); a trial is refused only when
it exceeds the memory available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from objectives.user_module import UserModelError, construct, first_line, user_class

if TYPE_CHECKING:
    from objectives.config import ModelConfig
    from objectives.memory import TrialShape


@dataclass(frozen=True)
class ModelSize:
    """What one model holds: trainable parameters, bytes of parameters and buffers, activation floats per row
    (every submodule's output, summed; and the largest one)."""

    parameters: int
    parameter_bytes: int
    buffer_bytes: int
    activations_per_row: int = 0
    widest_per_row: int = 0


def check_user_model(model: ModelConfig, shape: TrialShape, device: str = "cpu", what: str = "a trial") -> int:
    """Validate ``model`` (see the module docstring) for ``shape.folds`` models trained together on ``shape``'s
    data; the memory estimate in bytes, or one-line :class:`UserModelError` / :class:`~objectives.memory.OutOfMemory`.
    The global random state is left as it was (the model's initialisation draws from it)."""
    assert model.module is not None
    cls = user_class(model.module)
    with torch.random.fork_rng(devices=[]):
        size = _meta_size(cls, model, shape.n_inputs)
        if size is not None:
            _check_memory(model, shape, size, device, what)  # before the real model is allocated
        net = construct(cls, model, shape.n_inputs)
        if not any(p.requires_grad for p in net.parameters()):
            raise UserModelError(f"model.module {model.module!r}: {cls.__name__} has no trainable parameters")
        size = _dry_forward(net, model, shape.n_inputs)
        need = _check_memory(model, shape, size, device, what)
        # what the engine would refuse when it builds the stack (a batch norm, a buffer updated in place, vmap
        # failing), refused here, before anything is written
        from objectives.stack import check_stackable

        check_stackable(net, shape.n_inputs)
    return need


def _meta_size(cls: type[nn.Module], model: ModelConfig, n_features: int) -> ModelSize | None:
    """The model's size built on the ``meta`` device (no storage), or None when it cannot be built there (code
    that reads tensor values in ``__init__``): the real construction then says what is wrong, if anything."""
    try:
        with torch.device("meta"):
            net = cls(n_features, **model.kwargs)
    except Exception:  # the real construction, next, reports the user's error in one line
        return None
    return _size(net) if isinstance(net, nn.Module) else None


def _size(net: nn.Module, activations: int = 0, widest: int = 0) -> ModelSize:
    params = list(net.parameters())
    return ModelSize(
        parameters=sum(p.numel() for p in params if p.requires_grad),
        parameter_bytes=sum(p.numel() * p.element_size() for p in params),
        buffer_bytes=sum(b.numel() * b.element_size() for b in net.buffers()),
        activations_per_row=activations,
        widest_per_row=widest,
    )


def _dry_forward(net: nn.Module, model: ModelConfig, n_features: int) -> ModelSize:
    """Two rows of standard normal features through ``net`` (training mode, no gradient): the output must be
    ``(2,)`` or ``(2, 1)`` finite floats. Returns the model's size with its activations per row."""
    outputs: list[int] = []

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel() // 2)

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    x = torch.randn(2, n_features, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = net.train()(x)
    except Exception as exc:  # the user's forward: any error is theirs, said in one line
        raise UserModelError(
            f"model.module {model.module!r}: forward on 2 rows x {n_features} features failed: {first_line(exc)}; "
            "forward(x) must take float32 rows [rows, n_features]"
        ) from None
    finally:
        for hook in hooks:
            hook.remove()
    if not isinstance(out, torch.Tensor) or tuple(out.shape) not in ((2,), (2, 1)) or not out.is_floating_point():
        got = f"shape {tuple(out.shape)} of {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserModelError(
            f"model.module {model.module!r}: forward on 2 rows returned {got}; it must return one logit per row, "
            "floats of shape (2,) or (2, 1)"
        )
    if not torch.isfinite(out).all():
        raise UserModelError(f"model.module {model.module!r}: forward on 2 rows returned NaN or infinite logits")
    return _size(net, sum(outputs), max(outputs, default=0))


def _check_memory(model: ModelConfig, shape: TrialShape, size: ModelSize, device: str, what: str) -> int:
    """:func:`objectives.memory.check_fits`'s rule for a user's model of ``size``."""
    from objectives.memory import ACTIVATION_COPIES, FLOAT, OutOfMemory, available_bytes
    from objectives.memory import _gb as gb

    m, n = shape.folds, shape.n_rows
    state = m * (4 * size.parameter_bytes + size.buffer_bytes)  # weights, gradients, Adam's m and v; buffers
    batch = min(shape.batch_size, n)
    step = ACTIVATION_COPIES * m * batch * (size.activations_per_row + shape.n_inputs) * FLOAT
    val_rows = -(-n // m) if shape.validation else 0
    validation = 2 * m * val_rows * (size.widest_per_row + shape.n_inputs) * FLOAT
    features = m * n * shape.n_inputs * FLOAT + n * shape.n_inputs * 8
    need = state + step + validation + features
    have = available_bytes(device)
    if have is not None and need > have:
        raise OutOfMemory(
            f"{what} would need about {gb(need)} of memory for model.module {model.module!r} ({size.parameters:,} "
            f"parameters per model x {m} model(s), {n:,} rows x {shape.n_inputs} inputs) but {gb(have)} is "
            f"available{' on the GPU' if device == 'cuda' else ''}: make the model smaller (model.kwargs), or use a "
            "smaller batch_size or fewer folds"
        )
    return need
