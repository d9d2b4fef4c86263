"""Benchmark: many models at once. Three ratios, each measured side by side in one run of this script.

Run by hand from the repository root (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_batch.py            # full run on ../shared/data/bank_full.csv
    .venv/bin/python tests/benchmarks/bench_batch.py --quick    # smoke run: 3,000 rows, 2 epochs
    .venv/bin/python tests/benchmarks/bench_batch.py --only week|repeats|together

* **week**: the whole default-plan week (10 trials) as one ``losstune search`` process (start-up, MLflow and
  Optuna included) against a plain reference process that runs the same ten loss configurations one after the
  other, each a per-fold ``DataLoader`` loop (``nn.Sequential``, ``torch.optim.Adam``, ``CombinedLoss``) with
  its MLflow run (params, metrics) in a fresh SQLite store. All columns of bank_full.csv, 5 folds x 20 epochs,
  batch 256, hidden 128-64, lr 1e-3. Goal: 5x or more, and the week under 60 s.
* **repeats**: ``evaluate`` of one configuration with ``cv.repeats: 3`` against ``repeats: 1`` (preparation
  included on both sides). Goal: under 2.2x.
* **together**: four configurations in one ``evaluate_many`` against the same four ``evaluate`` calls one after
  the other (the folds prepared once, shared by both sides).

The load average is printed with the figures: compare ratios from one run, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# ../shared/data beside the checkout (or two levels up, from a worktree under wt/)
BANK_CSV = next(
    (
        p
        for p in (
            REPO.parent / "shared" / "data" / "bank_full.csv",
            REPO.parents[1] / "shared" / "data" / "bank_full.csv",
        )
        if p.exists()
    ),
    REPO.parent / "shared" / "data" / "bank_full.csv",
)
sys.path.insert(0, str(REPO))

PLAIN_MODEL = "dropout: 0.0, numeric_embedding: none"  # losstune 0.2's default model

STUDY = """\
name: bench-week
data: {{path: {path}, target: y, positive: "yes", sep: ";"}}
cv: {{folds: 5, seed: 0}}
model: {{hidden: [128, 64]{model}}}
train: {{epochs: {epochs}, batch_size: 256, lr: 0.001, device: cpu}}
budget: {{trials_per_week: 10}}
plan: default
"""


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def data_file(quick: bool, tmp: Path) -> Path:
    if not BANK_CSV.exists():
        sys.exit(f"{BANK_CSV} is missing: this benchmark needs the bank marketing table")
    if not quick:
        return BANK_CSV
    import pandas as pd

    small = tmp / "bank_small.csv"
    pd.read_csv(BANK_CSV, sep=";").sample(3000, random_state=0).to_csv(small, sep=";", index=False)
    return small


# --------------------------------------------------------------------------------------------- the reference


def reference_week(spec: dict) -> None:
    """Ten trials the ordinary way, one after the other: per fold a ColumnTransformer, an nn.Sequential MLP, a
    DataLoader and torch.optim.Adam; per trial an MLflow run with its params and metrics."""
    import mlflow
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from objectives.losses import CombinedLoss

    mlflow.set_tracking_uri(spec["tracking_uri"])
    mlflow.set_experiment("reference-week")
    df = pd.read_csv(spec["path"], sep=";")
    y = (df["y"].astype(str) == "yes").to_numpy(dtype=np.int64)
    features = df.drop(columns=["y"])
    numeric = features.select_dtypes("number").columns.tolist()
    categorical = [c for c in features.columns if c not in numeric]
    for number, loss in enumerate(spec["losses"]):
        torch.manual_seed(number)
        start = time.perf_counter()
        oof = np.zeros(len(y))
        for train_idx, val_idx in StratifiedKFold(5, shuffle=True, random_state=0).split(features, y):
            pre = ColumnTransformer(
                [
                    (
                        "num",
                        Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                        numeric,
                    ),
                    (
                        "cat",
                        Pipeline(
                            [
                                ("impute", SimpleImputer(strategy="most_frequent")),
                                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                            ]
                        ),
                        categorical,
                    ),
                ]
            ).fit(features.iloc[train_idx])
            x_train = torch.tensor(pre.transform(features.iloc[train_idx]), dtype=torch.float32)
            x_val = torch.tensor(pre.transform(features.iloc[val_idx]), dtype=torch.float32)
            model = nn.Sequential(
                nn.Linear(x_train.shape[1], 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1)
            )
            criterion = CombinedLoss(**loss)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            loader = DataLoader(
                TensorDataset(x_train, torch.tensor(y[train_idx], dtype=torch.float32)), batch_size=256, shuffle=True
            )
            for _ in range(spec["epochs"]):
                for xb, yb in loader:
                    optimizer.zero_grad()
                    criterion(model(xb).squeeze(-1), yb).backward()
                    optimizer.step()
            with torch.no_grad():
                oof[val_idx] = torch.sigmoid(model(x_val).squeeze(-1)).double().numpy()
        grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
        scores = [f1_score(y, (oof >= t).astype(int), zero_division=0) for t in grid]
        with mlflow.start_run(run_name=f"t{number:03d}"):
            mlflow.log_params({k: str(v) for k, v in loss.items()})
            mlflow.log_metrics({"cv_score": float(max(scores)), "seconds": time.perf_counter() - start})


# ------------------------------------------------------------------------------------------------ the three


def bench_week(data: Path, epochs: int, tmp: Path, model: str = "", reference: bool = True) -> dict:
    """The week's time (and, with ``reference``, the hand-written loop's); ``model``: extra ``model:`` keys in
    YAML flow style (``numeric_embedding: piecewise_linear``) for the losstune side."""
    study = tmp / f"week{len(list(tmp.glob('week*')))}" / "bench.yaml"
    study.parent.mkdir()
    study.write_text(STUDY.format(path=data, epochs=epochs, model=f", {model}" if model else ""))
    exe = str(Path(sys.executable).with_name("losstune"))
    env = {**os.environ, "LOSSTUNE_NOW": "2026-11-30T09:00"}
    start = time.perf_counter()
    done = subprocess.run([exe, "search", str(study), "--no-progress"], capture_output=True, text=True, env=env)
    ours = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"losstune search failed:\n{done.stdout}\n{done.stderr}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(
        study_name="bench-week", storage=f"sqlite:///{study.parent / 'bench-week.optuna.db'}"
    ).trials
    losses = [t.user_attrs["loss"] for t in trials]
    ours_best = max(t.value for t in trials if t.value is not None)
    if not reference:
        return {"trials": len(trials), "losstune_s": ours, "losstune_best_f1": ours_best}
    spec = {"path": str(data), "epochs": epochs, "losses": losses, "tracking_uri": f"sqlite:///{tmp / 'ref.db'}"}
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--reference-week", json.dumps(spec)], check=True)
    reference = time.perf_counter() - start
    return {
        "trials": len(trials),
        "losstune_s": ours,
        "reference_s": reference,
        "ratio": reference / ours,
        "losstune_best_f1": ours_best,
    }


def _config(loss: dict, epochs: int, repeats: int = 1):
    from objectives.config import CVConfig, LossConfig, ModelConfig, TrainConfig, TrialConfig

    return TrialConfig(
        loss=LossConfig(**loss),
        model=ModelConfig(hidden=(128, 64)),
        cv=CVConfig(folds=5, seed=0, repeats=repeats),
        train=TrainConfig(epochs=epochs, batch_size=256, lr=1e-3, device="cpu"),
    )


def _dataset(data: Path):
    from objectives.data import DataSpec, load_dataset

    return load_dataset(DataSpec(path=data, target="y", positive="yes", sep=";"))


def bench_repeats(data: Path, epochs: int) -> dict:
    from objectives.evaluate import evaluate

    ds = _dataset(data)
    loss = dict(alpha=None, gamma=2.0, bce_weight=0.5, focal_weight=0.5)
    times = {}
    evaluate(ds, _config(loss, 1, 1))  # warm-up, untimed
    for repeats in (1, 3):
        start = time.perf_counter()
        evaluate(ds, _config(loss, epochs, repeats))
        times[repeats] = time.perf_counter() - start
    return {"repeats_1_s": times[1], "repeats_3_s": times[3], "ratio": times[3] / times[1]}


def bench_together(data: Path, epochs: int) -> dict:
    from objectives.evaluate import evaluate, evaluate_many, prepare_folds

    ds = _dataset(data)
    configs = [
        _config(dict(alpha=None, gamma=3.0, bce_weight=b, focal_weight=f), epochs)
        for b, f in ((0.5, 0.5), (0.2, 0.8), (0.8, 0.2), (0.0, 1.0))
    ]
    prepared = prepare_folds(ds, configs[0].cv)
    evaluate(
        ds, configs[0].model_copy(update={"train": configs[0].train.model_copy(update={"epochs": 1})}), prepared
    )  # warm-up, untimed: first-call costs (allocator, kernels) are paid by neither side
    start = time.perf_counter()
    alone = [evaluate(ds, c, prepared) for c in configs]
    alone_s = time.perf_counter() - start
    start = time.perf_counter()
    together = evaluate_many(ds, configs, prepared)
    together_s = time.perf_counter() - start
    same = all(a.oof_score == b.oof_score for a, b in zip(together, alone))
    return {"together_s": together_s, "one_by_one_s": alone_s, "ratio": alone_s / together_s, "same_scores": same}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3,000 rows, 2 epochs")
    parser.add_argument("--only", choices=["week", "repeats", "together"])
    parser.add_argument("--reference-week", help=argparse.SUPPRESS)
    parser.add_argument(
        "--week-models",
        nargs="+",
        metavar="YAML",
        help="week only, no reference loop: one week per model setting, side by side ('' = the default model), "
        "e.g. --week-models '' 'dropout: 0.0, numeric_embedding: none' (0.2's plain MLP)",
    )
    args = parser.parse_args()
    if args.reference_week:
        reference_week(json.loads(args.reference_week))
        return 0
    epochs = 2 if args.quick else 20
    print(f"load average before: {load_average()} ({os.cpu_count()} cores)", flush=True)
    with tempfile.TemporaryDirectory(prefix="losstune-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = data_file(args.quick, tmp)
        for model in args.week_models or []:
            figures = bench_week(data, epochs, tmp, model, reference=False)
            shown = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
            print(f"week [{model or 'default model'}]: {shown}  (load average now {load_average()})", flush=True)
        for name, bench in (
            ("together", lambda: bench_together(data, epochs)),
            ("repeats", lambda: bench_repeats(data, epochs)),
            # the hand-written loop trains 0.2's plain MLP: the week against it trains the same model
            ("week", lambda: bench_week(data, epochs, tmp, PLAIN_MODEL)),
        ):
            if args.only in (None, name) and not args.week_models:
                figures = bench()
                shown = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
                print(f"{name}: {shown}  (load average now {load_average()})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
