"""Commands that train nothing answer at once: ``--help``, ``status``, ``search`` when the week's budget is spent,
and bad input. They must not import torch (nor pandas, scikit-learn or MLflow, except pandas to read a data file
that exists and MLflow to repair what a dead worker left): checked here in a real process with
``python -X importtime``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_study

WEEK = "2026-11-18T10:00:00"
HEAVY = {"torch", "mlflow", "sklearn", "matplotlib", "scipy", "pandas"}


def imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``losstune ARGS`` with ``-X importtime``; the top-level packages it imported."""
    env = dict(os.environ, LOSSTUNE_NOW=WEEK, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "search.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    names = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", proc.stderr, re.M)}
    proc.stderr = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return proc, names


def write_study(directory: Path, name: str = "fast") -> Path:
    return tiny_study(directory, name, budget=2, rows=120, data_seed=1, epochs=1)


@pytest.fixture(scope="module")
def used_study(tmp_path_factory) -> Path:
    """A study whose week's budget (2) is spent by two real trials of one phase: status compares them."""
    path = write_study(tmp_path_factory.mktemp("used"))
    proc, names = imported("search", str(path), "--no-progress", cwd=path.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "torch" in names  # the check below can see torch when it is imported
    return path


def test_help_imports_nothing_heavy(tmp_path):
    proc, names = imported("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "usage: losstune" in proc.stdout
    assert not names & (HEAVY | {"optuna", "sqlalchemy", "pydantic"})


def test_status_of_a_used_study(used_study):
    proc, names = imported("status", str(used_study), cwd=used_study.parent)
    assert proc.returncode == 0, proc.stderr
    assert "budget 2026-W47: 2/2 used, 0 left" in proc.stdout
    assert "choices (each against its closest rival" in proc.stdout  # a paired verdict, with its p-value
    assert not names & HEAVY, names & HEAVY


def test_status_json_of_a_used_study_is_strict_json(used_study):
    import json

    proc, names = imported("status", str(used_study), "--json", cwd=used_study.parent)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"{c} in status --json"))
    assert status["spent"] == 2 and len(status["trials"]) == 2
    assert not names & HEAVY


def test_status_of_a_fresh_study(tmp_path):
    path = write_study(tmp_path)
    proc, names = imported("status", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("losstune status: error: study 'fast' has no storage")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not names & HEAVY
    assert not (tmp_path / "fast.optuna.db").exists()


def test_search_with_the_budget_spent(used_study):
    proc, names = imported("search", str(used_study), "--no-progress", cwd=used_study.parent)
    # the first line says what it is opening (before any slow step); the last, that the week is spent
    last = proc.stdout.strip().splitlines()[-1]
    assert (proc.returncode, last, proc.stderr.strip()) == (0, "budget for 2026-W47 spent: 2/2", "")
    assert not names & HEAVY, names & HEAVY
    assert "data" not in proc.stdout and "MLflow" not in proc.stdout  # it says it opens only what it opens


def test_search_with_a_budget_of_0_creates_nothing(tmp_path):
    path = write_study(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc, names = imported("search", str(path), "--budget", "0", "--no-progress", cwd=tmp_path)
    assert (proc.returncode, proc.stderr.strip()) == (0, ""), proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "budget for 2026-W47 is 0: nothing to run (study 'fast' not created)"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no Optuna database, no MLflow store
    assert not names & HEAVY, names & HEAVY


def test_search_with_the_budget_spent_does_not_read_the_data(used_study, tmp_path):
    """Nothing is trained, so the data is not read: a renamed data file does not matter until there is budget."""
    data = used_study.parent / "data.csv"
    moved = tmp_path / "data.csv"
    data.rename(moved)
    try:
        proc, names = imported("search", str(used_study), "--no-progress", cwd=used_study.parent)
        assert (proc.returncode, proc.stdout.strip().splitlines()[-1]) == (0, "budget for 2026-W47 spent: 2/2")
        proc, names = imported("search", str(used_study), "--budget", "1", "--no-progress", cwd=used_study.parent)
        last = proc.stdout.strip().splitlines()[-1]
        assert last == "budget for 2026-W47 spent: 2/1 (--budget 1; the study file's trials_per_week is 2)"
        proc, names = imported("search", str(used_study), "--budget", "3", "--no-progress", cwd=used_study.parent)
        assert proc.returncode == 2 and "data file not found" in proc.stderr  # budget left: the data is needed
        assert not names & HEAVY  # the path is checked before pandas is imported
    finally:
        moved.rename(data)


def test_bad_study_file(tmp_path):
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace("plan: default", "plan: default\ngama: 2"))
    proc, names = imported("search", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and "gama" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not names & HEAVY


def test_missing_data_file(tmp_path):
    path = write_study(tmp_path)
    (tmp_path / "data.csv").unlink()
    proc, names = imported("search", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and "data file not found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not names & HEAVY  # the path is checked before pandas is imported
    assert not list(tmp_path.glob("*.db"))


def test_evaluate_with_a_missing_data_file(tmp_path):
    proc, names = imported("evaluate", "--data", str(tmp_path / "nope.csv"), "--target", "y", cwd=tmp_path)
    assert proc.returncode == 2 and "data file not found" in proc.stderr
    assert "on the command line to the current directory" in proc.stderr  # where a --data path is looked for
    assert not names & (HEAVY | {"optuna"})
