"""Benchmark: this checkout's training engine against another checkout's, side by side in one run.

Run by hand from the repository root (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_engine.py --other ../main --other-python ../main/.venv/bin/python

Each round runs, in a fresh process per checkout and alternating which goes first, ``evaluate`` of one 5-fold
configuration and ``evaluate_many`` of four (20 models together), after a first one-epoch ``evaluate`` timed
apart (a process's first training: torch.optim's first use imports torch._dynamo), on every column of
../shared/data/bank_full.csv
(5 folds x 20 epochs, batch 256, hidden 128-64, lr 1e-3, fp32, cpu), the folds prepared once per process and
not timed. It prints each round's seconds, the median of each, the ratios (this / other) and the load average.
``--quick``: 3,000 rows, 2 epochs (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BANK_CSV = next(
    (
        p
        for p in (REPO.parent / "shared/data/bank_full.csv", REPO.parents[1] / "shared/data/bank_full.csv")
        if p.exists()
    ),
    REPO.parent / "shared/data/bank_full.csv",
)
LOSSES = [
    {"gamma": 2.0, "bce_weight": 0.5, "focal_weight": 0.5},
    {"gamma": 3.0, "bce_weight": 0.25, "focal_weight": 0.75},
    {"gamma": 1.0, "bce_weight": 0.75, "focal_weight": 0.25, "alpha": 0.25},
    {"gamma": 0.5, "bce_weight": 1.0, "focal_weight": 0.0},
]


def child(repo: str, quick: bool) -> None:
    """In the checkout ``repo``: the two timings as one JSON line."""
    sys.path.insert(0, repo)
    import numpy as np

    from objectives.config import CVConfig, LossConfig, ModelConfig, TrainConfig, TrialConfig
    from objectives.data import DataSpec, load_dataset
    from objectives.evaluate import evaluate, evaluate_many, prepare_folds

    ds = load_dataset(DataSpec(path=str(BANK_CSV), target="y", positive="yes", sep=";"))
    if quick:
        import pandas as pd

        path = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_engine_small.csv"
        pd.read_csv(BANK_CSV, sep=";").sample(3000, random_state=0).to_csv(path, sep=";", index=False)
        ds = load_dataset(DataSpec(path=str(path), target="y", positive="yes", sep=";"))
    train = TrainConfig(epochs=2 if quick else 20, batch_size=256, lr=1e-3, device="cpu")
    configs = [
        TrialConfig(loss=LossConfig(**loss), model=ModelConfig(hidden=(128, 64)), train=train, cv=CVConfig(folds=5))
        for loss in LOSSES
    ]
    prepared = prepare_folds(ds, configs[0].cv)
    # the first training in the process, timed apart: one epoch (torch.optim's first use imports torch._dynamo)
    start = time.perf_counter()
    evaluate(ds, configs[0].model_copy(update={"train": train.model_copy(update={"epochs": 1})}), prepared)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    one = evaluate(ds, configs[0], prepared)
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    many = evaluate_many(ds, configs, prepared)
    many_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "warmup_s": warmup_s,
                "evaluate_s": one_s,
                "batch4_s": many_s,
                "f1": one.oof_score,
                "batch_f1": [r.oof_score for r in many],
                "log_loss": float(np.mean([r.log_loss for r in many])),
                # configuration 0 trained alone (5 models) against in the batch (20 models): relative difference
                "stacked_vs_alone": float(np.max(np.abs(one.oof_proba - many[0].oof_proba) / one.oof_proba)),
            }
        )
    )


def run(python: str, repo: str, quick: bool) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--child", repo] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--other", default=str(REPO.parent / "main"))
    parser.add_argument("--other-python", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.quick)
        return
    other_python = args.other_python or str(Path(args.other) / ".venv/bin/python")
    sides = {"this": (sys.executable, str(REPO)), "other": (other_python, str(Path(args.other).resolve()))}
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")
    results: dict[str, list[dict]] = {"this": [], "other": []}
    for r in range(args.rounds):
        for name in ("this", "other") if r % 2 == 0 else ("other", "this"):
            got = run(*sides[name], args.quick)
            results[name].append(got)
            load = " ".join(f"{v:.2f}" for v in os.getloadavg())
            print(
                f"round {r} {name}: first use {got['warmup_s']:.2f} s, "
                f"evaluate {got['evaluate_s']:.2f} s, batch of 4 {got['batch4_s']:.2f} s, "
                f"f1 {got['f1']:.4f}, batch f1 {[round(f, 4) for f in got['batch_f1']]}, OOF stacked vs alone "
                f"{got['stacked_vs_alone']:.1e}  (load {load})",
                flush=True,
            )
    for key in ("warmup_s", "evaluate_s", "batch4_s"):
        this = statistics.median(g[key] for g in results["this"])
        other = statistics.median(g[key] for g in results["other"])
        ratios = [a[key] / b[key] for a, b in zip(results["this"], results["other"])]
        print(
            f"{key}: this {this:.2f} s, other {other:.2f} s, ratio of medians {this / other:.2f}, "
            f"per-round ratios {[round(x, 2) for x in ratios]}"
        )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
