"""A final model as an MLflow model directory (pyfunc flavour), and loading it back without trusting it blindly.

Layout of ``MODEL_DIR``:

- ``MLmodel``: MLflow's descriptor; its metadata holds ``losstune_format_version`` and the sha256 of the four
  artifacts (the manifest's is checked against it; the manifest holds the other three).
- ``losstune_pyfunc.py``: the model "from code", three lines that build :class:`LosstunePyfunc` (no pickle).
- ``code/objectives``, ``code/search``: the losstune modules the model imports, so it loads without losstune.
- ``artifacts/weights.pt``: the MLP's state_dict (``torch.save``), loaded with ``weights_only=True``.
- ``artifacts/preprocessing.skops``: the fitted ColumnTransformer in skops format (not pickle), loaded with an
  explicit list of allowed types.
- ``artifacts/exported_config.yaml``: the exported configuration that was trained.
- ``artifacts/losstune_model.json``: the manifest (threshold, labels, columns, checksums, what it was trained on).
- ``requirements.txt``, ``python_env.yaml``, ``conda.yaml``: MLflow's environment files.

Trust: :func:`load_model_dir` (what ``losstune predict`` uses) reads only YAML, JSON, skops with an allowlist
and ``torch.load(weights_only=True)``; it runs no code from the directory and checks every checksum, so a
corrupted or edited file is one clear error. ``mlflow.pyfunc.load_model`` (and ``mlflow models serve``) is
MLflow's loader: by MLflow's design it *executes* ``losstune_pyfunc.py`` and imports the bundled ``code/``, so
load only model directories you trust that way, as with any MLflow model; the artifacts then go through the
same checked loader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
import yaml

from objectives.errors import LosstuneError
from objectives.final import CheckedFeatures, FinalModel, check_features
from search.exported import ExportedConfig, parse_exported

log = logging.getLogger(__name__)

MODEL_FORMAT_VERSION = 1
WEIGHTS, PREPROCESSING, CONFIG, MANIFEST = "weights", "preprocessing", "config", "manifest"
FILES = {
    WEIGHTS: "weights.pt",
    PREPROCESSING: "preprocessing.skops",
    CONFIG: "exported_config.yaml",
    MANIFEST: "losstune_model.json",
}
CHECKED = (WEIGHTS, PREPROCESSING, CONFIG)
# types skops does not trust by default that a fitted make_preprocessor() legitimately holds (OneHotEncoder's
# dtype=np.float32); anything else in the file is refused
TRUSTED_SKOPS_TYPES = frozenset({"numpy.dtype"})
ENTRY_FILE = "losstune_pyfunc.py"
ENTRY_CODE = '''"""losstune model, loaded by MLflow as a model from code; the weights etc. are in artifacts/."""
import mlflow.models

from search.pyfunc_model import LosstunePyfunc

mlflow.models.set_model(LosstunePyfunc())
'''
# the modules the pyfunc model imports, copied into MODEL_DIR/code
BUNDLED = ("objectives", "search/__init__.py", "search/exported.py", "search/model_package.py",
           "search/pyfunc_model.py", "search/validation.py")  # fmt: skip
REQUIREMENTS = ("mlflow", "torch", "scikit-learn", "skops", "pandas", "numpy", "pydantic", "pyyaml")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class PackagedModel:
    """A loaded model directory: the final model, its threshold and configuration, and the manifest."""

    final: FinalModel
    threshold: float
    config: ExportedConfig
    manifest: dict

    @property
    def target(self) -> str:
        return self.manifest["target"]

    def check(self, frame: pd.DataFrame, source: str = "the input") -> CheckedFeatures:
        """The model's columns from ``frame``; a warning per column with categories unseen in training."""
        checked = check_features(
            frame, self.final.numeric_columns, self.final.categorical_columns, self.final.categories, source
        )
        for col, count in checked.unseen.items():
            shown = ", ".join(repr(v) for v in checked.unseen_examples[col])
            log.warning(
                "column %r: %d row(s) of %s have a category not seen in training (%s): encoded as no category "
                "(one-hot ignore)", col, count, source, shown,
            )  # fmt: skip
        for col in checked.empty:
            log.warning("column %r has no value in %s: imputed as in training", col, source)
        return checked

    def predict(self, frame: pd.DataFrame, source: str = "the input") -> pd.DataFrame:
        """``proba`` (positive class) and ``label`` (1 when ``proba >= threshold``), one row per input row."""
        checked = self.check(frame, source)
        proba = self.final.predict_proba(checked.features) if len(frame) else np.zeros(0)
        label = (proba >= self.threshold).astype(np.int64)
        return pd.DataFrame({"proba": proba, "label": label}, index=frame.index)


