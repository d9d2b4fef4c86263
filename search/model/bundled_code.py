"""The losstune code a model directory carries, derived from what its pyfunc model imports.

``mlflow.pyfunc.load_model`` imports :mod:`search.model.pyfunc_model` from the directory's ``code/`` (so that a
model loads where losstune is not installed, or is another version). The files copied there are the import
closure of that module inside losstune's own packages, read from the source: moving or adding a module changes
what is bundled, with nothing to update by hand. Imports under ``if TYPE_CHECKING:`` are left out (they never
run); imports inside functions are kept (they run when the function is called). Every package ``__init__.py``
on the way is bundled too, since Python runs it before the module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the folder holding the objectives and search packages
OWN_PACKAGES = ("objectives", "search")
ENTRY_MODULE = "search.model.pyfunc_model"


def _source_file(module: str) -> Path | None:
    """The file of one of losstune's modules or packages, or None when ``module`` is none of them."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name ``tree`` imports at run time (absolute; ``from a import b`` gives ``a`` and ``a.b``)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def bundled_modules(entry: str = ENTRY_MODULE) -> list[str]:
    """The names of losstune's modules and packages that importing ``entry`` runs, sorted."""
    seen: set[str] = set()
    todo = _with_parents(entry)
    while todo:
        module = todo.pop()
        if module in seen or module.split(".")[0] not in OWN_PACKAGES:
            continue
        path = _source_file(module)
        if path is None:  # ``from package import name`` where name is not a module
            continue
        seen.add(module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in _imported(tree, module, path.name == "__init__.py"):
            todo.extend(_with_parents(name))
    return sorted(seen)


def bundled_files(entry: str = ENTRY_MODULE) -> list[Path]:
    """The source files of :func:`bundled_modules`, relative to :data:`ROOT`."""
    files = {_source_file(m) for m in bundled_modules(entry)}
    return sorted(f.relative_to(ROOT) for f in files if f is not None)
