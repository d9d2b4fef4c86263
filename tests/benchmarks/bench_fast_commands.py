"""Benchmark: the commands that train nothing, each timed as a whole process (interpreter start included).

Run by hand from the repository root (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_fast_commands.py            # the demo study after its 10-trial week
    .venv/bin/python tests/benchmarks/bench_fast_commands.py --runs 9

It copies ``studies/`` to a temporary directory, spends the demo's week there (``losstune search``, untimed), then
runs each command ``--runs`` times: ``--help``, ``status`` (ten trials, their verdicts and the phase choices),
``search`` with the week's budget spent, a study file with a typo, a study whose data file is missing, and
``evaluate`` of a missing file. Each line gives the wall-clock seconds (min, median, max) and the CPU seconds of
the median run, and whether the command imported torch (``python -X importtime``). Goal: under 1.5 s each.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1].parent
sys.path.insert(0, str(REPO))
from tests.test_fast_commands import WEEK, imported  # noqa: E402  (the test's own import check, run in a real process)

EXE = str(Path(sys.executable).with_name("losstune"))


def timed(args: list[str], cwd: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds of one ``losstune ARGS`` process, and its exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="losstune-fast-") as tmp_name:
        tmp = Path(tmp_name)
        shutil.copytree(REPO / "studies", tmp / "studies")
        study = tmp / "studies" / "demo.yaml"
        os.environ["LOSSTUNE_NOW"] = WEEK  # the week the import check runs in, so the budget is spent in it too
        subprocess.run([EXE, "search", str(study), "--no-progress"], cwd=tmp, check=True, capture_output=True)
        (tmp / "typo.yaml").write_text(study.read_text().replace("plan: default", "plan: default\ngama: 2"))
        (tmp / "no_data.yaml").write_text(study.read_text().replace("data/demo_churn.csv", "data/missing.csv"))
        commands = {
            "--help": ["--help"],
            "status (10 trials)": ["status", str(study)],
            "search, budget spent": ["search", str(study), "--no-progress"],
            "search, typo in the study file": ["search", str(tmp / "typo.yaml")],
            "search, data file missing": ["search", str(tmp / "no_data.yaml")],
            "evaluate, data file missing": ["evaluate", "--data", "missing.csv", "--target", "y"],
        }
        print(f"load average before: {load_average()} ({os.cpu_count()} cores); {args.runs} runs each", flush=True)
        for name, argv in commands.items():
            runs = sorted(timed(argv, tmp) for _ in range(args.runs))
            walls = [w for w, _, _ in runs]
            median = runs[len(runs) // 2]
            torch = "imports torch" if "torch" in imported(*argv, cwd=tmp)[1] else "no torch"
            print(
                f"{name:32s} {min(walls):5.2f} / {statistics.median(walls):5.2f} / {max(walls):5.2f} s wall, "
                f"{median[1]:4.2f} s CPU, exit {median[2]}, {torch}",
                flush=True,
            )
        print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
