"""Pydantic validation errors as one readable line that names the field and what is allowed."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from objectives.errors import LosstuneError

M = TypeVar("M", bound=BaseModel)


def one_line(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
        field = f"{where}.{loc}" if loc else where
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        parts.append(f"{field}: {msg}{shown}")
    return "; ".join(parts)


def validated(model: type[M], where: str, data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise LosstuneError(one_line(exc, where)) from None
