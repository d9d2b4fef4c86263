"""Benchmark: ``losstune evaluate`` against a straightforward per-fold PyTorch reference.

Run by hand from the repository root (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_evaluate.py            # full run (several minutes)
    .venv/bin/python tests/benchmarks/bench_evaluate.py --quick    # smoke run (small data, few epochs)
    .venv/bin/python tests/benchmarks/bench_evaluate.py --repeat 3 # median of 3 timings
    .venv/bin/python tests/benchmarks/bench_evaluate.py --threads 1  # one torch thread on both sides

For each dataset, both sides run as a whole new process, wall clock, start-up and imports included:

* ``losstune evaluate --folds 5 --epochs 20 --batch-size 256 --lr 1e-3 --seed 0 --json`` (its JSON gives the
  OOF F1 and the threshold);
* the REFERENCE below, run by this script re-invoking itself with ``--reference SPEC``: the same stratified
  5-fold split, and per fold, one fold after the other, a ColumnTransformer fitted on the fold's training rows,
  a plain ``nn.Sequential`` MLP (128, 64), a ``DataLoader`` (shuffle, batch 256), Adam lr 1e-3, 20 epochs and
  ``objectives.losses.CombinedLoss`` with the CLI defaults; then the OOF probabilities and the F1-best threshold
  on a 0.01 grid with ``sklearn.metrics.f1_score``.

Target: speed-up (reference seconds / losstune seconds) >= 5 and |OOF F1 difference| <= 0.01. The OOF F1 is
the optimistic one (threshold chosen on the same rows) on both sides; losstune's threshold search is exact, the
reference's is a 0.01 grid, so losstune's F1 can only gain from that part.

The printed table is also written to ``tests/benchmarks/last_run.md`` (overwritten each run).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BANK_CSV = REPO.parent / "shared" / "data" / "bank_full.csv"
LAST_RUN = HERE / "last_run.md"

# the trial both sides run; the loss parameters are the CLI defaults (objectives.config.LossConfig)
FOLDS, EPOCHS, BATCH, LR, SEED = 5, 20, 256, 1e-3, 0
HIDDEN = (128, 64)
LOSS = dict(alpha=None, gamma=2.0, bce_weight=0.5, focal_weight=0.5)
TARGET_SPEEDUP, TARGET_F1_DIFF = 5.0, 0.01

CONTENTION_WARN = 0.10  # share of the machine's CPU used by other processes during a timed run
SYNTH_ROWS, QUICK_ROWS, QUICK_EPOCHS = 100_000, 10_000, 3


# ---------------------------------------------------------------------------------------------------------------
# the reference implementation (runs in its own process: ``--reference SPEC``)
# ---------------------------------------------------------------------------------------------------------------


def run_reference(spec: dict) -> dict:
    """One stratified K-fold CV trial, the ordinary way: one fold after the other, nn.Sequential + DataLoader."""
    start = time.perf_counter()
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

    sys.path.insert(0, str(REPO))
    from objectives.losses import CombinedLoss

    imported = time.perf_counter()
    torch.manual_seed(spec["seed"])

    df = pd.read_csv(spec["path"], sep=spec["sep"])
    y = (df[spec["target"]].astype(str) == spec["positive"]).to_numpy(dtype=np.int64)
    features = df.drop(columns=[spec["target"], *spec["drop"]])
    numeric = features.select_dtypes("number").columns.tolist()
    categorical = [c for c in features.columns if c not in numeric]

    def preprocessor() -> ColumnTransformer:
        return ColumnTransformer(
            [
                ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
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
        )

    oof = np.zeros(len(y), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=spec["folds"], shuffle=True, random_state=spec["seed"])
    for train_idx, val_idx in splitter.split(features, y):
        pre = preprocessor().fit(features.iloc[train_idx])
        x_train = torch.tensor(pre.transform(features.iloc[train_idx]), dtype=torch.float32)
        x_val = torch.tensor(pre.transform(features.iloc[val_idx]), dtype=torch.float32)
        y_train = torch.tensor(y[train_idx], dtype=torch.float32)

        layers: list[nn.Module] = []
        width = x_train.shape[1]
        for hidden in spec["hidden"]:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        model = nn.Sequential(*layers, nn.Linear(width, 1))
        criterion = CombinedLoss(**spec["loss"])
        optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"])
        loader = DataLoader(TensorDataset(x_train, y_train), batch_size=spec["batch_size"], shuffle=True)

        model.train()
        for _ in range(spec["epochs"]):
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = criterion(model(xb).squeeze(-1), yb)
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            oof[val_idx] = torch.sigmoid(model(x_val).squeeze(-1)).double().numpy()

    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    scores = [f1_score(y, (oof >= t).astype(int), zero_division=0) for t in grid]
    best = int(np.argmax(scores))
    return {
        "oof_score": float(scores[best]),
        "threshold": float(grid[best]),
        "seconds": time.perf_counter() - imported,  # in-process, after imports (like losstune's "seconds")
        "seconds_with_imports": time.perf_counter() - start,
        "n_rows": len(y),
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------------


def write_synthetic(path: Path, rows: int, seed: int = 0) -> None:
    """20 numeric + 3 categorical columns, ~10% positives, a learnable (partly non-linear) signal, a few NaNs."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_num = 20
    mixing = rng.normal(size=(n_num, n_num)) / np.sqrt(n_num)
    x = rng.normal(size=(rows, n_num)) @ (np.eye(n_num) + 0.5 * mixing)  # correlated features
    levels = {"region": 5, "channel": 8, "segment": 20}
    cats = {name: rng.integers(0, k, size=rows) for name, k in levels.items()}
    effects = {name: rng.normal(scale=0.6, size=k) for name, k in levels.items()}
    coef = np.zeros(n_num)
    coef[:8] = rng.normal(scale=0.8, size=8)
    signal = (
        x @ coef
        + 0.8 * x[:, 8] * x[:, 9]
        - 0.5 * (x[:, 10] ** 2)
        + np.sin(2.0 * x[:, 11])
        + sum(effects[name][cats[name]] for name in levels)
        + rng.logistic(scale=0.6, size=rows)
    )
    y = (signal >= np.quantile(signal, 0.90)).astype(int)  # ~10% positives
    frame = pd.DataFrame(x, columns=[f"x{i:02d}" for i in range(n_num)]).round(5)
    for name in levels:
        frame[name] = np.array([f"{name[:3]}_{v}" for v in range(levels[name])], dtype=object)[cats[name]]
    for col in ("x03", "x15"):  # missing values for the imputers to handle
        frame.loc[rng.random(rows) < 0.02, col] = np.nan
    frame.loc[rng.random(rows) < 0.02, "channel"] = np.nan
    frame["target"] = y
    frame.to_csv(path, index=False)


