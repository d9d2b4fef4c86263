"""Where a table is and how to read it: the ``data:`` block of a study file.

Kept apart from :mod:`objectives.data` so that reading a study file (``losstune status``, a week whose budget is
spent) does not import pandas and NumPy, and so that a data path that is no file is refused before they are
imported (:func:`check_regular_file`: one line at once, not after a second of imports).
"""

from __future__ import annotations

import codecs
import stat
import unicodedata
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from objectives.errors import DataError

# the encodings objectives.encoding reads (Python's codec names, as codecs.lookup spells them); any other codec
# (rot13, hex, utf-32, ...) is refused where it is given, not when pandas or the decoder meets it
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "cp932", "shift_jis")


def _known_encoding(name: str) -> str:
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        canonical = None
    if canonical not in ENCODINGS:
        raise ValueError(f"encoding {name!r} is not supported: use one of {', '.join(ENCODINGS)} (or leave it out)")
    return name


def _one_character_separator(sep: str) -> str:
    if len(sep) != 1 or sep in '"\r\n\x00' or (not sep.isprintable() and sep != "\t"):
        raise ValueError(
            f"separator {sep!r} is not usable: give one printable character other than a quote "
            "(',' ';' '|' or a tab), or leave it out to detect it"
        )
    return sep


def _column_name(name: str) -> str:
    """A column name as the table reader spells it (objectives.table.column_names): stripped, Unicode NFC."""
    return unicodedata.normalize("NFC", name.strip())


ColumnName = Annotated[str, AfterValidator(_column_name)]
Encoding = Annotated[str, AfterValidator(_known_encoding)]
Separator = Annotated[str, AfterValidator(_one_character_separator)]


class DataSpec(BaseModel):
    """Where the table is and how to read it; the ``data:`` block of a study file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    target: ColumnName
    positive: str | None = None
    sep: Separator | None = None
    encoding: Encoding | None = None
    drop: tuple[ColumnName, ...] = ()
    na_values: tuple[str, ...] = ()


def check_regular_file(path: Path) -> None:
    """Refuse what is not a regular file before opening it: a directory, ``/dev/zero`` (read forever), a FIFO."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(
            f"data file not found: {path} (check the path: in a study or exported file it is relative to that "
            "file, on the command line to the current directory)"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"data path is a directory, not a CSV file: {path}")
    if not stat.S_ISREG(mode):
        raise DataError(f"data path is not a regular file (a device, a FIFO or a socket): {path}; give a CSV file")
