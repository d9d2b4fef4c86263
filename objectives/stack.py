"""M copies of one model, trained as one: PyTorch's model-ensembling recipe on its public API.

:func:`torch.func.stack_module_state` stacks the M models' parameters into one tensor per parameter name (leading
dimension M), and ``torch.func.vmap(torch.func.functional_call)`` runs the module once over inputs ``[M, B, D]``,
model m reading its own slice of every parameter. Autograd differentiates it; each model's loss reaches only its
own slice, and Adam acts element-wise, so the stack is M independent trainings run in lock-step. The built-in
:class:`~objectives.model.MLP` takes a shorter road to the same computation: batched matmuls on the same stacked
weights, with autograd (the ``vmap`` road took 1.4 to 1.6 times its CPU time for 5 models on a 2-core CPU); a test
holds the two roads to the same models.

Dropout draws different masks for each model (``randomness="different"``): each model sees the noise a model
trained alone would, not one mask shared by all. The masks come from torch's global RNG, seeded by the engine
per job, so a job is reproducible, but a model trained with dropout in a stack is not the one trained alone.

Which modules cannot be stacked (:func:`check_stackable` refuses them with one line, :class:`UnstackableModel`):
a batch normalisation layer (it mixes the rows of a batch, and a stack pads the shorter models' last batches, so
padding rows would enter its statistics; its running statistics are also updated in place), any other module
that updates a buffer in place during a training forward, and any module ``vmap`` cannot run. Use
``nn.LayerNorm`` (per row) instead of a batch norm.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from objectives.config import ModelConfig
from objectives.errors import LosstuneError
from objectives.model import MLP, build_module, row_logits

_BATCH_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LazyBatchNorm1d,
    nn.LazyBatchNorm2d,
    nn.LazyBatchNorm3d,
    nn.SyncBatchNorm,
)


class UnstackableModel(LosstuneError):
    """The model cannot be trained as one of a stack (a batch norm, a buffer updated in place, vmap fails)."""


class ModelStack:
    """M models of one architecture as stacked parameters ``{name: [M, ...]}`` (autograd leaves) and buffers;
    ``stack(x, train)`` maps ``[M, B, D]`` to logits ``[M, B]``."""

    def __init__(self, modules: list[nn.Module], device: torch.device) -> None:
        params, buffers = stack_module_state(modules)
        self.params = {k: v.detach().to(device).requires_grad_() for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.base = copy.deepcopy(modules[0]).to("meta")  # the architecture only; weights come from the stack
        self._keys = list(modules[0].state_dict())
        self._forward = vmap(self._one, randomness="different")
        self._layers = _mlp_layers(modules[0])

    @classmethod
    def build(cls, model: ModelConfig, n_features: int, seeds: list[int], device: torch.device) -> ModelStack:
        """One model per seed, each initialised as :func:`build_module` initialises it after
        ``torch.manual_seed(seed)`` (so a model's initial weights do not depend on the others'), refused with
        :class:`UnstackableModel` when the module cannot be stacked."""
        modules = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                modules.append(build_module(model, n_features))
        check_stackable(modules[0], n_features)
        return cls(modules, device)

    def _one(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return row_logits(lambda rows: functional_call(self.base, (params, buffers), (rows,)), x)

    def __call__(self, x: Tensor, train: bool) -> Tensor:
        if self._layers is not None:
            return self._batched_mlp(x, train)
        self.base.train(train)
        return self._forward(self.params, self.buffers, x)

    def _batched_mlp(self, x: Tensor, train: bool) -> Tensor:
        """The built-in MLP on the stacked weights with batched matmuls (what ``vmap`` runs, less its per-call
        Python work, and the one-output layer as a multiply-and-sum instead of a ``[.., 1]``-wide matmul; see
        docs/concepts/engine.md). Dropout draws a mask per element, so per
        model, as ``randomness="different"`` (with :func:`fast_dropout`'s masks, not vmap's)."""
        h = x
        for kind, arg in self._layers or []:
            if kind == "relu":
                h = h.relu_()  # in place on the bias add's output, which no backward needs
            elif kind == "dropout":
                h = fast_dropout(h, float(arg)) if train else h
            else:
                w, b = self.params[f"{arg}.weight"], self.params[f"{arg}.bias"]  # [M, out, in], [M, out]
                if w.shape[1] == 1:
                    h = (h * w).sum(-1, keepdim=True) + b.unsqueeze(1)
                else:  # bmm, then add: baddbmm would first copy the broadcast bias into the whole output
                    h = torch.bmm(h, w.transpose(1, 2)).add_(b.unsqueeze(1))
        return h.squeeze(-1)

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    def member_state_dict(self, m: int) -> dict[str, Tensor]:
        """Model ``m`` as the ``state_dict`` of one plain module (on the CPU): ``build_module(...)`` loads it."""
        stacked = {**self.params, **self.buffers}
        return {k: stacked[k][m].detach().clone().cpu() for k in self._keys if k in stacked}


def _mlp_layers(module: nn.Module) -> list[tuple[str, str | float]] | None:
    """The built-in :class:`MLP`'s layers in order, ``("linear", name)``, ``("relu", "")``, ``("dropout", p)``;
    None for any other module (trained through ``vmap``)."""
    if type(module) is not MLP:
        return None
    layers: list[tuple[str, str | float]] = []
    for name, layer in module.net.named_children():
        if type(layer) is nn.Linear:
            layers.append(("linear", f"net.{name}"))
        elif type(layer) is nn.ReLU:
            layers.append(("relu", ""))
        elif type(layer) is nn.Dropout:
            layers.append(("dropout", layer.p))
        else:
            return None
    return layers


def check_stackable(module: nn.Module, n_features: int) -> None:
    """Refuse, in one line, a module the engine cannot train stacked (see the module docstring): a batch norm;
    a module whose training forward fails under ``vmap``, does not give one logit per row, or updates a buffer
    in place. The dry run is two copies on two rows of zeros, away from the global RNG's stream."""
    name = type(module).__name__
    for sub_name, sub in module.named_modules():
        if isinstance(sub, _BATCH_NORMS):
            raise UnstackableModel(
                f"model {name} cannot be trained stacked: its layer {sub_name or '(root)'!r} is a "
                f"{type(sub).__name__}, which normalises over the batch (padding rows of shorter batches would "
                "enter its statistics) and updates running statistics in place; use nn.LayerNorm instead"
            )
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            stack = ModelStack([copy.deepcopy(module) for _ in range(2)], torch.device("cpu"))
            before = {k: v.clone() for k, v in stack.buffers.items()}
            out = stack(torch.zeros(2, 2, n_features), train=True)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UnstackableModel(f"model {name} cannot be trained stacked under torch.func.vmap: {first}") from None
    if tuple(out.shape) != (2, 2):
        raise UnstackableModel(
            f"model {name} returns shape {list(out.shape[1:])} for a batch of 2 rows; it must return one logit "
            "per row ([2] or [2, 1])"
        )
    changed = [k for k, v in before.items() if not torch.equal(v, stack.buffers[k])]
    if changed:
        raise UnstackableModel(
            f"model {name} cannot be trained stacked: its forward updates buffer(s) {', '.join(changed)} in place "
            "during training (statistics of the batch, which in a stack includes padding rows)"
        )


def fast_dropout(h: Tensor, p: float) -> Tensor:
    """Dropout in training: each element zeroed with probability ``p`` (to 1/65536), the others scaled so that
    the expectation is ``h`` exactly. On the CPU the mask is drawn as 16-bit integers, four from each 64-bit
    random number: torch's CPU ``bernoulli_`` (what ``F.dropout`` draws) took longer than the layer's matmul
    (a [10, 256, 128] mask: 4.3 ms against 0.7 ms, and 3.5 ms for the bmm forward and backward). Other devices
    use ``F.dropout``. The draws come from torch's generator, so a seeded job is reproducible."""
    if h.device.type != "cpu" or p == 0.0:
        return F.dropout(h, p, training=True)
    keep = round((1.0 - p) * 65536)  # int16 values >= 32768 - keep: keep of the 65536
    if keep == 0:  # p within 1/65536 of 1: every element dropped, as F.dropout would nearly always
        return h * 0.0
    n = h.numel()
    bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    kept = bits.view(torch.int16)[:n].view(h.shape) >= 32768 - keep
    return h * kept.to(h.dtype).mul_(65536 / keep)
