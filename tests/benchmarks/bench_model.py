"""Benchmark: the default model before and after the model options, against the yardstick, on held-out rows.

Run by hand from the repository root (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_model.py --seeds 1 2 --rows 6000
    .venv/bin/python tests/benchmarks/bench_model.py --tables bank_full --seeds 1 --variants before after

For each table of ``../shared/data`` and each seed: a stratified 80/20 split (the 20 % is never seen until the
end). On the 80 %, exactly what a user does: 5-fold CV of the configuration (``objectives.evaluate``: threshold
chosen on the pooled OOF probabilities, and with checkpoints the ONE epoch count of the trial), then the model
refitted on all 80 % (``objectives.final.fit_final_model``, with the chosen epoch count) and its test F1 at the
CV threshold. The yardstick (``HistGradientBoostingClassifier``, defaults, native categories) goes the same way:
``objectives.baseline`` on the same 5 folds for its threshold, refitted on the 80 %, test F1 at that threshold.

``--rows N`` subsamples each table (stratified, before the split) to at most N rows, to fit a loaded machine;
``--rows 0`` keeps every row.
``before`` is losstune 0.2's plain MLP (no dropout, no embedding); every other variant changes it by the options it
names (so ``ple_target_dropout`` is today's default, also run as ``default``). The loss stays the default (bce 0.5
+ focal 0.5, gamma 2). The table is printed and written to
``tests/benchmarks/model_last_run.md`` (overwritten).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")

# name: (file, target, sep, drop, kind)
TABLES = {
    "bank_full": ("bank_full.csv", "y", ";", (), "mixed"),
    "credit_card_default": ("credit_card_default.csv", "defaulted", ",", ("ID",), "numeric"),
    "mammography": ("mammography.csv", "class", ",", (), "numeric, 2.3 % positive"),
    "german_credit": ("german_credit.csv", "bad_credit", ",", (), "mixed"),
    # not in ../shared/data: the UCI census income table (adult.data, 32,561 rows), given with --census PATH
    "census": ("census.csv", "class", ",", (), "mixed, census"),
}

CENSUS: Path | None = None
# losstune 0.2's default model: each variant's settings are applied on top of it (_run_model)
PLAIN_MODEL = {"dropout": 0.0, "numeric_embedding": "none"}
VARIANTS = {
    "before": {"model": {}, "train": {}},
    "default": {"model": {key: None for key in PLAIN_MODEL}, "train": {}},  # None: today's default
    "robust": {"model": {"numeric_scaling": "robust"}, "train": {}},
    "quantile": {"model": {"numeric_scaling": "quantile"}, "train": {}},
    "adamw": {"model": {}, "train": {"optimizer": "adamw", "weight_decay": 1e-2}},
    "cosine": {"model": {}, "train": {"lr_schedule": "cosine"}},
    "ckpt40": {"model": {}, "train": {"epochs": 40, "checkpoint_every": 5}},
    "ple": {"model": {"numeric_embedding": "piecewise_linear"}, "train": {}},
    "ple8": {"model": {"numeric_embedding": "piecewise_linear", "embedding_bins": 8}, "train": {}},
    "ple_ckpt40": {
        "model": {"numeric_embedding": "piecewise_linear"},
        "train": {"epochs": 40, "checkpoint_every": 5},
    },
    "ple_ckpt20": {"model": {"numeric_embedding": "piecewise_linear"}, "train": {"checkpoint_every": 5}},
    "ple_drop": {
        "model": {"numeric_embedding": "piecewise_linear", "dropout": 0.2},
        "train": {"checkpoint_every": 5},
    },
    "ple_drop_wd": {
        "model": {"numeric_embedding": "piecewise_linear", "dropout": 0.2},
        "train": {"checkpoint_every": 5, "optimizer": "adamw", "weight_decay": 1e-2},
    },
    "ple_wide": {
        "model": {"numeric_embedding": "piecewise_linear", "hidden": [256, 256], "dropout": 0.2},
        "train": {"checkpoint_every": 5},
    },
    "ple_target": {"model": {"numeric_embedding": "piecewise_linear_target"}, "train": {}},
    "dropout": {"model": {"dropout": 0.15}, "train": {}},
    "ple_target_dropout": {"model": {"numeric_embedding": "piecewise_linear_target", "dropout": 0.15}, "train": {}},
    "ple_adamw": {
        "model": {"numeric_embedding": "piecewise_linear"},
        "train": {"optimizer": "adamw", "weight_decay": 1e-2},
    },
}


def _split_table(name: str, rows: int | None, seed: int, tmp: Path) -> tuple[Path, Path, str]:
    """Train (80 %) and test (20 %) CSVs, stratified, of the table subsampled to ``rows``."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    file, target, sep, drop, _ = TABLES[name]
    df = pd.read_csv(CENSUS if name == "census" else DATA / file, sep=sep).drop(columns=list(drop))
    if rows and len(df) > rows:
        df, _ = train_test_split(df, train_size=rows, stratify=df[target], random_state=seed)
    train, test = train_test_split(df, test_size=0.2, stratify=df[target], random_state=seed)
    paths = tmp / f"{name}_{seed}_train.csv", tmp / f"{name}_{seed}_test.csv"
    train.to_csv(paths[0], index=False)
    test.to_csv(paths[1], index=False)
    return paths[0], paths[1], target


