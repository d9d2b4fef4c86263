"""A user's own model: ``model: {module: "package.module:ClassName", kwargs: {...}}``.

The contract: ``ClassName`` is a subclass of ``torch.nn.Module`` defined in ``package.module``; it is built as
``ClassName(n_features, **kwargs)`` (``n_features``: the width of the preprocessed table) and its ``forward(x)``
maps float32 rows ``[B, n_features]`` to one logit per row, ``[B]`` or ``[B, 1]``.

Where the module comes from is explicit: :func:`load_user_class` imports it with the given directories (the study
file's directory; for an exported configuration the directory it recorded) first on ``sys.path``, for that import
only, then from the installed packages; never from the working directory. The class loaded is registered under
its ``module`` string for this process, and :func:`build_user_module` (what :func:`objectives.model.build_module`
calls) builds from the registered class; a model directory binds its bundled copy with :func:`bound` instead.

:mod:`objectives.user_model_check` validates a model before anything is written or trained.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from torch import nn

from objectives.errors import LosstuneError

if TYPE_CHECKING:
    from objectives.config import ModelConfig

# losstune's own packages: a user module must not replace (or be) one of them
RESERVED = ("objectives", "search")
_REGISTERED: dict[str, type[nn.Module]] = {}
_SOURCES: dict[str, tuple[Path, bytes] | None] = {}
_SIBLINGS: dict[str, list[str]] = {}  # the other modules of the study's directory a model module imported
_FROM_DIRS: set[str] = set()  # top-level modules imported from a study's directory (see _make_way)


class UserModelError(LosstuneError):
    """A user's model cannot be used as given (not importable, wrong output, too large, ...)."""


def split_spec(spec: str) -> tuple[str, str]:
    """``"package.module:ClassName"`` as ``("package.module", "ClassName")``."""
    module, _, name = spec.partition(":")
    return module, name


def load_user_class(spec: str, search_dirs: Sequence[Path] = ()) -> type[nn.Module]:
    """Import the class named by ``spec`` (``search_dirs`` first, then installed packages) and register it for
    this process; one-line :class:`UserModelError` when it is not importable or not an ``nn.Module`` subclass.
    No byte-code is written beside the module."""
    module_name, class_name = split_spec(spec)
    if module_name.split(".")[0] in RESERVED:
        raise UserModelError(f"model.module {spec!r} names losstune's own package: put your model in a module of yours")
    dirs = [Path(d).resolve() for d in search_dirs]
    where = ", ".join(str(d) for d in dirs) + (" or " if dirs else "") + "the installed packages"
    _make_way(spec, module_name, dirs)
    added = [str(d) for d in dirs if str(d) not in sys.path]
    sys.path[:0] = added
    no_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    imported_before = set(sys.modules)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserModelError(f"model.module {spec!r}: no module {exc.name!r} in {where}") from None
        raise UserModelError(f"model.module {spec!r}: importing it failed: {first_line(exc)}") from None
    except Exception as exc:  # the user's code, run by the import: any error is theirs, said in one line
        raise UserModelError(f"model.module {spec!r}: importing it failed: {first_line(exc)}") from None
    finally:
        sys.dont_write_bytecode = no_bytecode
        for d in added:
            if d in sys.path:  # unless the user's module took it off itself
                sys.path.remove(d)
    new = {n: sys.modules[n] for n in set(sys.modules) - imported_before if n in sys.modules}
    local = sorted(n for n, m in new.items() if _is_in(m, dirs))
    _FROM_DIRS.update(n.split(".")[0] for n in local)
    cls = checked_class(getattr(module, class_name, None), spec, module.__name__)
    _REGISTERED[spec] = cls
    _SOURCES[spec] = _source_of(module, spec)
    parents = {".".join(module_name.split(".")[: i + 1]) for i in range(module_name.count(".") + 1)}
    _SIBLINGS[spec] = [n for n in local if n not in parents]
    return cls


def _is_in(module: object, dirs: list[Path]) -> bool:
    origin = getattr(module, "__file__", None)
    return bool(origin) and any(Path(str(origin)).resolve().is_relative_to(d) for d in dirs)


def _source_of(module: ModuleType, spec: str) -> tuple[Path, bytes] | None:
    """The module's source file and its bytes as read right after the import (what a model directory bundles),
    or None when it has no ``.py`` source (a compiled extension)."""
    origin = getattr(module, "__file__", None)
    if not origin or not origin.endswith(".py"):
        return None
    path = Path(origin).resolve()
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise UserModelError(f"model.module {spec!r}: cannot read its source {path}: {exc.strerror}") from None


def user_source(spec: str) -> tuple[Path, bytes]:
    """The source file of the module that defines ``spec``'s class and its bytes, as imported; one-line
    :class:`UserModelError` when it has none a model directory could bundle."""
    if spec not in _REGISTERED:
        user_class(spec)
    siblings = _SIBLINGS.get(spec)
    if siblings:
        raise UserModelError(
            f"model.module {spec!r} imports other modules of its directory ({', '.join(siblings)}): only its own "
            "file is bundled with a trained model, so it could not be loaded elsewhere; put them in that file, or "
            "install them as a package"
        )
    source = _SOURCES.get(spec)
    if source is None:
        raise UserModelError(
            f"model.module {spec!r} has no Python source file to bundle with the model (a compiled module?): "
            "define the class in a .py file"
        )
    return source