def datasets(args: argparse.Namespace, tmp: Path) -> list[dict]:
    out = []
    if "bank" in args.dataset:
        if not BANK_CSV.exists():
            print(f"[skip] bank: {BANK_CSV} not found (the shared data folder is absent)")
        else:
            path = BANK_CSV
            if args.quick:
                import pandas as pd

                path = tmp / "bank_quick.csv"
                pd.read_csv(BANK_CSV, sep=";").sample(n=QUICK_ROWS, random_state=0).to_csv(path, sep=";", index=False)
            out.append(dict(name="bank_full", path=str(path), sep=";", target="y", positive="yes", drop=["duration"]))
    if "synthetic" in args.dataset:
        rows = QUICK_ROWS if args.quick else SYNTH_ROWS
        path = tmp / f"synthetic_{rows}.csv"
        t0 = time.perf_counter()
        write_synthetic(path, rows)
        print(f"wrote synthetic table: {rows} rows -> {path} ({time.perf_counter() - t0:.1f}s)")
        out.append(
            dict(name=f"synthetic_{rows // 1000}k", path=str(path), sep=",", target="target", positive="1", drop=[])
        )
    return out


# ---------------------------------------------------------------------------------------------------------------
# timing both sides as whole processes
# ---------------------------------------------------------------------------------------------------------------


def losstune_exe() -> str:
    for candidate in (Path(sys.executable).parent / "losstune", REPO / ".venv" / "bin" / "losstune"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("losstune")
    if found is None:
        sys.exit("losstune executable not found: run `make venv` first")
    return found


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat), or None elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


WARM_UP = (
    "import torch, pandas, pydantic, sklearn.compose, sklearn.metrics, sklearn.model_selection, objectives.evaluate"
)


def warm_file_cache(data: str) -> None:
    """Import the libraries both sides use, and read the data, in an untimed process. Some machines (this
    project's development VM among them) evict idle files from the page cache within minutes, so that the
    start-up of whichever side ran first would include reading torch from disk; warming before each timed run
    times both sides with warm caches, as a user's second run of the day."""
    subprocess.run([sys.executable, "-c", WARM_UP], cwd=REPO, check=True, capture_output=True)
    Path(data).read_bytes()