def _positive(name: str) -> str | None:
    return {"bank_full": "yes", "census": ">50K"}.get(name)


def _run_model(train_csv: Path, test_csv: Path, target: str, positive: str | None, variant: dict) -> dict:
    from sklearn.metrics import f1_score

    from objectives.config import TrialConfig
    from objectives.data import DataSpec, load_dataset
    from objectives.evaluate import evaluate
    from objectives.final import fit_final_model
    from search.model.export_trial import trial_epochs

    spec = DataSpec(path=train_csv, target=target, positive=positive)
    ds = load_dataset(spec)
    model = {k: v for k, v in {**PLAIN_MODEL, **variant["model"]}.items() if v is not None}
    config = TrialConfig(model=model, train={**variant["train"], "device": "cpu"})
    start = time.perf_counter()
    result = evaluate(ds, config)
    cv_seconds = time.perf_counter() - start
    model = fit_final_model(ds, trial_epochs(config, result.chosen_epochs))  # what export gives `train`
    test = load_dataset(DataSpec(path=test_csv, target=target, positive=ds.positive_label))
    proba = model.predict_proba(test.features[model.feature_columns])
    return {
        "oof": result.oof_score,
        "test": float(f1_score(test.y, proba >= result.threshold)),
        "cv_seconds": cv_seconds,
        "epochs": result.chosen_epochs,
    }


def _run_baseline(train_csv: Path, test_csv: Path, target: str, positive: str | None) -> dict:
    from sklearn.metrics import f1_score
    from threadpoolctl import threadpool_limits

    from objectives.baseline import _model_table, evaluate_baseline, yardstick_model
    from objectives.config import CVConfig, MetricConfig
    from objectives.data import DataSpec, load_dataset

    ds = load_dataset(DataSpec(path=train_csv, target=target, positive=positive))
    start = time.perf_counter()
    b = evaluate_baseline(ds, CVConfig(), MetricConfig())
    seconds = time.perf_counter() - start
    test = load_dataset(DataSpec(path=test_csv, target=target, positive=ds.positive_label))
    # one table of train and test rows, so that category codes agree; then split again
    import pandas as pd

    both = ds.__class__(**{**ds.__dict__, "features": pd.concat([ds.features, test.features], ignore_index=True)})
    table, categorical = _model_table(both)
    n = ds.n_rows
    with threadpool_limits(1, user_api="openmp"):
        model = yardstick_model(categorical, 0).fit(table[:n], ds.y)
    proba = model.predict_proba(table[n:])[:, 1]
    return {"oof": b.oof_score, "test": float(f1_score(test.y, proba >= b.threshold)), "cv_seconds": seconds}