# ---------------------------------------------------------------------------------------------------- saving


def save_model_dir(
    final: FinalModel, config: ExportedConfig, out: Path, trained_on: dict, mlflow_model=None
) -> dict:
    """Write ``out`` as an MLflow pyfunc model; returns the manifest. ``mlflow_model`` (an ``mlflow.models.Model``
    carrying a logged model's ids) links the directory to its MLflow run."""
    import mlflow.pyfunc
    import skops.io as sio
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LosstuneError(f"{out} already exists and is not empty: choose another -o or remove it")
    with tempfile.TemporaryDirectory(prefix="losstune-model-") as tmp:
        stage = Path(tmp)
        paths = {key: stage / name for key, name in FILES.items()}
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
        }
        paths[MANIFEST].write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (stage / ENTRY_FILE).write_text(ENTRY_CODE, encoding="utf-8")
        code = _stage_code(stage / "code")
        # The input columns are named but typed Any and optional: MLflow's own enforcement would refuse an integer
        # column for a double (a CSV of whole numbers) and report a missing column in its words; check_features
        # converts and explains instead.
        signature = ModelSignature(
            inputs=Schema([ColSpec(AnyType(), c, required=False) for c in final.feature_columns]),
            outputs=Schema([ColSpec("double", "proba"), ColSpec("long", "label")]),
        )
        meta = {
            "losstune_format_version": MODEL_FORMAT_VERSION,
            "losstune_sha256": {**manifest["sha256"], MANIFEST: sha256_of(paths[MANIFEST])},
            "threshold": config.threshold,
            "positive_label": final.positive_label,
            "study": config.provenance.study,
            "trial": config.provenance.trial,
        }
        with _quiet_mlflow_save():
            mlflow.pyfunc.save_model(
                path=str(out), python_model=str(stage / ENTRY_FILE),
                artifacts={key: str(p) for key, p in paths.items()}, code_paths=[str(p) for p in code],
                pip_requirements=_requirements(), signature=signature, metadata=meta, mlflow_model=mlflow_model,
            )  # fmt: skip
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
    """Copies of the modules the pyfunc model imports (``.py`` files only), one folder per package."""
    root = Path(__file__).resolve().parents[1]
    for item in BUNDLED:
        src = root / item
        files = sorted(src.glob("*.py")) if src.is_dir() else [src]
        for f in files:
            target = dest / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
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


# --------------------------------------------------------------------------------------------------- loading


