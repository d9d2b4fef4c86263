"""Peak memory of ``losstune predict`` against the number of rows: it streams the test file in chunks, so the
peak should stay flat (the target: a 2,000,000-row file within 0.3 GB of a 1,000-row one).

Run by hand (not part of the test suite): ``.venv/bin/python tests/benchmarks/bench_predict_memory.py
[--rows 1000 2000000]``. It trains a tiny model once in a temporary directory, writes one test file per row
count (numeric, categorical and id columns, a few blanks) and runs each ``losstune predict`` as its own process
under ``/usr/bin/time -v``, reporting the maximum resident set size and the wall time.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.model_fixture import make_model_dir  # noqa: E402


def write_test_file(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` rows like the model's training data, written in blocks so that the benchmark itself stays small."""
    rng = np.random.default_rng(seed)
    block = 200_000
    with open(path, "w", encoding="utf-8", newline="") as f:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            frame = pd.DataFrame(
                {
                    "row_id": [f"T{i:08d}" for i in range(start, start + n)],
                    "num1": rng.normal(size=n).round(4),
                    "num2": (rng.normal(5.0, 2.0, size=n)).round(3),
                    "color": rng.choice(np.array(["red", "green", "blue"], dtype=object), size=n),
                }
            )
            frame.loc[frame.index[::97], "num1"] = np.nan
            frame.to_csv(f, index=False, header=start == 0, lineterminator="\n")


def peak_rss(model: Path, test: Path, out: Path) -> tuple[float, float]:
    """(maximum resident set size in GB, wall seconds) of one ``losstune predict`` process."""
    losstune = Path(sys.executable).with_name("losstune")
    done = subprocess.run(
        ["/usr/bin/time", "-v", str(losstune), "predict", str(model), str(test), "-o", str(out), "--proba"],
        capture_output=True,
        text=True,
        check=True,
    )
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    return kb * 1024 / 1e9, hours * 3600 + minutes * 60 + seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 2_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="losstune-bench-predict-") as tmp:
        root = Path(tmp)
        model = make_model_dir(root)["model"]
        results = []
        for rows in args.rows:
            test = root / f"test_{rows}.csv"
            write_test_file(test, rows)
            gb, seconds = peak_rss(model, test, root / f"out_{rows}.csv")
            with open(root / f"out_{rows}.csv") as out:
                assert sum(1 for _ in out) == rows + 1
            results.append((rows, gb, seconds, test.stat().st_size / 1e6))
            test.unlink()
        print("| rows | file MB | peak RSS GB | wall s |\n| ---: | ---: | ---: | ---: |")
        for rows, gb, seconds, mb in results:
            print(f"| {rows:,} | {mb:.0f} | {gb:.3f} | {seconds:.1f} |")
        growth = results[-1][1] - results[0][1]
        print(
            f"peak RSS growth from {results[0][0]:,} to {results[-1][0]:,} rows: {growth:.3f} GB "
            "(target: within 0.3 GB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
