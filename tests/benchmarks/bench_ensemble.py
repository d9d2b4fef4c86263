"""The week's trials as one model, on unseen rows: the exported ensemble against the reference and the single
winner, and the quoted estimates against the test score.

Run by hand (not by pytest), on tables of ``../shared/data/`` (skipped when absent):

    .venv/bin/python tests/benchmarks/bench_ensemble.py [--tables phoneme german islp_default] [--splits 2] \
        [--epochs 10]

(``bank`` and ``credit``, 45,211 and 30,000 rows, are available too: a split of either takes several minutes of
CPU, too long on a 2-core machine shared with four other processes.)

For each table and 80/20 split (stratified, seed = split number): the default plan's grid phases (balance, gamma,
alpha: 10 trials, each phase one ``evaluate_many`` job as a search trains it, planned by
:func:`search.study.plan.pending_steps` itself) on the 80 %, 5 folds, hidden 128-64, lr 1e-3, batch 256 and
``--epochs`` (default 10, half the study default, to fit a shared 2-core machine). From the ten trials' OOF
probabilities: the single winner (best OOF, export ``--by mean``), the ensemble (:func:`select_ensemble`, what
``export --by ensemble`` writes) and the selection-corrected estimates (:func:`bbc_cv`, 50 bootstraps, as the
study computes them), timed. Then each is trained on the whole 80 % as ``losstune train`` does
(``fit_final_model``; the ensemble's members once with distinct seeds, by ``fit_final_ensemble``, and once all
with the study's seed, as ``export --by ensemble`` now writes them, to measure what distinct seeds add) and scored
on the 20 % at its threshold.
Writes a Markdown table to ``--out`` (default tests/benchmarks/ensemble_last_run.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from objectives.config import CVConfig, ModelConfig, TrainConfig, TrialConfig
from objectives.data import Dataset, DataSpec, load_dataset
from objectives.ensemble import select_ensemble
from objectives.evaluate import evaluate_many, prepare_folds, stratified_folds
from objectives.final import fit_final_model
from objectives.final_ensemble import fit_final_ensemble
from objectives.selection_bias import bbc_cv
from objectives.threshold import score_at
from search.model.export_ensemble import member_seed
from search.study.loss_point import checked
from search.study.phases import DEFAULT_PLAN
from search.study.plan import PlanTrial, pending_steps

_HERE = Path(__file__).resolve().parents[2]
DATA = Path(
    os.environ.get("LOSSTUNE_SHARED_DATA")
    or next(
        (p for p in (_HERE.parent / "shared" / "data", _HERE.parent.parent / "shared" / "data") if p.is_dir()),
        _HERE.parent / "shared" / "data",
    )
)
TABLES = {
    "bank": DataSpec(path=DATA / "bank_full.csv", target="y", positive="yes", sep=";", drop=("duration",)),
    "credit": DataSpec(path=DATA / "credit_card_default.csv", target="defaulted", drop=("ID",)),
    "phoneme": DataSpec(path=DATA / "phoneme.csv", target="class"),
    "stroke": DataSpec(path=DATA / "stroke.csv", target="stroke", drop=("id",)),
    "german": DataSpec(path=DATA / "german_credit.csv", target="bad_credit"),
    "islp_default": DataSpec(path=DATA / "islp_default.csv", target="default", positive="Yes"),
}
GRID = tuple(p for p in DEFAULT_PLAN if p.kind == "grid")  # the week: balance, gamma, alpha


def subset(ds: Dataset, rows: np.ndarray, tag: str) -> Dataset:
    return replace(
        ds, features=ds.features.iloc[rows].reset_index(drop=True), y=ds.y[rows], fingerprint=f"{ds.fingerprint}:{tag}"
    )


def week(ds: Dataset, base: TrialConfig) -> tuple[list[TrialConfig], list]:
    """The default plan's ten grid trials, phase by phase, each phase one job."""
    records: list[PlanTrial] = []
    configs, results = [], []
    prepared = prepare_folds(ds, base.cv)
    while True:
        steps = pending_steps(GRID, records, limit=16)
        if not isinstance(steps, list):
            return configs, results
        batch = [base.model_copy(update={"loss": checked(s.loss)}) for s in steps]
        for s, c, r in zip(steps, batch, evaluate_many(ds, batch, prepared)):
            records.append(PlanTrial(len(records), s.phase.name, "COMPLETE", s.loss, value=r.oof_score))
            configs.append(c)
            results.append(r)


