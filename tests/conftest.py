"""Shared fixtures: small synthetic tables written to ``tmp_path`` and a fast trial configuration.

Everything here is deliberately tiny (about a hundred rows, a few epochs) so the whole suite runs in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from objectives.config import CVConfig, ModelConfig, TrainConfig, TrialConfig
from objectives.data import Dataset, DataSpec, load_dataset

# The tensors in these tests are tiny: one intra-op thread is faster, and on a busy 2-core machine extra threads
# only spin against each other (a 20 ms gradcheck took seconds). Results stay deterministic either way.
torch.set_num_threads(1)
# ... and in the losstune processes the tests start: the suite runs on two workers (pytest -n 2), and each child
# left alone would spin one thread per core against the other worker's
os.environ.setdefault("OMP_NUM_THREADS", "1")


def synthetic_frame(
    n: int = 120, seed: int = 0, positive_rate: float = 0.3, missing: bool = True, target: str = "label"
) -> pd.DataFrame:
    """Mixed numeric / categorical features with a learnable binary target ``"yes"`` / ``"no"``.

    ``"yes"`` is the minority class (``positive_rate`` of the rows, rounded). With ``missing=True`` a few
    numeric and categorical cells are blank.
    """
    rng = np.random.default_rng(seed)
    num1 = rng.normal(size=n)
    num2 = rng.normal(loc=5.0, scale=2.0, size=n)
    color = rng.choice(np.array(["red", "green", "blue"]), size=n)
    score = 1.5 * num1 - 0.3 * num2 + (color == "red") + rng.normal(scale=0.5, size=n)
    n_pos = round(positive_rate * n)
    label = np.full(n, "no", dtype=object)
    label[np.argsort(-score)[:n_pos]] = "yes"
    df = pd.DataFrame({"num1": num1.round(4), "num2": num2.round(3), "color": color.astype(object), target: label})
    if missing:
        df.loc[rng.choice(n, size=max(1, n // 20), replace=False), "num1"] = np.nan
        df.loc[rng.choice(n, size=max(1, n // 20), replace=False), "color"] = np.nan
    return df


def tiny_study(
    directory: Path,
    name: str,
    *,
    budget: int,
    plan: str | None = "default",
    extra: str = "",
    rows: int = 240,
    data_seed: int = 3,
    cv_seed: int = 0,
    model: str = "{hidden: [8], dropout: 0.0}",
    epochs: int = 2,
    lr: float = 0.01,
) -> Path:
    """``directory/<name>.yaml``: a study of a small table (``data.csv`` beside it, ``rows`` rows of
    :func:`synthetic_frame` with ``data_seed`` and no blank cells), 3 folds, ``model`` trained ``epochs`` epochs.

    ``plan`` is what follows ``plan:`` (one line such as ``default``, or the indented lines of a list of phases;
    None: no ``plan:`` line); ``extra``, more top-level lines (``reference: ...``, ``tracking: ...``)."""
    directory.mkdir(parents=True, exist_ok=True)
    synthetic_frame(n=rows, seed=data_seed, missing=False).to_csv(directory / "data.csv", index=False)
    lines = [
        f"name: {name}",
        'data: {path: data.csv, target: label, positive: "yes"}',
        f"cv: {{folds: 3, seed: {cv_seed}}}",
        f"model: {model}",
        f"train: {{epochs: {epochs}, batch_size: 64, lr: {lr}}}",
        f"budget: {{trials_per_week: {budget}}}",
        *([extra] if extra else []),
    ]
    if plan is not None:
        lines.append(f"plan:\n{plan.rstrip()}" if "\n" in plan else f"plan: {plan}")
    path = directory / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    """``write_csv(df=None, name="data.csv", sep=",", encoding="utf-8", **synthetic_frame_kwargs) -> Path``."""

    def _write(
        df: pd.DataFrame | None = None, name: str = "data.csv", sep: str = ",", encoding: str = "utf-8", **kw
    ) -> Path:
        frame = synthetic_frame(**kw) if df is None else df
        path = tmp_path / name
        path.write_bytes(frame.to_csv(index=False, sep=sep, lineterminator="\n").encode(encoding))
        return path

    return _write


@pytest.fixture
def write_text(tmp_path: Path) -> Callable[..., Path]:
    """``write_text(text, name="data.csv", encoding="utf-8") -> Path``: a file with exactly these bytes."""

    def _write(text: str | bytes, name: str = "data.csv", encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
        return path

    return _write


@pytest.fixture
def small_dataset(write_csv) -> Dataset:
    """120 rows, 36 positives (label ``"yes"``), numeric ``num1``, ``num2`` and categorical ``color``."""
    return load_dataset(DataSpec(path=write_csv(), target="label"))


@pytest.fixture
def fast_config() -> TrialConfig:
    """A trial that trains in well under a second on the small dataset."""
    return TrialConfig(
        model=ModelConfig(hidden=(8,)),
        train=TrainConfig(epochs=3, batch_size=32, lr=1e-2, device="cpu"),
        cv=CVConfig(folds=3, seed=0),
    )


@pytest.fixture
def frame_factory() -> Callable[..., pd.DataFrame]:
    """:func:`synthetic_frame` itself, for tests that want to edit the frame before writing it."""
    return synthetic_frame


def _ignored_signals() -> str:
    """The process's ignored-signal mask as the kernel holds it (what a child inherits), or "" off Linux."""
    status = Path("/proc/self/status")
    if not status.exists():
        return ""
    return next((line.split()[1] for line in status.read_text().splitlines() if line.startswith("SigIgn:")), "")


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """Whatever a test runs in-process (the CLI, a search) must give Ctrl-C and SIGTERM back as it found them: a
    leaked SIG_IGN makes every later ``losstune`` child of this worker ignore its Ctrl-C (children inherit it).
    Checked both as Python sees it and as the kernel does (a library may change it below Python)."""
    import signal

    before = ({sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}, _ignored_signals())
    yield
    after = ({sig: signal.getsignal(sig) for sig in before[0]}, _ignored_signals())
    assert after == before, f"signal dispositions changed by the test: {before} -> {after}"
