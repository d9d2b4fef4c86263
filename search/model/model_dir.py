"""A final model as an MLflow model directory (pyfunc flavour), and loading it back without trusting it blindly.

Layout of ``MODEL_DIR``:

- ``MLmodel``: MLflow's descriptor; its metadata holds ``losstune_format_version``.
- ``losstune_pyfunc.py``: the model "from code", three lines that build :class:`LosstunePyfunc` (no pickle).
- ``code/objectives``, ``code/search``: the losstune modules the model imports, so it loads without losstune.
- ``artifacts/weights.pt``: the MLP's state_dict (``torch.save``), loaded with ``weights_only=True``.
- ``artifacts/preprocessing.skops``: the fitted ColumnTransformer in skops format (not pickle), loaded with an
  explicit list of allowed types.
- ``artifacts/exported_config.yaml``: the exported configuration that was trained.
- ``artifacts/losstune_model.json``: the manifest (threshold, labels, columns, what it was trained on) and
  ``files``, the sha256 of every other file of the directory, ``MLmodel`` and the bundled code included; it
  carries its own checksum (``self_sha256``, over its other keys).
- ``requirements.txt``, ``python_env.yaml``, ``conda.yaml``: MLflow's environment files.

Trust: :func:`load_model_dir` (what ``losstune predict`` uses) reads only regular files inside the directory that
the manifest lists, each once, checking its sha256 on the bytes it then parses; a symbolic link, a device or
FIFO, a file not in the manifest or an artifact path leaving the directory is refused. It parses only YAML (one
strict loader), JSON, skops with an allowlist and ``torch.load(weights_only=True)`` and runs no code from the
directory. The checksums prove the files are those the manifest lists, not who wrote them: anyone who can write
the directory can rewrite the manifest to match. ``mlflow.pyfunc.load_model`` (and ``mlflow models serve``) is
MLflow's loader: by MLflow's design it *executes* ``losstune_pyfunc.py`` and imports the bundled ``code/``, so
load only model directories you trust that way, as with any MLflow model; the artifacts then go through the
same checked loader. (Python may write ``__pycache__`` under ``code/`` then: those files are not read, and not
refused.)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

import numpy as np
import pandas as pd
import torch
import yaml

from objectives.errors import LosstuneError
from objectives.final import CheckedFeatures, FinalModel, check_features
from search.model.exported_config import ExportedConfig, parse_exported
from search.formats.validation import parse_yaml
from search.model.bundled_code import ROOT, bundled_files

log = logging.getLogger(__name__)

# 2: the manifest lists the sha256 of every file of the directory, MLmodel included, and checks itself
MODEL_FORMAT_VERSION = 2
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

from search.model.pyfunc_model import LosstunePyfunc

mlflow.models.set_model(LosstunePyfunc())
'''
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

    def check(self, frame: pd.DataFrame, source: str = "the input", first_line: int | None = None) -> CheckedFeatures:
        """The model's columns from ``frame`` (see :func:`objectives.final.check_features`)."""
        return check_features(frame, self.final.numeric_columns, self.final.categorical_columns,
                              self.final.categories, source, first_line)  # fmt: skip

    def predict_checked(self, checked: CheckedFeatures, first_line: int | None = None) -> pd.DataFrame:
        """``proba`` (positive class) and ``label`` (1 when ``proba >= threshold``), one row per checked row."""
        features = checked.features
        proba = self.final.predict_proba(features, first_line) if len(features) else np.zeros(0)
        label = (proba >= self.threshold).astype(np.int64)
        return pd.DataFrame({"proba": proba, "label": label}, index=features.index)

    def predict(self, frame: pd.DataFrame, source: str = "the input", first_line: int | None = None) -> pd.DataFrame:
        """:meth:`predict_checked` of one frame, warning about unseen categories and empty columns."""
        checked = self.check(frame, source, first_line)
        warn_unusual(checked.unseen, checked.unseen_examples, checked.empty, source)
        return self.predict_checked(checked, first_line)


