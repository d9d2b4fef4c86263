"""Where a table is and how to read it: the ``data:`` block of a study file.

Kept apart from :mod:`objectives.data` so that reading a study file (``losstune status``, a week whose budget is
spent) does not import pandas and NumPy, and so that a data path that is no file is refused before they are
imported (:func:`check_regular_file`: one line at once, not after a second of imports).
"""

from __future__ import annotations

import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from objectives.errors import DataError


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


def check_regular_file(path: Path) -> None:
    """Refuse what is not a regular file before opening it: a directory, ``/dev/zero`` (read forever), a FIFO."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(
            f"data file not found: {path} (check the path; in a study file it is relative to the study)"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"data path is a directory, not a CSV file: {path}")
    if not stat.S_ISREG(mode):
        raise DataError(f"data path is not a regular file (a device, a FIFO or a socket): {path}; give a CSV file")