def module_root(spec: str, dirs: Sequence[Path]) -> Path | None:
    """The first of ``dirs`` that holds ``spec``'s top-level module or package (where :func:`load_user_class`
    imports it from), or None (an installed package)."""
    top = split_spec(spec)[0].split(".")[0]
    for d in dirs:
        if importlib.machinery.PathFinder.find_spec(top, [str(d)]) is not None:
            return Path(d)
    return None


def load_bundled_class(spec: str, source: bytes, filename: str) -> type[nn.Module]:
    """``spec``'s class from the bytes of a bundled source file, run as a module of its own
    (``losstune_user_model_<sha256 prefix>``): never what the import path would find under that name."""
    name = "losstune_user_model_" + hashlib.sha256(source).hexdigest()[:16]
    module = sys.modules.get(name)
    if module is None:
        module = ModuleType(name)
        module.__file__ = filename
        sys.modules[name] = module  # before running it, as an import does (dataclasses, pickling look it up)
        try:
            exec(compile(source, filename, "exec"), module.__dict__)
        except Exception as exc:  # the user's code: any error is theirs, said in one line
            del sys.modules[name]
            raise UserModelError(
                f"the model's bundled source {Path(filename).name} of {spec!r} failed to run: {first_line(exc)} "
                "(a bundled model may import installed packages only)"
            ) from None
    return checked_class(getattr(module, split_spec(spec)[1], None), spec, name)


def checked_class(cls: object, spec: str, module_name: str) -> type[nn.Module]:
    """``cls`` when it is an ``nn.Module`` subclass defined in ``module_name``, else one-line error."""
    module, name = split_spec(spec)
    if cls is None:
        raise UserModelError(f"model.module {spec!r}: module {module!r} has no {name!r}")
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise UserModelError(f"model.module {spec!r}: {name} is not a subclass of torch.nn.Module")
    if cls.__module__ != module_name:
        raise UserModelError(
            f"model.module {spec!r}: {name} is defined in {cls.__module__!r}, not in {module!r}: name the module "
            f"that defines it ('{cls.__module__}:{name}'), whose source file is the one bundled with the model"
        )
    return cls


def _make_way(spec: str, module_name: str, dirs: list[Path]) -> None:
    """Prepare importing ``module_name`` with ``dirs`` first on the path: a module of the same top-level name that
    losstune imported earlier from another study's directory is dropped, so that this directory's wins; a file
    here that would replace a module of the standard library, or one already imported from elsewhere (torch,
    numpy, ...), for the whole process is refused."""
    top = module_name.split(".")[0]
    here = next((d for d in dirs if importlib.machinery.PathFinder.find_spec(top, [str(d)]) is not None), None)
    if here is None:
        return
    cached = sys.modules.get(top)
    origin = getattr(cached, "__file__", None) if cached is not None else None
    if origin and Path(origin).resolve().is_relative_to(here):
        return
    if top in sys.stdlib_module_names or (cached is not None and top not in _FROM_DIRS):
        what = "the standard library's" if top in sys.stdlib_module_names else f"the already imported ({origin})"
        raise UserModelError(
            f"model.module {spec!r}: {here} holds a module {top!r} that would replace {what} {top!r} in this "
            "process: rename your file (and model.module)"
        )
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def user_class(spec: str) -> type[nn.Module]:
    """The class registered for ``spec`` in this process, else imported from the installed packages."""
    return _REGISTERED.get(spec) or load_user_class(spec)


@contextmanager
def bound(spec: str, cls: type[nn.Module]) -> Iterator[None]:
    """``spec`` builds ``cls`` inside the block (a model directory's bundled class), as before after it."""
    before = _REGISTERED.get(spec)
    _REGISTERED[spec] = cls
    try:
        yield
    finally:
        if before is None:
            _REGISTERED.pop(spec, None)
        else:
            _REGISTERED[spec] = before


def build_user_module(model: ModelConfig, n_features: int) -> nn.Module:
    """``ClassName(n_features, **kwargs)`` of ``model.module`` (its ``[rows, 1]`` output is read as ``[rows]`` by
    :func:`objectives.model.row_logits`); a failure is one :class:`UserModelError` line."""
    assert model.module is not None
    return construct(user_class(model.module), model, n_features)


def construct(cls: type[nn.Module], model: ModelConfig, n_features: int) -> nn.Module:
    try:
        net = cls(n_features, **model.kwargs)
    except Exception as exc:  # the user's __init__: any error is theirs, said in one line
        raise UserModelError(
            f"model.module {model.module!r}: {cls.__name__}(n_features={n_features}, **kwargs) failed: "
            f"{first_line(exc)}; its __init__ must take n_features and model.kwargs"
        ) from None
    if not isinstance(net, nn.Module):  # a __new__ returning something else
        raise UserModelError(f"model.module {model.module!r}: {cls.__name__}(...) did not return an nn.Module")
    return net


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