def timed(cmd: list[str], data: str) -> tuple[float, dict, float | None]:
    """Wall-clock seconds of the whole process, the JSON object on the last line of its stdout, and the share of
    the machine's CPU that *other* processes used meanwhile (contention that slows the timing; None if unknown)."""
    warm_file_cache(data)
    busy0, own0 = _busy_cpu_seconds(), _children_cpu_seconds()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    busy1, own1 = _busy_cpu_seconds(), _children_cpu_seconds()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        sys.exit(f"command failed (exit {proc.returncode}): {' '.join(cmd)}")
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * (os.cpu_count() or 1))
    return wall, json.loads(proc.stdout.strip().splitlines()[-1]), others


def losstune_cmd(ds: dict, epochs: int, precision: str = "fp32") -> list[str]:
    cmd = [
        losstune_exe(),
        "evaluate",
        "--data",
        ds["path"],
        "--target",
        ds["target"],
        "--positive",
        ds["positive"],
        "--sep",
        ds["sep"],
    ]
    for col in ds["drop"]:
        cmd += ["--drop", col]
    return [
        *cmd,
        "--folds",
        str(FOLDS),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(BATCH),
        "--lr",
        f"{LR:g}",
        "--seed",
        str(SEED),
        "--precision",
        precision,
        "--json",
    ]


def reference_cmd(ds: dict, epochs: int) -> list[str]:
    spec = dict(
        path=ds["path"],
        sep=ds["sep"],
        target=ds["target"],
        positive=ds["positive"],
        drop=ds["drop"],
        folds=FOLDS,
        epochs=epochs,
        batch_size=BATCH,
        lr=LR,
        seed=SEED,
        hidden=list(HIDDEN),
        loss=LOSS,
    )
    return [sys.executable, str(Path(__file__).resolve()), "--reference", json.dumps(spec)]


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------


def _pct(share: float | None) -> str:
    return "?" if share is None else f"{100 * share:.0f}%"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str:
    """Short commit, plus a hash of any uncommitted change under objectives/ and search/ (the code measured)."""

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True).stdout

    try:
        rev = git("rev-parse", "--short", "HEAD").strip() or "unknown"
        dirty = git("status", "--porcelain", "--", "objectives", "search") + git(
            "diff", "HEAD", "--", "objectives", "search"
        )
    except OSError:
        return "unknown"
    if not dirty.strip():
        return rev
    import hashlib

    return (
        f"{rev} + uncommitted changes in objectives/ or search/ (diff {hashlib.sha1(dirty.encode()).hexdigest()[:8]})"
    )