def warn_unusual(unseen: dict[str, int], examples: dict[str, list[str]], empty: list[str], source: str) -> None:
    """One warning per column with categories not seen in training, and per model column with no value."""
    for col, count in unseen.items():
        shown = ", ".join(repr(v) for v in examples[col])
        log.warning(
            "column %r: %d row(s) of %s have a category not seen in training (%s): encoded as no category "
            "(one-hot ignore)", col, count, source, shown,
        )  # fmt: skip
    for col in empty:
        log.warning("column %r has no value in %s: imputed as in training", col, source)


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
        # The id columns excluded in training and the target are named too (optional), so that MLflow does not
        # warn about them: the model ignores them, as `losstune predict` does.
        ignored = [c for c in [*trained_on.get("excluded_columns", []), config.data.target]
                   if c not in final.feature_columns]  # fmt: skip
        signature = ModelSignature(
            inputs=Schema([ColSpec(AnyType(), c, required=False) for c in [*final.feature_columns, *ignored]]),
            outputs=Schema([ColSpec("double", "proba"), ColSpec("long", "label")]),
        )
        meta = {
            "losstune_format_version": MODEL_FORMAT_VERSION,
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
    return _sign(out, manifest)


def _sign(out: Path, manifest: dict) -> dict:
    """The manifest, rewritten with the sha256 of every other file of the saved directory (MLmodel included)
    and its own checksum: from here on the directory's content is fixed."""
    listing = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel != f"artifacts/{FILES[MANIFEST]}":
            listing[rel] = sha256_of(path)
    manifest = {**manifest, "files": listing}
    manifest["self_sha256"] = _self_sha256(manifest)
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


# --------------------------------------------------------------------------------------------------- loading


def load_model_dir(model_dir: Path) -> PackagedModel:
    """Load ``model_dir`` safely (see the module docstring); every problem is one :class:`LosstuneError`.

    Only regular files inside the directory are read, each once, and only those the manifest lists with their
    sha256: a symbolic link, a device or FIFO, a file the manifest does not list (a stray ``model.pkl``) or an
    artifact path in ``MLmodel`` that leaves the directory is refused before anything is parsed."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise LosstuneError(f"model directory not found: {model_dir}")
    where = str(model_dir)
    files = _inventory(model_dir)
    if "MLmodel" not in files:
        raise LosstuneError(f"{model_dir} is not an MLflow model directory (no MLmodel file): make one with "
                            "`losstune train`")  # fmt: skip
    raw_mlmodel = (model_dir / "MLmodel").read_bytes()
    descriptor = parse_yaml(_text(raw_mlmodel, "MLmodel", where), f"MLmodel in {where}")
    meta = (descriptor.get("metadata") if isinstance(descriptor, dict) else None) or {}
    if not isinstance(meta, dict) or meta.get("losstune_format_version") is None:
        raise LosstuneError(f"{model_dir} is an MLflow model but not a losstune one (no losstune_format_version)")
    _check_version(meta["losstune_format_version"], f"MLmodel in {where}")
    paths = _artifact_paths(descriptor, where)
    for key in FILES:
        if key not in paths or paths[key] not in files:
            raise LosstuneError(f"model directory {where} is incomplete: {FILES[key]} is missing")
    raw_manifest = (model_dir / paths[MANIFEST]).read_bytes()
    manifest = _read_manifest(raw_manifest, where)
    listed = manifest["files"]
    unlisted = sorted(files - set(listed) - {paths[MANIFEST]})
    if unlisted:
        raise LosstuneError(
            f"model directory {where} holds {unlisted[0]!r}, which is not part of the saved model (not in its "
            f"manifest{f', nor {len(unlisted) - 1} other file(s)' if len(unlisted) > 1 else ''}): remove it"
        )
    absent = sorted(set(listed) - files)
    if absent:
        raise LosstuneError(f"model directory {where} is incomplete: {absent[0]} is missing")
    raw = {key: (model_dir / paths[key]).read_bytes() for key in CHECKED}
    _verify({"MLmodel": raw_mlmodel, **{paths[k]: raw[k] for k in CHECKED}}, listed, where)
    _verify_rest(model_dir, listed, {"MLmodel", *(paths[k] for k in CHECKED)}, where)
    return _build(raw, manifest, where)


def _inventory(model_dir: Path) -> set[str]:
    """Every regular file under ``model_dir`` (relative POSIX paths); anything else is refused. Byte-code caches
    under ``code/`` are left out: Python writes them when MLflow imports the bundled code, and losstune never
    reads them."""
    found: set[str] = set()
    for root, dirs, names in os.walk(model_dir, followlinks=False):
        rel_root = Path(root).relative_to(model_dir)
        for name in [*dirs, *names]:
            rel = (rel_root / name).as_posix()
            mode = os.lstat(Path(root) / name).st_mode
            if stat.S_ISLNK(mode):
                raise LosstuneError(f"model directory {model_dir} holds a symbolic link, {rel!r}: a model directory "
                                    "holds regular files only (copy the files instead of linking them)")  # fmt: skip
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise LosstuneError(f"model directory {model_dir} holds {rel!r}, which is not a regular file: remove it")
            if not (rel.startswith("code/") and "/__pycache__/" in rel and rel.endswith(".pyc")):
                found.add(rel)
    return found


def _artifact_paths(descriptor: dict, where: str) -> dict[str, str]:
    """The artifacts' paths as ``MLmodel`` gives them: relative, inside the directory (no ``..``)."""
    flavors = descriptor.get("flavors") if isinstance(descriptor, dict) else None
    pyfunc = flavors.get("python_function") if isinstance(flavors, dict) else None
    artifacts = (pyfunc.get("artifacts") if isinstance(pyfunc, dict) else None) or {}
    if not isinstance(artifacts, dict):
        raise LosstuneError(f"MLmodel in {where} is corrupted: its artifacts are not a mapping")
    paths = {}
    for key, info in artifacts.items():
        text = str((info or {}).get("path", "")) if isinstance(info, dict) else ""
        posix = PurePosixPath(text.replace("\\", "/"))
        if posix.is_absolute() or PureWindowsPath(text).is_absolute() or ".." in posix.parts:
            raise LosstuneError(f"MLmodel in {where} points artifact {key!r} outside the model directory ({text!r}): "
                                "refused")  # fmt: skip
        paths[str(key)] = posix.as_posix()
    return paths


def _text(raw: bytes, name: str, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LosstuneError(f"model directory {where} is corrupted: {name} is not UTF-8 text") from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"duplicate key {dupes[0]!r}")
    return dict(pairs)


def _self_sha256(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "self_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _read_manifest(raw: bytes, where: str) -> dict:
    try:
        manifest = json.loads(_text(raw, FILES[MANIFEST], where), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        manifest = None
    if not isinstance(manifest, dict):
        raise LosstuneError(f"model directory {where} is corrupted: {FILES[MANIFEST]} is not a JSON object "
                            "(with unique keys)")  # fmt: skip
    _check_version(manifest.get("format_version"), f"{FILES[MANIFEST]} in {where}")
    if manifest.get("self_sha256") != _self_sha256(manifest) or not isinstance(manifest.get("files"), dict):
        raise LosstuneError(
            f"model directory {where} is corrupted: {FILES[MANIFEST]} does not match the sha256 recorded when it "
            "was saved (edited or damaged); train the model again"
        )
    return manifest


def _verify(contents: dict[str, bytes], listed: dict, where: str) -> None:
    for rel, data in contents.items():
        if listed.get(rel) != hashlib.sha256(data).hexdigest():
            raise LosstuneError(
                f"model directory {where} is corrupted: {PurePosixPath(rel).name} does not match the sha256 recorded "
                "when it was saved (edited or damaged); train the model again"
            )


def _verify_rest(model_dir: Path, listed: dict, done: set[str], where: str) -> None:
    """The files losstune does not parse (MLflow's environment files, the bundled code) are checked too: an edit
    there changes what ``mlflow.pyfunc.load_model`` runs."""
    for rel in sorted(set(listed) - done):
        if listed[rel] != sha256_of(model_dir / rel):
            raise LosstuneError(
                f"model directory {where} is corrupted: {rel} does not match the sha256 recorded when it was saved "
                "(edited or damaged); train the model again"
            )


def _build(raw: dict[str, bytes], manifest: dict, where: str) -> PackagedModel:
    try:
        raw_config = parse_yaml(_text(raw[CONFIG], FILES[CONFIG], where), FILES[CONFIG])
        config = parse_exported(raw_config, FILES[CONFIG], Path(where))
        preprocessor = _load_preprocessing(raw[PREPROCESSING])
        try:
            state = torch.load(io.BytesIO(raw[WEIGHTS]), map_location="cpu", weights_only=True)
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
        final.network()  # shape mismatches and non-finite weights surface here, not at the first prediction
        threshold = float(manifest["threshold"])
    except LosstuneError as exc:
        raise LosstuneError(f"cannot load the model in {where}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise LosstuneError(f"cannot load the model in {where}: bad {FILES[MANIFEST]} ({_first_line(exc)})") from None
    if not np.isfinite(threshold):
        raise LosstuneError(f"cannot load the model in {where}: its threshold is not a finite number")
    return PackagedModel(final=final, threshold=threshold, config=config, manifest=manifest)


def _load_preprocessing(data: bytes):
    """The fitted ColumnTransformer from skops, allowing only the types listed in TRUSTED_SKOPS_TYPES."""
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:  # noqa: BLE001 - not a skops file at all
        raise LosstuneError(f"{FILES[PREPROCESSING]} cannot be read as skops ({_first_line(exc)})") from None
    if untrusted - TRUSTED_SKOPS_TYPES:
        raise LosstuneError(
            f"{FILES[PREPROCESSING]} holds types a losstune preprocessing never has "
            f"({', '.join(sorted(untrusted - TRUSTED_SKOPS_TYPES))}): refused"
        )
    try:
        return sio.loads(data, trusted=sorted(untrusted))
    except Exception as exc:  # noqa: BLE001
        raise LosstuneError(f"{FILES[PREPROCESSING]} cannot be loaded ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _check_version(version: object, where: str) -> None:
    if version != MODEL_FORMAT_VERSION:
        older = isinstance(version, int) and version < MODEL_FORMAT_VERSION
        raise LosstuneError(
            f"{where} has losstune model format version {version!r}; this losstune reads version "
            f"{MODEL_FORMAT_VERSION}"
            + (" (version 1 had no checksum of MLmodel and of every file): train it again with this losstune"
               if older else ": load it with the losstune that made it, or train it again")
        )
