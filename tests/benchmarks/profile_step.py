"""Profile: where one training step of the built-in MLP goes, by operator (torch.profiler, CPU).

Run by hand from the repository root (not collected by pytest)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/profile_step.py --models 5 20

The step is the engine's (objectives/engine.py ``_Job.train``): gather a batch of 256 rows per model from a
bank_full-sized table of random features (51 columns, as bank_full's encoding), the stacked MLP 128-64, the
combined loss with per-model parameters, the masked mean, backward, ``torch.optim.Adam(fused=True)``. It prints
the CPU milliseconds per step without the profiler, then the operators by self CPU time per step.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch.profiler import profile

from objectives.config import LossConfig, ModelConfig, TrainConfig
from objectives.losses import LossParams, combined_terms
from objectives.schedule import make_optimizer
from objectives.stack import ModelStack

N_FEATURES, BATCH, ROWS = 51, 256, 45211
LOSSES = [
    LossConfig(gamma=2.0, bce_weight=0.5, focal_weight=0.5),
    LossConfig(gamma=3.0, bce_weight=0.25, focal_weight=0.75),
    LossConfig(gamma=1.0, alpha=0.25, bce_weight=0.75, focal_weight=0.25),
    LossConfig(gamma=0.5, bce_weight=1.0, focal_weight=0.0),
]


def make_step(n_models: int) -> Callable[[], None]:
    stack = ModelStack.build(ModelConfig(hidden=(128, 64)), N_FEATURES, list(range(n_models)), torch.device("cpu"))
    optimizer = make_optimizer(stack.parameters(), TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, device="cpu"))
    params = LossParams.stack([LOSSES[(m // 5) % len(LOSSES)] for m in range(n_models)])
    gen = torch.Generator().manual_seed(0)
    x_flat = torch.randn(5 * ROWS, N_FEATURES, generator=gen)  # five splits' copies of the table, as the engine's
    targets = (torch.rand(64, n_models, BATCH, generator=gen) < 0.12).float()
    rows = torch.randint(0, x_flat.shape[0], (64, n_models, BATCH), generator=gen)
    mask = torch.ones(n_models, BATCH)
    count = mask.sum(1)
    at = [0]

    def step() -> None:
        i = at[0] = (at[0] + 1) % 64
        optimizer.zero_grad(set_to_none=True)
        logits = stack(x_flat.index_select(0, rows[i].reshape(-1)).view(n_models, BATCH, -1), train=True)
        terms = combined_terms(logits.float(), targets[i], params).mul(mask).sum(1)
        terms.div(count).sum().backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    for n_models in args.models:
        step = make_step(n_models)
        for _ in range(20):
            step()
        start = time.process_time()
        for _ in range(2 * args.steps):
            step()
        per_step = (time.process_time() - start) / (2 * args.steps) * 1e3
        with profile() as prof:
            for _ in range(args.steps):
                step()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events) / args.steps
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"M={n_models}: {per_step:.2f} ms CPU per step unprofiled, {total / 1e3:.2f} profiled (load {load})")
        for e in events[:16]:
            share = e.self_cpu_time_total / args.steps / total
            print(
                f"  {e.key[:58]:58s} {e.self_cpu_time_total / args.steps:8.1f} us {share:6.1%}",
                f"x{e.count // args.steps}",
            )


if __name__ == "__main__":
    main()
