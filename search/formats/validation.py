"""Pydantic validation errors as one readable line that names the field and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from objectives.errors import LosstuneError

M = TypeVar("M", bound=BaseModel)
MAX_YAML_BYTES = 16 * 2**20  # study files and exported configurations are a few KB


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
        shown = (
            "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, (dict, list)) else f" (got {got!r})"
        )
        parts.append(f"{_field(where, err['loc'])}: {msg}{shown}")
    return "; ".join(dict.fromkeys(parts))


def validated(model: type[M], where: str, data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise LosstuneError(one_line(exc, where)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so
    a second ``budget:`` would override the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged by SafeLoader, not a key
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's construct_mapping says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {first} and line {line}): keep one", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, name: str) -> Any:
    """Parsed YAML (or JSON) text, or one-line :class:`LosstuneError`: the one YAML reader of the project, for
    study files, exported configurations and a model directory's ``MLmodel`` and ``exported_config.yaml``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LosstuneError(f"{name} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:  # PyYAML composes nested nodes recursively: [[[[...]]]] a few thousand deep
        raise LosstuneError(f"{name} is not a usable YAML file: nested too deeply") from None


def read_yaml(path: Path, what: str) -> Any:
    """The parsed content of a YAML (or JSON) file, or one-line :class:`LosstuneError` naming ``what`` it is."""
    path = Path(path)
    if not path.is_file():  # also refuses a directory, /dev/zero or a FIFO, before opening it
        if path.exists():
            raise LosstuneError(f"{what} is not a regular file: {path}")
        raise LosstuneError(f"{what} not found: {path}")
    if path.stat().st_size > MAX_YAML_BYTES:  # a huge (or sparse) file: one line, not a MemoryError
        raise LosstuneError(f"{what} {path} is larger than {MAX_YAML_BYTES // 2**20} MB: not a losstune file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LosstuneError(f"{path.name} is not valid YAML: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise LosstuneError(f"cannot read {what} {path}: {exc.strerror}") from None
    return parse_yaml(text, path.name)
