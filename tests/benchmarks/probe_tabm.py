"""Probe (run by hand, not by pytest): would a TabM-style ensemble in one network close the census gap?

TabM-mini (Gorishniy et al. 2024, "TabM: Advancing Tabular Deep Learning with Parameter-Efficient Ensembling"):
k members share one MLP; member i multiplies the input by its own vector ``r_i`` (initialised to random signs)
and has its own output head. Training minimises the mean of the members' losses (each member is trained as a
model of its own, not their mean logit); the prediction is the mean of the members' probabilities.

The engine cannot train it as it stands: a trial's loss is one logit per row, so this probe trains with its own
plain loop, side by side with the default MLP in the same loop, the same preprocessing (today's default: target-
aware piecewise-linear bins, ``objectives.preprocess.make_preprocessor``), the same loss (bce 0.5 + focal 0.5,
gamma 2), batch 256, Adam lr 1e-3, 20 epochs. One stratified 80/20 split per seed (as ``bench_model.py``), 5-fold
CV on the 80 % for the F1-optimal threshold of the pooled OOF probabilities, the model refitted on the 80 % and
scored on the 20 % at that threshold::

    .venv/bin/python tests/benchmarks/probe_tabm.py --csv census.csv --target class --positive '>50K' \\
        --seed 1 --variants mlp tabm16 tabmw16

Variants: ``mlp`` (128-64, dropout 0.15: the default model), ``tabmK`` (TabM-mini, K members, 128-64, dropout
0.15), ``tabmwK`` (TabM-mini, K members, 256-256, dropout 0.1). Each line gives OOF F1, the threshold, test F1
and the seconds of the whole variant (5 folds and the refit). The figures are in ``logs/probe_tabm_*.log``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from objectives.config import LossConfig, MetricConfig, NumericEncoding
from objectives.losses import combined_terms
from objectives.preprocess import make_preprocessor
from objectives.threshold import best_threshold

DEFAULT_ENCODING = NumericEncoding(scaling="standard", bins=16, target_bins=True)


def _body(n_features: int, hidden: tuple[int, ...], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    return nn.Sequential(*layers), width


class MLP(nn.Module):
    """The default model: one logit per row, as ``[B, 1]`` (one member)."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.body, width = _body(n_features, (128, 64), 0.15)
        self.head = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class TabMMini(nn.Module):
    """k members' logits per row, ``[B, k]``: a shared body on ``x * r_i``, a head per member."""

    def __init__(self, n_features: int, k: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.body, width = _body(n_features, hidden, dropout)
        self.r = nn.Parameter(torch.randint(0, 2, (k, n_features)).float() * 2 - 1)
        bound = width**-0.5  # nn.Linear's default init, one head per member
        self.head_weight = nn.Parameter(torch.empty(k, width).uniform_(-bound, bound))
        self.head_bias = nn.Parameter(torch.zeros(k))

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.body(x.unsqueeze(1) * self.r)  # [B, k, width]
        return (hidden * self.head_weight).sum(-1) + self.head_bias


def build(variant: str, n_features: int) -> nn.Module:
    if variant == "mlp":
        return MLP(n_features)
    if variant.startswith("tabmw"):
        return TabMMini(n_features, int(variant[5:]), (256, 256), 0.1)
    if variant.startswith("tabm"):
        return TabMMini(n_features, int(variant[4:]), (128, 64), 0.15)
    raise SystemExit(f"unknown variant {variant!r}: mlp, tabmK or tabmwK")


def fit_predict(
    variant: str,
    train: tuple[pd.DataFrame, np.ndarray],
    rows: pd.DataFrame,
    seed: int,
    epochs: int,
    columns: tuple[list[str], list[str]],
) -> np.ndarray:
    """The mean member probability on ``rows`` of a model trained on ``train`` (preprocessing fitted there)."""
    pre = make_preprocessor(*columns, DEFAULT_ENCODING)
    x = torch.tensor(pre.fit_transform(train[0], train[1]), dtype=torch.float32)
    x_rows = torch.tensor(pre.transform(rows), dtype=torch.float32)
    y = torch.tensor(train[1], dtype=torch.float32)
    torch.manual_seed(seed)
    model = build(variant, x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=order)
        for start in range(0, len(x), 256):
            batch = perm[start : start + 256]
            logits = model(x[batch])  # [b, k]: every member scored on the row's label
            loss = combined_terms(logits, y[batch].unsqueeze(1).expand_as(logits), LossConfig()).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(x_rows)).mean(1).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--positive", help="the positive label (default: the last in sorted order)")
    parser.add_argument("--sep", default=",")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--variants", nargs="+", default=["mlp", "tabm16"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    table = pd.read_csv(args.csv, sep=args.sep)
    labels = table[args.target].astype(str).str.strip()
    y = (labels == (args.positive or sorted(labels.unique())[-1])).to_numpy(dtype=np.int64)
    features = table.drop(columns=[args.target])
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(features[c])]
    columns = (numeric, [c for c in features if c not in numeric])
    x_train, x_test, y_train, y_test = train_test_split(features, y, test_size=0.2, stratify=y, random_state=args.seed)
    x_train = x_train.reset_index(drop=True)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x_train, y_train))
    for variant in args.variants:
        start = time.perf_counter()
        oof = np.zeros(len(y_train))
        for fold, (fit_rows, scored_rows) in enumerate(folds):
            train = (x_train.iloc[fit_rows], y_train[fit_rows])
            oof[scored_rows] = fit_predict(variant, train, x_train.iloc[scored_rows], fold, args.epochs, columns)
        choice = best_threshold(y_train, oof, MetricConfig())
        test = fit_predict(variant, (x_train, y_train), x_test, 99, args.epochs, columns)
        print(
            f"{args.csv.stem} seed {args.seed} {variant}: oof {choice.score:.4f} thr {choice.threshold:.3f} "
            f"test {f1_score(y_test, test >= choice.threshold):.4f} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