def environment(revision: str) -> list[str]:
    import sklearn
    import torch

    return [
        f"- date: {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- losstune revision: {revision}",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores)",
        f"- torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}; "
        f"scikit-learn {sklearn.__version__}; Python {platform.python_version()}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark losstune evaluate against a per-fold reference.")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_ROWS} rows per dataset, {QUICK_EPOCHS} epochs"
    )
    parser.add_argument("--repeat", type=int, default=1, help="time each side N times and take the median")
    parser.add_argument(
        "--dataset",
        action="append",
        choices=["bank", "synthetic"],
        help="run only this dataset (repeatable; default: both)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS/MKL_NUM_THREADS for both timed processes (default: torch's own choice)",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="losstune's --precision (the reference always trains in fp32)",
    )
    parser.add_argument("--reference", metavar="SPEC", help=argparse.SUPPRESS)  # internal: the child process
    args = parser.parse_args()

    if args.reference:
        print(json.dumps(run_reference(json.loads(args.reference))))
        return 0
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        # set before torch is first imported here, and inherited by both timed processes
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    args.dataset = args.dataset or ["bank", "synthetic"]
    epochs = QUICK_EPOCHS if args.quick else EPOCHS

    revision = git_revision()
    env = environment(revision)
    print("\n".join(env))
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="losstune-bench-") as tmp:
        for ds in datasets(args, Path(tmp)):
            lt_runs, ref_runs = [], []
            for r in range(args.repeat):
                print(f"[{ds['name']}] run {r + 1}/{args.repeat}: losstune evaluate ...", flush=True)
                lt_runs.append(timed(losstune_cmd(ds, epochs, args.precision), ds["path"]))
                w, j, o = lt_runs[-1]
                print(
                    f"[{ds['name']}]   losstune  {w:8.1f}s  F1 {j['oof_score']:.4f}  ({j['seconds']:.1f}s in "
                    f"evaluate(); other processes {_pct(o)} of the CPU)",
                    flush=True,
                )
                print(f"[{ds['name']}] run {r + 1}/{args.repeat}: reference ...", flush=True)
                ref_runs.append(timed(reference_cmd(ds, epochs), ds["path"]))
                w, j, o = ref_runs[-1]
                print(
                    f"[{ds['name']}]   reference {w:8.1f}s  F1 {j['oof_score']:.4f}  ({j['seconds']:.1f}s after "
                    f"imports; other processes {_pct(o)} of the CPU)",
                    flush=True,
                )
            lt_s = statistics.median(w for w, _, _ in lt_runs)
            ref_s = statistics.median(w for w, _, _ in ref_runs)
            lt_f1 = statistics.median(j["oof_score"] for _, j, _ in lt_runs)
            ref_f1 = statistics.median(j["oof_score"] for _, j, _ in ref_runs)
            contention = [o for _, _, o in lt_runs + ref_runs if o is not None]
            rows_out.append(
                dict(
                    name=ds["name"],
                    rows=lt_runs[0][1]["n_rows"],
                    lt_s=lt_s,
                    ref_s=ref_s,
                    speedup=ref_s / lt_s,
                    lt_f1=lt_f1,
                    ref_f1=ref_f1,
                    diff=abs(lt_f1 - ref_f1),
                    lt_inner=statistics.median(j["seconds"] for _, j, _ in lt_runs),
                    ref_inner=statistics.median(j["seconds"] for _, j, _ in ref_runs),
                    contention=max(contention) if contention else None,
                    child_threads=ref_runs[0][1]["torch_threads"],
                    lt_thr=lt_runs[0][1]["threshold"],
                    ref_thr=ref_runs[0][1]["threshold"],
                    f1_varies=any(len({j["oof_score"] for _, j, _ in runs}) > 1 for runs in (lt_runs, ref_runs)),
                )
            )

    if not rows_out:
        print("no dataset to run")
        return 1
    lines = [
        "| dataset | rows | losstune s | reference s | speed-up | losstune OOF F1 | reference OOF F1 | abs F1 diff | "
        "pass |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    all_pass = True
    for r in rows_out:
        ok = r["speedup"] >= TARGET_SPEEDUP and r["diff"] <= TARGET_F1_DIFF
        all_pass &= ok
        lines.append(
            f"| {r['name']} | {r['rows']:,} | {r['lt_s']:.1f} | {r['ref_s']:.1f} | {r['speedup']:.2f}x | "
            f"{r['lt_f1']:.4f} | {r['ref_f1']:.4f} | {r['diff']:.4f} | {'PASS' if ok else 'FAIL'} |"
        )
    notes = [
        "",
        f"Seconds: wall clock of the whole process (start-up and imports included), median of {args.repeat} "
        f"run(s). Trial: {FOLDS} folds x {epochs} epochs, batch {BATCH}, lr {LR:g}, seed {SEED}, hidden "
        f"{','.join(map(str, HIDDEN))}, CombinedLoss(alpha=None, gamma=2, bce_weight=0.5, focal_weight=0.5); "
        f"losstune --precision {args.precision}, reference fp32.",
        f"Target: speed-up >= {TARGET_SPEEDUP:g}x and abs F1 diff <= {TARGET_F1_DIFF:g}: "
        f"**{'PASS' if all_pass else 'FAIL'}**"
        + (" (quick smoke run: not a measurement of the target)" if args.quick else ""),
        "",
    ]
    for r in rows_out:
        notes.append(
            f"- {r['name']}: inside the process, losstune evaluate() {r['lt_inner']:.1f}s, reference after imports "
            f"{r['ref_inner']:.1f}s; threshold losstune {r['lt_thr']:.4f} (exact), reference {r['ref_thr']:.2f} "
            f"(0.01 grid); torch threads in the timed processes {r['child_threads']}; other processes used at most "
            f"{_pct(r['contention'])} of the CPU during a timed run"
            + ("; NOTE: the F1 differed between repeats" if r["f1_varies"] else "")
        )
    busiest = max((r["contention"] for r in rows_out if r["contention"] is not None), default=None)
    if busiest is not None and busiest > CONTENTION_WARN:
        notes.append(
            f"- WARNING: other processes used up to {_pct(busiest)} of the CPU while a side was being timed; "
            "these timings are slowed, unevenly"
            + (
                ": rerun on a quiet machine"
                if args.threads == 1
                else " (torch's threads oversubscribe the cores): rerun on a quiet machine, or compare with --threads 1"
            )
        )
    revision_now = git_revision()
    if revision_now != revision:
        notes.append(f"- WARNING: losstune changed during the run ({revision} at the start, {revision_now} at the end)")
    command = "python tests/benchmarks/bench_evaluate.py " + " ".join(sys.argv[1:])
    report = "\n".join(lines + notes)
    print()
    print(report)
    LAST_RUN.write_text(
        "# Last run of bench_evaluate.py\n\n" + f"`{command.strip()}`\n\n" + "\n".join(env) + "\n\n" + report + "\n"
    )
    print(f"\n(written to {LAST_RUN.relative_to(REPO)})")
    return 0 if all_pass or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
