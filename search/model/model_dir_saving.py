"""Saving a final model as a model directory (the layout is :mod:`search.model.model_dir`'s): the artifacts, the
bundled code, MLflow's pyfunc descriptor, then the manifest with the sha256 of every file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from objectives.final import FinalModel
from search.formats.atomic_write import atomic_directory
from search.model.bundled_code import ROOT, bundled_files
from search.model.exported_config import ExportedConfig
from search.model.model_dir import (
    CHECKED,
    CONFIG,
    ENTRY_CODE,
    ENTRY_FILE,
    FILES,
    MANIFEST,
    MODEL_FORMAT_VERSION,
    MODULE,
    PREPROCESSING,
    REQUIREMENTS,
    WEIGHTS,
    self_sha256,
    sha256_of,
)

if TYPE_CHECKING:
    from mlflow.models import Model, ModelSignature


def save_model_dir(
    final: FinalModel, config: ExportedConfig, out: Path, trained_on: dict[str, Any], mlflow_model: Model | None = None
) -> dict[str, Any]:
    """Write ``out`` as an MLflow pyfunc model, all at once (:func:`~search.formats.atomic_write.atomic_directory`:
    a failure leaves no partial directory); returns the manifest. ``mlflow_model`` (an ``mlflow.models.Model``
    carrying a logged model's ids) links the directory to its MLflow run."""
    import mlflow.pyfunc

    out = Path(out)
    with atomic_directory(out) as target, tempfile.TemporaryDirectory(prefix="losstune-model-") as tmp:
        stage = Path(tmp)
        paths = {key: stage / name for key, name in FILES.items()}
        module = _stage_module(config, stage / "module")
        if module is not None:
            paths[MODULE] = module[0]
        manifest = _stage_artifacts(final, config, trained_on, paths, module[1] if module else None)
        (stage / ENTRY_FILE).write_text(ENTRY_CODE, encoding="utf-8")
        code = _stage_code(stage / "code")
        with _quiet_mlflow_save():
            mlflow.pyfunc.save_model(
                path=str(target),
                python_model=str(stage / ENTRY_FILE),
                artifacts={key: str(p) for key, p in paths.items()},
                code_paths=[str(p) for p in code],
                pip_requirements=_requirements(),
                signature=_signature(final, config, trained_on),
                metadata=_metadata(final, config),
                mlflow_model=mlflow_model,
            )
        signed = _sign(target, manifest)
    return signed


def _stage_module(config: ExportedConfig, dest: Path) -> tuple[Path, dict[str, str]] | None:
    """A user's model: the source file of its module, as imported for training, copied to ``dest``, and its
    manifest entry (the module string, the file's name, where it came from, its sha256); None for the MLP."""
    if config.model.module is None:
        return None
    from objectives.user_module import user_source

    origin, source = user_source(config.model.module)
    dest.mkdir()
    (dest / origin.name).write_bytes(source)
    entry = {
        "module": config.model.module,
        "file": origin.name,
        "source_path": str(origin),
        "sha256": hashlib.sha256(source).hexdigest(),
    }
    return dest / origin.name, entry


def _stage_artifacts(
    final: FinalModel,
    config: ExportedConfig,
    trained_on: dict[str, Any],
    paths: dict[str, Path],
    module: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The weights, the fitted preprocessing, the configuration and the manifest (with their sha256, and a user
    model's ``model_module`` entry) written to ``paths``; returns the manifest."""
    import skops.io as sio

    torch.save(final.state_dict, paths[WEIGHTS])
    sio.dump(final.preprocessor, paths[PREPROCESSING])
    paths[CONFIG].write_text(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), "utf-8")
    manifest = {
        "format_version": MODEL_FORMAT_VERSION,
        "threshold": config.threshold,
        "target": config.data.target,
        "positive_label": final.positive_label,
        "negative_label": final.negative_label,
        "numeric_columns": final.numeric_columns,
        "categorical_columns": final.categorical_columns,
        "n_inputs": final.n_inputs,
        "sha256": {key: sha256_of(paths[key]) for key in CHECKED},
        "trained_on": trained_on,
        "provenance": config.provenance.model_dump(mode="json"),
        **({"model_module": module} if module is not None else {}),
    }
    if config.ensemble is not None:  # weights.pt holds every member's tensors (objectives.final_ensemble)
        manifest["ensemble"] = [{"trial": m.trial, "weight": m.weight} for m in config.ensemble.members]
    paths[MANIFEST].write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _signature(final: FinalModel, config: ExportedConfig, trained_on: dict[str, Any]) -> ModelSignature:
    """The input columns are named but typed Any and optional: MLflow's own enforcement would refuse an integer
    column for a double (a CSV of whole numbers) and report a missing column in its words; check_features
    converts and explains instead.

    The id columns excluded in training and the target are named too (optional), so that MLflow does not
    warn about them: the model ignores them, as `losstune predict` does."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    ignored = [
        c for c in [*trained_on.get("excluded_columns", []), config.data.target] if c not in final.feature_columns
    ]
    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), c, required=False) for c in [*final.feature_columns, *ignored]]),
        outputs=Schema([ColSpec("double", "proba"), ColSpec("long", "label")]),
    )


def _metadata(final: FinalModel, config: ExportedConfig) -> dict[str, Any]:
    """What the MLmodel file says of the model, for a reader without losstune."""
    return {
        "losstune_format_version": MODEL_FORMAT_VERSION,
        "threshold": config.threshold,
        "positive_label": final.positive_label,
        "study": config.provenance.study,
        "trial": config.provenance.trial,
    }


def _sign(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest, rewritten with the sha256 of every other file of the saved directory (MLmodel included)
    and its own checksum: from here on the directory's content is fixed."""
    listing = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel != f"artifacts/{FILES[MANIFEST]}":
            listing[rel] = sha256_of(path)
    manifest = {**manifest, "files": listing}
    manifest["self_sha256"] = self_sha256(manifest)
    (out / "artifacts" / FILES[MANIFEST]).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


@contextmanager
def _quiet_mlflow_save() -> Iterator[None]:
    """No progress bars for copying four local files, and no advice to add an input example (it would copy
    training rows into the model directory)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    name = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _stage_code(dest: Path) -> list[Path]:
    """Copies of the modules the pyfunc model imports (:mod:`search.model.bundled_code`), one folder per
    top-level package."""
    for rel in bundled_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return sorted(p for p in dest.iterdir() if p.is_dir())


def _requirements() -> list[str]:
    out = []
    for dist in REQUIREMENTS:
        try:
            version = importlib_metadata.version(dist).split("+")[0]  # torch 2.13.0+cpu: the local tag is no pin
        except importlib_metadata.PackageNotFoundError:
            continue
        out.append(f"{dist}=={version}")
    return out
