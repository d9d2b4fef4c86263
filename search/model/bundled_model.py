"""A user's own model in a model directory (see :mod:`search.model.model_dir`): its bundled source, checked
against the sha256 the manifest records, and its class run from those bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from objectives.errors import LosstuneError
from objectives.user_module import load_bundled_class
from search.model.model_dir import MODULE

if TYPE_CHECKING:
    from torch import nn

    from search.model.exported_config import ExportedConfig


def bundled_module(
    model_dir: Path, manifest: dict, paths: dict[str, str], files: set[str], where: str
) -> tuple[str, bytes] | None:
    """A user model's bundled source (see :mod:`search.model.model_dir`), checked against the sha256 its
    manifest entry records, and its path in the directory; None for the MLP."""
    entry = manifest.get("model_module")
    if entry is None:
        return None
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("module", "file", "sha256")):
        raise LosstuneError(f"model directory {where} is corrupted: its manifest's model_module is not valid")
    rel = paths.get(MODULE)
    if rel is None or rel not in files:
        raise LosstuneError(
            f"model directory {where} is incomplete: the bundled model source {entry['file']} is missing"
        )
    source = (model_dir / rel).read_bytes()
    if hashlib.sha256(source).hexdigest() != entry["sha256"]:
        raise LosstuneError(
            f"model directory {where}: its bundled model source {rel} does not match the sha256 its manifest records "
            f"for {entry['module']!r} (edited since it was trained): refused; train the model again"
        )
    return rel, source


def bundled_class(
    config: ExportedConfig, manifest: dict, module: bytes | None, where: str
) -> tuple[str, type[nn.Module]] | None:
    """(``model.module``, its class run from the bundled source) for a user's model; None for the MLP."""
    spec = config.model.module
    if spec is None and module is None:
        return None
    if spec is None or module is None or manifest["model_module"]["module"] != spec:
        raise LosstuneError(
            f"its configuration's model.module ({spec!r}) is not the bundled model's "
            f"({manifest.get('model_module', {}).get('module')!r})"
        )
    filename = f"{where}/artifacts/{manifest['model_module']['file']}"
    return spec, load_bundled_class(spec, module, filename)