def test_f1(model, test: Dataset, threshold: float, metric) -> float:  # type: ignore[no-untyped-def]
    return score_at(test.y, model.predict_proba(test.features), threshold, metric)


def one_split(name: str, ds: Dataset, split: int, base: TrialConfig) -> dict:
    (train_rows, test_rows), *_ = stratified_folds(ds.y, 5, split)  # one fold of five: 80 / 20
    train, test = subset(ds, train_rows, f"train{split}"), subset(ds, test_rows, f"test{split}")
    t0 = time.perf_counter()
    configs, results = week(train, base)
    t_week = time.perf_counter() - t0
    proba = np.stack([r.oof_proba_by_repeat for r in results]).astype(np.float32)  # as stored: float32
    fold = results[0].fold_of_row_by_repeat
    t0 = time.perf_counter()
    chosen = select_ensemble(proba, train.y, fold, base.metric, reference=0)
    t_select = time.perf_counter() - t0
    t0 = time.perf_counter()
    bbc = bbc_cv(proba, train.y, base.metric, reference=0, bootstraps=50, seed=0)
    t_bbc = time.perf_counter() - t0
    winner = int(np.argmax([r.oof_score for r in results]))
    members = chosen.members
    weights = [chosen.weights[i] for i in members]
    t0 = time.perf_counter()
    singles = {i: fit_final_model(train, configs[i]) for i in {0, winner, *members}}  # the study's seed
    distinct = fit_final_ensemble(
        train,
        [
            configs[i].model_copy(
                update={"cv": configs[i].cv.model_copy(update={"seed": member_seed(0, i, distinct=True)})}
            )
            for i in members
        ],
        weights,
    )
    t_final = time.perf_counter() - t0
    shared = sum(w * singles[i].predict_proba(test.features) for w, i in zip(weights, members))
    m = base.metric
    ens_test = test_f1(distinct, test, chosen.threshold, m)
    assert ens_test == ens_test  # a number
    return {
        "table": name,
        "split": split,
        "rows": (train.n_rows, test.n_rows),
        "members": {int(i): round(chosen.weights[i], 3) for i in members},
        "winner": winner,
        "ref_oof": results[0].oof_score,
        "winner_oof": results[winner].oof_score,
        "winner_honest": results[winner].honest_score_mean,
        "ens_oof": chosen.oof_score,
        "ens_honest": chosen.honest_score,
        "ens_bbc": bbc.ensemble.estimate,
        "single_bbc": bbc.best_single.estimate,
        "verdict": bbc.ensemble.verdict,
        "ref_test": test_f1(singles[0], test, results[0].threshold, m),
        "winner_test": test_f1(singles[winner], test, results[winner].threshold, m),
        "ens_test": ens_test,
        "ens_shared_seed_test": score_at(test.y, shared, chosen.threshold, m),
        "seconds": {"week": t_week, "select": t_select, "bbc": t_bbc, "final": t_final},
    }


def row(r: dict) -> str:
    s = r["seconds"]
    return (
        f"| {r['table']} | {r['split']} | {r['rows'][0]} / {r['rows'][1]} | {len(r['members'])} | "
        f"{r['ref_test']:.4f} | {r['winner_test']:.4f} | {r['ens_test']:.4f} | {r['ens_shared_seed_test']:.4f} | "
        f"{r['ens_test'] - r['ref_test']:+.4f} | {r['ens_test'] - r['winner_test']:+.4f} | "
        f"{r['ens_oof']:.4f} | {r['ens_honest']:.4f} | {r['ens_bbc']:.4f} | {r['winner_oof']:.4f} | "
        f"{r['winner_honest']:.4f} | {r['single_bbc']:.4f} | {r['verdict']} | {s['select']:.1f} | {s['bbc']:.1f} |"
    )


