"""How far a study's quoted score is from a held-out test score, and what repeats do to the seed-to-seed spread.

Run by hand (not by pytest), on tables of ``../shared/data/`` (skipped when absent):

    .venv/bin/python tests/benchmarks/bench_noise.py [--tables pima german_credit] [--splits 1]

For each table and 80/20 split (stratified, seed = split number): the default plan's grid phases (balance,
gamma, alpha: 10 trials) and its confirm phase (the reference and the two best, 3 repeats on a fresh seed) are
run on the 80 % through :func:`search.study.plan.next_step` itself, with the real ``evaluate`` (5 folds x 20 epochs,
batch 256, hidden 128-64, lr 1e-3). Then the configuration chosen by ``mean`` and by ``confirmed`` is trained on
the whole 80 % (``fit_final_model``, as ``losstune train`` does) and scored on the 20 % at its exported threshold,
beside the estimate the export would quote. The reference is trained and tested the same way.

Where the engine does not run repeats yet (``EvaluationResult`` without ``repeats``), a confirm trial's R repeats
are emulated as R evaluations on seeds ``seed, seed+1, ...``: fold scores concatenated, OOF score the mean of the
repeats', threshold chosen on the pooled OOF predictions, honest score the mean of the repeats'.

Spread: one configuration (the reference) evaluated on the 80 % with 12 CV seeds; the seed-to-seed std of its
OOF score with 1 repeat, against the std of the mean of 3 seeds (4 disjoint triples, and every triple).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from objectives.config import CVConfig, ModelConfig, TrainConfig, TrialConfig
from objectives.data import Dataset, DataSpec, load_dataset
from objectives.evaluate import evaluate, stratified_folds
from objectives.final import fit_final_model
from objectives.stats import compare, corrected_se
from objectives.threshold import best_threshold, score_at
from search.study.loss_point import checked
from search.study.phases import DEFAULT_PLAN, default_reference
from search.study.plan import PlanTrial, config_key, next_step, trial_cv

# the shared tables: $LOSSTUNE_SHARED_DATA, else the first of ../shared/data beside the checkout or above it
_HERE = Path(__file__).resolve().parents[2]
DATA = Path(
    os.environ.get("LOSSTUNE_SHARED_DATA")
    or next(
        (p for p in (_HERE.parent / "shared" / "data", _HERE.parent.parent / "shared" / "data") if p.is_dir()),
        _HERE.parent / "shared" / "data",
    )
)
TABLES = {
    "pima": DataSpec(path=DATA / "pima_indians_diabetes.csv", target="Outcome"),
    "german_credit": DataSpec(path=DATA / "german_credit.csv", target="bad_credit"),
    "phoneme": DataSpec(path=DATA / "phoneme.csv", target="class"),
    "islp_default": DataSpec(path=DATA / "islp_default.csv", target="default", positive="Yes"),
}
BASE = TrialConfig(
    model=ModelConfig(hidden=(128, 64)),
    train=TrainConfig(epochs=20, batch_size=256, lr=1e-3, device="cpu"),
    cv=CVConfig(folds=5, seed=0),
)
PHASES = tuple(p for p in DEFAULT_PLAN if p.kind != "tpe")  # the week: grid phases and confirm


def subset(ds: Dataset, rows: np.ndarray, tag: str) -> Dataset:
    return replace(
        ds, features=ds.features.iloc[rows].reset_index(drop=True), y=ds.y[rows], fingerprint=f"{ds.fingerprint}:{tag}"
    )


def run_trial(ds: Dataset, config: TrialConfig) -> dict:
    """One trial's figures; repeats emulated when the engine has none (see the module's docstring)."""
    r = config.cv.repeats
    first = evaluate(ds, config)
    if getattr(first, "repeats", 1) == r:
        return dict(
            value=first.oof_score,
            fold_scores=list(first.fold_scores),
            honest=first.honest_score_mean,
            threshold=first.threshold,
            seconds=first.seconds,
        )
    runs = [first] + [
        evaluate(ds, config.model_copy(update={"cv": config.cv.model_copy(update={"seed": config.cv.seed + i})}))
        for i in range(1, r)
    ]
    pooled = best_threshold(np.tile(ds.y, r), np.concatenate([x.oof_proba for x in runs]), config.metric)
    return dict(
        value=float(np.mean([score_at(ds.y, x.oof_proba, pooled.threshold, config.metric) for x in runs])),
        fold_scores=[s for x in runs for s in x.fold_scores],
        honest=float(np.mean([x.honest_score_mean for x in runs])),
        threshold=pooled.threshold,
        seconds=sum(x.seconds for x in runs),
    )


def week(ds: Dataset) -> tuple[list[PlanTrial], dict[int, dict]]:
    records: list[PlanTrial] = []
    figures: dict[int, dict] = {}
    while True:
        step = next_step(PHASES, records, study_seed=BASE.cv.seed)
        if step is None:
            return records, figures
        cv = trial_cv(BASE.cv, step)
        config = BASE.model_copy(update={"loss": checked(step.loss), "cv": cv})
        f = run_trial(ds, config)
        n = len(records)
        records.append(
            PlanTrial(
                n,
                step.phase.name,
                "COMPLETE",
                step.loss,
                value=f["value"],
                cv=None if step.cv is None else cv.model_dump(),
                cv_seed=cv.seed,
                fold_scores=tuple(f["fold_scores"]),
                folds=cv.folds,
            )
        )
        figures[n] = {**f, "config": config}


def test_score(train: Dataset, test: Dataset, config: TrialConfig, threshold: float) -> float:
    model = fit_final_model(train, config)
    return score_at(test.y, model.predict_proba(test.features), threshold, config.metric)


def one_split(name: str, ds: Dataset, split: int) -> dict:
    (train_rows, test_rows), *_ = stratified_folds(ds.y, 5, split)  # one fold of five: 80 / 20
    train, test = subset(ds, train_rows, f"train{split}"), subset(ds, test_rows, f"test{split}")
    start = time.perf_counter()
    records, figures = week(train)
    ref_key = config_key(default_reference(PHASES))
    study = [r for r in records if r.cv is None]
    confirm = [r for r in records if r.cv is not None]
    mean_pick = max(study, key=lambda r: (r.value, -r.number))
    conf_pick = max(confirm, key=lambda r: (r.value, -r.number))
    ref_study = next(r for r in study if config_key(r.loss) == ref_key)
    ref_conf = next(r for r in confirm if config_key(r.loss) == ref_key)
    out = {"table": name, "split": split, "rows": (train.n_rows, test.n_rows), "seconds": time.perf_counter() - start}
    for label, pick, ref in (("mean", mean_pick, ref_study), ("confirmed", conf_pick, ref_conf)):
        f = figures[pick.number]
        c = compare(pick.fold_scores, ref.fold_scores, pick.folds, diff=pick.value - ref.value)
        out[label] = dict(
            trial=pick.number,
            loss=pick.loss,
            oof=pick.value,
            se=corrected_se(pick.fold_scores, pick.folds),
            honest=f["honest"],
            test=test_score(train, test, f["config"], f["threshold"]),
            vs_ref=c.text(4),
            ref_test=test_score(train, test, figures[ref.number]["config"], figures[ref.number]["threshold"]),
        )
    return out


def spread(name: str, ds: Dataset, seeds: int = 12) -> dict:
    (train_rows, _), *_ = stratified_folds(ds.y, 5, 0)
    train = subset(ds, train_rows, "train0")
    loss = default_reference(PHASES)
    scores = np.array(
        [
            evaluate(train, BASE.model_copy(update={"loss": loss, "cv": CVConfig(folds=5, seed=s)})).oof_score
            for s in range(seeds)
        ]
    )
    disjoint = scores.reshape(-1, 3).mean(axis=1)
    every = np.array([scores[list(c)].mean() for c in itertools.combinations(range(seeds), 3)])
    return {
        "table": name,
        "std_1": scores.std(ddof=1),
        "std_3_disjoint": disjoint.std(ddof=1),
        "std_3_all_triples": every.std(ddof=1),
        "mean": scores.mean(),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", nargs="+", default=["pima", "german_credit"], choices=sorted(TABLES))
    parser.add_argument("--splits", type=int, default=1)
    parser.add_argument("--no-spread", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    for name in args.tables:
        spec = TABLES[name]
        if not spec.path.exists():
            print(f"{name}: {spec.path} not found, skipped")
            continue
        ds = load_dataset(spec)
        for split in range(args.splits):
            r = one_split(name, ds, split)
            print(f"\n{name} split {split} (train {r['rows'][0]}, test {r['rows'][1]} rows, {r['seconds']:.0f}s)")
            for label in ("mean", "confirmed"):
                m = r[label]
                print(
                    f"  by {label:<9} t{m['trial']:02d} OOF {m['oof']:.4f} ± {m['se']:.4f}  quoted (honest) "
                    f"{m['honest']:.4f}  test {m['test']:.4f}  quoted-test {m['honest'] - m['test']:+.4f}  "
                    f"OOF-test {m['oof'] - m['test']:+.4f}  vs reference {m['vs_ref']}  "
                    f"reference test {m['ref_test']:.4f}"
                )
        if not args.no_spread:
            s = spread(name, ds)
            print(
                f"  spread over 12 CV seeds of the reference: std 1 repeat {s['std_1']:.4f}, mean of 3: "
                f"{s['std_3_disjoint']:.4f} (4 disjoint triples) / {s['std_3_all_triples']:.4f} (all triples)"
            )
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
