"""Where a table is and how to read it: the ``data:`` block of a study file.

Kept apart from :mod:`objectives.data` so that reading a study file (``losstune status``, a week whose budget is
spent) does not import pandas and NumPy.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class DataSpec(BaseModel):
    """Where the table is and how to read it; the ``data:`` block of a study file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    target: str
    positive: str | None = None
    sep: str | None = None
    encoding: str | None = None
    drop: tuple[str, ...] = ()
    na_values: tuple[str, ...] = ()
