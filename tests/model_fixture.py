"""A tiny trained model directory for tests of ``losstune predict``, made without a search: an exported
configuration written directly, then ``losstune train --no-track`` (a second or two)."""

from __future__ import annotations

from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from objectives.config import CVConfig, LossConfig, MetricConfig, ModelConfig, TrainConfig
from objectives.data import DataSpec
from search.cli import main
from search.model.exported_config import ExportedConfig, Provenance, dump_exported
from tests.conftest import synthetic_frame


def make_model_dir(root: Path, **model: str) -> dict[str, Path]:
    """``train.csv`` (with an id column), ``test.csv`` (no target), ``best.yaml`` and the model directory;
    ``model`` are extra model settings (``numeric_scaling="robust"``, ...)."""
    frame = synthetic_frame(n=200, seed=3, missing=True)
    frame.insert(0, "row_id", [f"R{i:04d}" for i in range(len(frame))])
    train, test = frame.iloc[:150], frame.iloc[150:].reset_index(drop=True)
    train.to_csv(root / "train.csv", index=False)
    test.drop(columns=["label"]).to_csv(root / "test.csv", index=False)
    exported = ExportedConfig(
        format_version=1,
        loss=LossConfig(gamma=2.0),
        threshold=0.4,
        model=ModelConfig(hidden=(8,), **model),
        train=TrainConfig(epochs=3, batch_size=32, lr=1e-2, device="cpu"),
        cv=CVConfig(folds=3, seed=0),
        metric=MetricConfig(),
        data=DataSpec(path=root / "train.csv", target="label", positive="yes"),
        provenance=Provenance(
            study="tiny",
            trial=0,
            selected_by="oof",
            metric="f1",
            cv_score=0.5,
            exported_at="2026-11-30T09:00:00+00:00",
            versions={},
        ),
    )
    dump_exported(exported, root / "best.yaml")
    with redirect_stdout(StringIO()):
        rc = main(["train", str(root / "best.yaml"), "-o", str(root / "model"), "--no-track"])
    assert rc == 0
    return {
        "root": root,
        "train": root / "train.csv",
        "test": root / "test.csv",
        "best": root / "best.yaml",
        "model": root / "model",
    }
