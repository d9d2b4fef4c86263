"""A final model as an MLflow model directory (pyfunc flavour), and loading it back without trusting it blindly.

Layout of ``MODEL_DIR``:

- ``MLmodel``: MLflow's descriptor; its metadata holds ``losstune_format_version``.
- ``losstune_pyfunc.py``: the model "from code", three lines that build :class:`LosstunePyfunc` (no pickle).
- ``code/objectives``, ``code/search``: the losstune modules the model imports, so it loads without losstune.
- ``artifacts/weights.pt``: the MLP's state_dict (``torch.save``), loaded with ``weights_only=True``.
- ``artifacts/preprocessing.skops``: the fitted ColumnTransformer in skops format (not pickle), loaded with an
  explicit list of allowed types.
- ``artifacts/exported_config.yaml``: the exported configuration that was trained.
- ``artifacts/<module>.py``, for a user's own model (``model.module``) only: the source file of the module that
  defines its class, as it was imported for training; the manifest's ``model_module`` records the module string,
  the file's name, where it came from and its sha256. Loading runs these bundled bytes (checked against that
  sha256, as a module of its own name), never whatever the import path would find under the module's name.
- ``artifacts/losstune_model.json``: the manifest (threshold, labels, columns, what it was trained on) and
  ``files``, the sha256 of every other file of the directory, ``MLmodel`` and the bundled code included; it
  carries its own checksum (``self_sha256``, over its other keys).
- ``requirements.txt``, ``python_env.yaml``, ``conda.yaml``: MLflow's environment files.

Trust: :func:`~search.model.model_dir_loading.load_model_dir` (what ``losstune predict`` uses) reads only regular
files inside the directory that the manifest lists, each once, checking its sha256 on the bytes it then parses; a
symbolic link, a device or FIFO, a file not in the manifest or an artifact path leaving the directory is refused. It
parses only YAML (one strict loader), JSON, skops with an allowlist and ``torch.load(weights_only=True)`` and runs
no code from the directory, except, for a user's own model, its bundled module source: a model defined in Python
is Python to run, so such a directory is trusted as its source file would be (its bytes must match the sha256 in
the manifest, which says only that nothing changed since the manifest was written). The checksums prove the files
are those the manifest lists, not who wrote them: anyone who can write the directory can rewrite the manifest to
match. ``mlflow.pyfunc.load_model`` (and ``mlflow models
serve``) is MLflow's loader: by MLflow's design it *executes* ``losstune_pyfunc.py`` and imports the bundled
``code/``, so load only model directories you trust that way, as with any MLflow model; the artifacts then go
through the same checked loader. (Python may write ``__pycache__`` under ``code/`` then: those files are not read,
and not refused.)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from objectives.final import CheckedFeatures, FinalModel, check_features
from search.model.exported_config import ExportedConfig

log = logging.getLogger(__name__)

MODEL_FORMAT_VERSION = 2
WEIGHTS, PREPROCESSING, CONFIG, MANIFEST = "weights", "preprocessing", "config", "manifest"
FILES = {
    WEIGHTS: "weights.pt",
    PREPROCESSING: "preprocessing.skops",
    CONFIG: "exported_config.yaml",
    MANIFEST: "losstune_model.json",
}
CHECKED = (WEIGHTS, PREPROCESSING, CONFIG)
MODULE = "module"  # the artifact of a user model's bundled source (``model_module`` in the manifest)
# types skops does not trust by default that a fitted make_preprocessor() legitimately holds (OneHotEncoder's
# dtype=np.float32), model.numeric_scaling robust's smooth clipping and model.numeric_embedding's encoder (a
# function and a class of this package, the latter holding one float array); anything else in the file is refused
# (each under objectives.numeric_encoders, and under objectives.preprocess, where models saved before that module
# existed name them)
TRUSTED_SKOPS_TYPES = frozenset(
    {"numpy.dtype"}
    | {
        f"objectives.{module}.{name}"
        for module in ("numeric_encoders", "preprocess")
        for name in ("smooth_clip", "PiecewiseLinearEncoder")
    }
)
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
        return check_features(
            frame,
            self.final.numeric_columns,
            self.final.categorical_columns,
            self.final.categories,
            source,
            first_line,
            na_values=tuple(self.config.data.na_values),
        )

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
            "(one-hot ignore)",
            col,
            count,
            source,
            shown,
        )
    for col in empty:
        log.warning("column %r has no value in %s: imputed as in training", col, source)


def self_sha256(manifest: dict) -> str:
    """The manifest's checksum of itself: the sha256 of its other keys, canonically serialised."""
    body = {k: v for k, v in manifest.items() if k != "self_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()