HEADER = (
    "| table | split | train / test rows | members | reference test F1 | winner test F1 | ensemble, distinct seeds | "
    "ensemble, shared seed (exported) | ens (distinct) - ref | ens (distinct) - winner | ens OOF | "
    "ens honest (nested) | ens BBC-CV | winner OOF | "
    "winner honest | winner BBC-CV | ens verdict vs ref | select s | BBC s |\n"
    "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| --- | ---: | ---: |"
)


def summary(rows: list[dict]) -> list[str]:
    def mean(key) -> float:  # type: ignore[no-untyped-def]
        return float(np.mean([key(r) for r in rows]))

    n = len(rows)
    lines = [
        f"over {n} splits: ensemble - reference {mean(lambda r: r['ens_test'] - r['ref_test']):+.4f} "
        f"(positive in {sum(r['ens_test'] > r['ref_test'] for r in rows)}), ensemble - winner "
        f"{mean(lambda r: r['ens_test'] - r['winner_test']):+.4f} (positive in "
        f"{sum(r['ens_test'] > r['winner_test'] for r in rows)}), winner - reference "
        f"{mean(lambda r: r['winner_test'] - r['ref_test']):+.4f}",
        "distinct seeds - shared seed (ensemble test F1): "
        f"{mean(lambda r: r['ens_test'] - r['ens_shared_seed_test']):+.4f} "
        f"(positive in {sum(r['ens_test'] > r['ens_shared_seed_test'] for r in rows)})",
        "estimate - test F1 (mean, mean |.|): "
        + "; ".join(
            f"{label} {mean(lambda r, k=k, t=t: r[k] - r[t]):+.4f}, {mean(lambda r, k=k, t=t: abs(r[k] - r[t])):.4f}"
            for label, k, t in (
                ("ensemble OOF", "ens_oof", "ens_test"),
                ("ensemble honest", "ens_honest", "ens_test"),
                ("ensemble BBC-CV", "ens_bbc", "ens_test"),
                ("winner OOF", "winner_oof", "winner_test"),
                ("winner honest", "winner_honest", "winner_test"),
                ("winner BBC-CV", "single_bbc", "winner_test"),
            )
        ),
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", nargs="+", default=["phoneme", "german", "islp_default"], choices=sorted(TABLES))
    parser.add_argument("--splits", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ensemble_last_run.md"))
    args = parser.parse_args()
    base = TrialConfig(
        model=ModelConfig(hidden=(128, 64)),
        train=TrainConfig(epochs=args.epochs, batch_size=256, lr=1e-3, device="cpu"),
        cv=CVConfig(folds=5, seed=0),
    )
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [os.getloadavg()[0]]
    rows = []
    for name in args.tables:
        spec = TABLES[name]
        if not spec.path.exists():
            print(f"{name}: {spec.path} not found, skipped")
            continue
        ds = load_dataset(spec)
        for split in range(args.splits):
            r = one_split(name, ds, split, base)
            loads.append(os.getloadavg()[0])
            rows.append(r)
            print(row(r), f"week {r['seconds']['week']:.0f}s final {r['seconds']['final']:.0f}s", flush=True)
    lines = [
        "# bench_ensemble.py: last run",
        "",
        f"Started {started}; {' '.join(sys.argv[1:]) or 'defaults'}; epochs {args.epochs}, 5 folds, hidden 128-64, "
        f"lr 1e-3, batch 256; load average (1 min) at start and after each split: "
        f"{', '.join(f'{x:.1f}' for x in loads)} (2-core machine shared with other work).",
        "",
        HEADER,
        *(row(r) for r in rows),
        "",
        *(f"- {line}" for line in summary(rows)),
        "",
        "Seconds per split (week / final training): "
        + ", ".join(f"{r['table']}#{r['split']} {r['seconds']['week']:.0f}/{r['seconds']['final']:.0f}" for r in rows),
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-6:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