def main() -> int:
    import tempfile

    p = argparse.ArgumentParser()
    p.add_argument("--tables", nargs="+", default=[t for t in TABLES if t != "census"])
    p.add_argument("--census", type=Path, help="the census income table (adult.data as CSV with a header)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rows", type=int, default=6000)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--out", type=Path, default=REPO / "tests" / "benchmarks" / "model_last_run.md")
    p.add_argument(
        "--from-logs",
        nargs="+",
        type=Path,
        metavar="LOG",
        help="no run: the table of the result lines printed by earlier runs (several runs' seeds together)",
    )
    args = p.parse_args()
    global CENSUS
    CENSUS = args.census
    if "census" in args.tables and CENSUS is None and not args.from_logs:
        p.error("the census table needs --census PATH")
    load = os.getloadavg()
    results: dict[tuple[str, str], list[dict]] = {}
    if args.from_logs:
        seeds = _read_logs(args.from_logs, results)
        args.seeds = sorted(seeds)
        _write(_report(results, args, load), args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            for seed in args.seeds:
                train_csv, test_csv, target = _split_table(name, args.rows, seed, Path(tmp))
                pos = _positive(name)
                r = _run_baseline(train_csv, test_csv, target, pos)
                results.setdefault((name, "yardstick"), []).append(r)
                print(name, seed, "yardstick", r, flush=True)
                for v in args.variants:
                    r = _run_model(train_csv, test_csv, target, pos, VARIANTS[v])
                    results.setdefault((name, v), []).append(r)
                    print(name, seed, v, r, flush=True)
                    # rewritten after every run: a run cut short still leaves what it measured
                    _write(_report(results, args, load), args.out)
    print("\n".join(_report(results, args, load)))
    return 0


def _write(lines: list[str], out: Path) -> None:
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _read_logs(logs: list[Path], results: dict[tuple[str, str], list[dict]]) -> set[int]:
    """The ``table seed variant {...}`` lines of earlier runs' output, into ``results``; the seeds seen."""
    import ast

    by_seed: dict[tuple[str, str], dict[int, dict]] = {}
    for log in logs:
        for line in log.read_text(encoding="utf-8").splitlines():
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[0] in TABLES and parts[3].startswith("{"):
                # a split measured in several runs (the yardstick is in each): the last run's figures, once
                by_seed.setdefault((parts[0], parts[2]), {})[int(parts[1])] = ast.literal_eval(parts[3])
    for key, runs in by_seed.items():
        results[key] = [runs[seed] for seed in sorted(runs)]
    return {seed for runs in by_seed.values() for seed in runs}


def _report(results: dict, args: argparse.Namespace, load: tuple[float, float, float]) -> list[str]:
    lines = [
        f"# bench_model: {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        (
            f"seeds {args.seeds}; each table subsampled (stratified) to at most {args.rows} rows, then 80/20; "
            if args.rows
            else f"seeds {args.seeds}; every row of each table, 80/20; "
        )
        + "5-fold CV on the 80 %; "
        + (
            f"rebuilt from the result lines of {', '.join(p.name for p in args.from_logs)} (their runs' load is "
            "in the note that reports them)"
            if args.from_logs
            else f"load average at start {load[0]:.1f} on {os.cpu_count()} cores"
        ),
        "",
        "| table | kind | model | test F1 (mean over seeds) | per seed | OOF F1 | test vs yardstick | test vs before "
        "| CV seconds | epochs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.tables:
        base = results.get((name, "yardstick"), [])
        base_test = statistics.mean(r["test"] for r in base) if base else float("nan")
        before = results.get((name, "before"), [])
        before_test = statistics.mean(r["test"] for r in before) if before else float("nan")
        for v in ["yardstick", *args.variants]:
            rs = results.get((name, v), [])
            if not rs:
                continue
            test = statistics.mean(r["test"] for r in rs)
            per = " ".join(f"{r['test']:.3f}" for r in rs)
            epochs = " ".join(str(r.get("epochs", "")) for r in rs) if v != "yardstick" else ""
            oof = statistics.mean(r["oof"] for r in rs)
            lines.append(
                f"| {name} | {TABLES[name][4]} | {v} | {test:.4f} | {per} | {oof:.4f} "
                f"| {test - base_test:+.4f} | {test - before_test:+.4f} "
                f"| {statistics.mean(r['cv_seconds'] for r in rs):.1f} | {epochs} |"
            )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