def load_model_dir(model_dir: Path) -> PackagedModel:
    """Load ``model_dir`` safely (see the module docstring); every problem is one :class:`LosstuneError`.

    The chain of checks starts at ``MLmodel``: its metadata holds the format version and the sha256 of the
    manifest, which holds the sha256 of the weights, the preprocessing and the config."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise LosstuneError(f"model directory not found: {model_dir}")
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise LosstuneError(f"{model_dir} is not an MLflow model directory (no MLmodel file): make one with "
                            "`losstune train`")  # fmt: skip
    try:
        descriptor = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise LosstuneError(f"{mlmodel} is corrupted (not valid YAML)") from None
    meta = (descriptor.get("metadata") if isinstance(descriptor, dict) else None) or {}
    if meta.get("losstune_format_version") is None:
        raise LosstuneError(f"{model_dir} is an MLflow model but not a losstune one (no losstune_format_version)")
    _check_version(meta["losstune_format_version"], str(mlmodel))
    artifacts = ((descriptor.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
    paths = {key: model_dir / str((info or {}).get("path", "")) for key, info in artifacts.items()}
    return _load_artifacts(paths, str(model_dir), (meta.get("losstune_sha256") or {}).get(MANIFEST))


def _load_artifacts(paths: dict[str, Path], where: str, manifest_sha256: str | None) -> PackagedModel:
    for key in FILES:
        if key not in paths or not paths[key].is_file():
            raise LosstuneError(f"model directory {where} is incomplete: {FILES[key]} is missing")
    try:
        manifest = json.loads(paths[MANIFEST].read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict):
        raise LosstuneError(f"model directory {where} is corrupted: {FILES[MANIFEST]} is not a JSON object")
    _check_version(manifest.get("format_version"), f"{FILES[MANIFEST]} in {where}")
    recorded = {**(manifest.get("sha256") or {}), MANIFEST: manifest_sha256}
    for key in (MANIFEST, *CHECKED):
        if recorded.get(key) != sha256_of(paths[key]):
            raise LosstuneError(
                f"model directory {where} is corrupted: {FILES[key]} does not match the sha256 recorded when it "
                "was saved (edited or damaged); train the model again"
            )
    try:
        raw_config = yaml.safe_load(paths[CONFIG].read_text(encoding="utf-8"))
        config = parse_exported(raw_config, FILES[CONFIG], Path(where))
        preprocessor = _load_preprocessing(paths[PREPROCESSING])
        try:
            state = torch.load(paths[WEIGHTS], map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - an unreadable or unsafe file, whatever torch raises
            raise LosstuneError(f"{FILES[WEIGHTS]} cannot be read as torch weights ({_first_line(exc)})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise LosstuneError(f"{FILES[WEIGHTS]} is not a state_dict of tensors")
        final = FinalModel(
            preprocessor=preprocessor, state_dict=state, model_config=config.model,
            n_inputs=int(manifest["n_inputs"]), numeric_columns=list(manifest["numeric_columns"]),
            categorical_columns=list(manifest["categorical_columns"]),
            positive_label=str(manifest["positive_label"]), negative_label=str(manifest["negative_label"]),
        )  # fmt: skip
        final.network()  # shape mismatches surface here, not at the first prediction
        threshold = float(manifest["threshold"])
    except LosstuneError as exc:
        raise LosstuneError(f"cannot load the model in {where}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise LosstuneError(f"cannot load the model in {where}: bad {FILES[MANIFEST]} ({_first_line(exc)})") from None
    return PackagedModel(final=final, threshold=threshold, config=config, manifest=manifest)


def _load_preprocessing(path: Path):
    """The fitted ColumnTransformer from skops, allowing only the types listed in TRUSTED_SKOPS_TYPES."""
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except Exception as exc:  # noqa: BLE001 - not a skops file at all
        raise LosstuneError(f"{FILES[PREPROCESSING]} cannot be read as skops ({_first_line(exc)})") from None
    if untrusted - TRUSTED_SKOPS_TYPES:
        raise LosstuneError(
            f"{FILES[PREPROCESSING]} holds types a losstune preprocessing never has "
            f"({', '.join(sorted(untrusted - TRUSTED_SKOPS_TYPES))}): refused"
        )
    try:
        return sio.load(path, trusted=sorted(untrusted))
    except Exception as exc:  # noqa: BLE001
        raise LosstuneError(f"{FILES[PREPROCESSING]} cannot be loaded ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _check_version(version: object, where: str) -> None:
    if version != MODEL_FORMAT_VERSION:
        raise LosstuneError(
            f"{where} has losstune model format version {version!r}; this losstune reads version "
            f"{MODEL_FORMAT_VERSION}: load it with the losstune that made it, or train it again"
        )
