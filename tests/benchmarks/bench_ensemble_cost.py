"""What the study's ensemble costs after a search: ensemble selection (with its nested cross-fitted score) and
BBC-CV (50 bootstraps, the ensemble procedure included), as ``losstune search`` runs them at its end, on
synthetic OOF probabilities of 10 trials x 50,000 rows (5 folds, one repeat, stored as float32). Run by hand:

    .venv/bin/python tests/benchmarks/bench_ensemble_cost.py [--rows 50000] [--trials 10] [--runs 3]

Prints the median seconds of each part and the load average, for the Markdown log.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from objectives.config import MetricConfig
from objectives.ensemble import select_ensemble
from objectives.selection_bias import bbc_cv


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    s = rng.normal(size=args.rows)
    y = (rng.random(args.rows) < 1 / (1 + np.exp(-(2 * s - 1.5)))).astype(np.int64)
    fold = rng.permutation(np.arange(args.rows) % 5)[None, :]
    noise = rng.normal(scale=0.8, size=(args.trials, 1, args.rows))
    proba = (1 / (1 + np.exp(-(2 * s - 1.5 + noise)))).astype(np.float32)
    metric = MetricConfig(name="f1")
    select, bbc, cpu = [], [], []
    load = [os.getloadavg()[0]]
    for _ in range(args.runs):
        t = time.perf_counter()
        select_ensemble(proba, y, fold, metric, reference=0)
        select.append(time.perf_counter() - t)
        t, c = time.perf_counter(), time.process_time()
        bbc_cv(proba, y, metric, reference=0, bootstraps=50, seed=0)
        bbc.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        load.append(os.getloadavg()[0])
    print(
        f"{args.trials} trials x {args.rows} rows: ensemble selection + nested score {np.median(select):.1f} s, "
        f"BBC-CV (50 bootstraps, ensemble included) {np.median(bbc):.1f} s ({np.median(cpu):.1f} s of CPU) (median of "
        f"{args.runs}, wall-clock unless said); load average "
        f"{', '.join(f'{x:.1f}' for x in load)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
