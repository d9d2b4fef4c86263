"""Pydantic validation errors as one readable line that names the field and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml

from pydantic import BaseModel, ValidationError

from objectives.errors import LosstuneError

M = TypeVar("M", bound=BaseModel)


def _is_type_tag(part: object) -> bool:
    # pydantic names union branches in the location, e.g. "literal['default']" or "list[function-after[...]]"
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _field(where: str, loc: tuple) -> str:
    out = where
    for part in loc:
        if _is_type_tag(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def one_line(exc: ValidationError, where: str) -> str:
    errors = exc.errors()
    # For "default or a list" unions, the branch the user clearly meant (the structured one) explains best.
    structured = [e for e in errors if not any(isinstance(p, str) and p.startswith("literal[") for p in e["loc"])]
    errors = structured or errors
    parts = []
    for err in errors:
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, (dict, list)) else f" (got {got!r})"
        parts.append(f"{_field(where, err['loc'])}: {msg}{shown}")
    return "; ".join(dict.fromkeys(parts))


def validated(model: type[M], where: str, data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise LosstuneError(one_line(exc, where)) from None


def read_yaml(path: Path, what: str) -> Any:
    """The parsed content of a YAML (or JSON) file, or one-line :class:`LosstuneError` naming ``what`` it is."""
    path = Path(path)
    if not path.is_file():
        raise LosstuneError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LosstuneError(f"{path.name} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
