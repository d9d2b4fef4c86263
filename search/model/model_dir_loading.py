"""Loading a model directory back without trusting it blindly (see :mod:`search.model.model_dir`, "Trust"):
every file inventoried, listed in the self-checked manifest and checked against its sha256 before anything is
parsed; only YAML, JSON, skops with an allowlist and ``torch.load(weights_only=True)`` are parsed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from contextlib import nullcontext
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

import torch

from objectives.errors import LosstuneError
from objectives.final import FinalModel
from objectives.model import build_module
from objectives.user_module import bound
from search.formats.validation import parse_yaml, validated
from search.model.bundled_model import bundled_class, bundled_module
from search.model.exported_config import parse_exported
from search.model.manifest_check import EnsembleMemberEntry, Manifest, check_tensors
from search.model.model_dir import (
    CHECKED,
    CONFIG,
    FILES,
    MANIFEST,
    MODEL_FORMAT_VERSION,
    PREPROCESSING,
    TRUSTED_SKOPS_TYPES,
    WEIGHTS,
    PackagedModel,
    self_sha256,
    sha256_of,
)

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer


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
        raise LosstuneError(
            f"{model_dir} is not an MLflow model directory (no MLmodel file): make one with `losstune train`"
        )
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
    contents = {"MLmodel": raw_mlmodel, **{paths[k]: raw[k] for k in CHECKED}}
    module = bundled_module(model_dir, manifest, paths, files, where)
    if module is not None:
        contents[module[0]] = module[1]
    _verify(contents, listed, where)
    _verify_rest(model_dir, listed, set(contents), where)
    return _build(raw, manifest, where, None if module is None else module[1])


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
                raise LosstuneError(
                    f"model directory {model_dir} holds a symbolic link, {rel!r}: a model directory "
                    "holds regular files only (copy the files instead of linking them)"
                )
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise LosstuneError(
                    f"model directory {model_dir} holds {rel!r}, which is not a regular file: remove it"
                )
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
            raise LosstuneError(
                f"MLmodel in {where} points artifact {key!r} outside the model directory ({text!r}): refused"
            )
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


def _read_manifest(raw: bytes, where: str) -> dict:
    try:
        manifest = json.loads(_text(raw, FILES[MANIFEST], where), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        manifest = None
    if not isinstance(manifest, dict):
        raise LosstuneError(
            f"model directory {where} is corrupted: {FILES[MANIFEST]} is not a JSON object (with unique keys)"
        )
    _check_version(manifest.get("format_version"), f"{FILES[MANIFEST]} in {where}")
    if manifest.get("self_sha256") != self_sha256(manifest) or not isinstance(manifest.get("files"), dict):
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


def _build(raw: dict[str, bytes], manifest: dict, where: str, module: bytes | None) -> PackagedModel:
    try:
        fields = validated(Manifest, FILES[MANIFEST], manifest)
        raw_config = parse_yaml(_text(raw[CONFIG], FILES[CONFIG], where), FILES[CONFIG])
        config = parse_exported(raw_config, FILES[CONFIG], Path(where))
        user_class = bundled_class(config, manifest, module, where)
        preprocessor = _load_preprocessing(raw[PREPROCESSING])
        _check_width(preprocessor, fields.n_inputs)
        try:
            state = torch.load(io.BytesIO(raw[WEIGHTS]), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LosstuneError(f"{FILES[WEIGHTS]} cannot be read as torch weights ({_first_line(exc)})") from None
        if not isinstance(state, dict):
            raise LosstuneError(f"{FILES[WEIGHTS]} is not a state_dict of tensors")
        members = [state] if fields.ensemble is None else _member_states(state, len(fields.ensemble))
        finals = []
        # a user's model is built from its bundled class, whatever the import path holds under its module's name
        with bound(*user_class) if user_class is not None else nullcontext():
            with torch.device("meta"):  # the expected shapes and dtypes, without allocating the network
                expected = build_module(config.model, fields.n_inputs)
            for member_state in members:
                check_tensors(member_state, expected, FILES[WEIGHTS])
                finals.append(
                    FinalModel(
                        preprocessor=preprocessor,
                        state_dict=member_state,
                        model_config=config.model,
                        n_inputs=fields.n_inputs,
                        numeric_columns=list(fields.numeric_columns),
                        categorical_columns=list(fields.categorical_columns),
                        positive_label=fields.positive_label,
                        negative_label=fields.negative_label,
                    )
                )
            final = finals[0] if fields.ensemble is None else _ensemble(finals, fields.ensemble)
            final.network()  # whatever else is wrong with the weights surfaces here, not at the first prediction
    except LosstuneError as exc:
        raise LosstuneError(f"cannot load the model in {where}: {exc}") from None
    return PackagedModel(final=final, threshold=fields.threshold, config=config, manifest=manifest)


def _check_width(preprocessor: ColumnTransformer, n_inputs: int) -> None:
    """The manifest's ``n_inputs`` is the width the fitted preprocessing gives."""
    try:
        width = len(preprocessor.get_feature_names_out())
    except Exception as exc:
        raise LosstuneError(f"{FILES[PREPROCESSING]} is not a fitted preprocessing ({_first_line(exc)})") from None
    if width != n_inputs:
        raise LosstuneError(f"{FILES[MANIFEST]} says n_inputs {n_inputs}, but the preprocessing gives {width}")


def _member_states(state: dict, n_members: int) -> list[dict]:
    """An ensemble's members' weights from the one loaded state_dict (keys ``member<i>.``)."""
    from objectives.final_ensemble import split_state

    try:
        return split_state(state, n_members)
    except ValueError as exc:
        raise LosstuneError(f"{FILES[WEIGHTS]}: {exc}") from None


def _ensemble(finals: list[FinalModel], members: list[EnsembleMemberEntry]) -> FinalModel:
    """The members averaged with their weights (:mod:`objectives.final_ensemble`)."""
    from objectives.final_ensemble import of_members

    return of_members(finals, [m.weight for m in members])


def _load_preprocessing(data: bytes) -> ColumnTransformer:
    """The fitted ColumnTransformer from skops, allowing only the types listed in TRUSTED_SKOPS_TYPES."""
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise LosstuneError(f"{FILES[PREPROCESSING]} cannot be read as skops ({_first_line(exc)})") from None
    if untrusted - TRUSTED_SKOPS_TYPES:
        raise LosstuneError(
            f"{FILES[PREPROCESSING]} holds types a losstune preprocessing never has "
            f"({', '.join(sorted(untrusted - TRUSTED_SKOPS_TYPES))}): refused"
        )
    try:
        return sio.loads(data, trusted=sorted(untrusted))
    except Exception as exc:
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
            + (
                " (version 1 had no checksum of MLmodel and of every file): train it again with this losstune"
                if older
                else ": load it with the losstune that made it, or train it again"
            )
        )
