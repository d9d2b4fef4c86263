"""Reading a user's CSV file into a raw table: the file, its encoding and separator, the header, blank cells.

What is wrong with the file itself is caught here, with one line that says what is wrong and how to fix it: not a
regular file, empty, an encoding or separator it is not in, duplicated column names, unparsable CSV. Whether the
table is usable (the target, the column types) is :mod:`objectives.data`'s part.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from objectives.data_spec import DataSpec, check_regular_file
from objectives.encoding import decode, detect_file
from objectives.errors import DataError

# reading a file is part of reading the data: its log lines (which encoding a file was read in) carry the logger
# name that --verbose output shows and log filters select, objectives.data
log = logging.getLogger("objectives.data")

SEPARATORS = (",", ";", "\t", "|")
# a table read whole is held about this many times over at its peak: the bytes, the decoded text, the frame
READ_COPIES = 4


def fingerprint_bytes(raw: bytes) -> str:
    """Content hash of the file as read: any edit to the data changes it."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def _read_bytes(path: Path) -> bytes:
    check_regular_file(path)
    check_readable_size(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file is empty: {path}")
    return raw


def check_readable_size(path: Path) -> None:
    """A file read whole (a training table) must fit, with the text and the frame made from it, in the memory
    available now: a 40 GB (sparse) file is one line, not a ``MemoryError`` after minutes."""
    from objectives.memory import available_bytes

    size, have = path.stat().st_size, available_bytes()
    if have is not None and size * READ_COPIES > have:
        raise DataError(
            f"data file {path} is {size / 1e9:.1f} GB: reading it takes about {READ_COPIES}x that, more than the "
            f"{have / 1e9:.1f} GB of memory available; use a smaller sample of it"
        )


def _detect_sep(text: str) -> str:
    head = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(head, delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        return ","


def _header(text: str | Iterator[str], sep: str, path: Path) -> list[str]:
    """The header's column names (:func:`column_names`), from the start of the text or a file's lines; the whole
    header however long (a quoted name may span lines), within the csv module's field limit."""
    lines = io.StringIO(text) if isinstance(text, str) else text
    try:
        first = next(csv.reader(lines, delimiter=sep), [])
    except csv.Error as exc:
        raise DataError(
            f"cannot read the header of {path} with separator {sep!r}: {exc} (an unclosed quote?)".splitlines()[0]
        ) from None
    return column_names(first, str(path))


def column_names(names: Iterable[object], source: str) -> list[str]:
    """Column names as every reader sees them: text, surrounding spaces stripped, in Unicode NFC (so that the
    NFC and NFD spellings of one name, as macOS and Windows write them, are one column); a name holding a
    control character (a newline, an ANSI escape) is refused, since it would be printed raw in messages."""
    out = [unicodedata.normalize("NFC", str(c).strip().lstrip("\ufeff").strip()) for c in names]  # a BOM: no name
    odd = next((c for c in out if not c.isprintable()), None)
    if odd is not None:
        raise DataError(
            f"column name {odd[:60]!r} in {source} holds a control character (a line break, a tab, an escape "
            "sequence): rename the column"
        )
    dupes = sorted(c for c, n in Counter(out).items() if n > 1)
    if dupes:
        raise DataError(f"duplicate column name(s) {dupes} in {source}: rename them so each column is unique")
    return out


def _blank_to_missing(df: pd.DataFrame) -> pd.DataFrame:
    """Blank and whitespace-only cells are missing values; surrounding spaces are not part of a category, and a
    category is in Unicode NFC.

    Text columns are cleaned through their distinct values (``pd.factorize``): a 45k-row column of a dozen
    categories costs a dozen ``str.strip`` calls, not 45k."""
    for col in df.columns:
        if not is_numeric(df[col]):
            codes, uniques = pd.factorize(df[col].astype("object"), use_na_sentinel=True)
            cleaned = np.array([_clean(u) for u in uniques] + [np.nan], dtype=object)
            cleaned[[isinstance(u, str) and u == "" for u in cleaned]] = np.nan
            df[col] = pd.Series(cleaned[codes], index=df.index, dtype=object)  # code -1 picks the trailing NaN
    return df


def _clean(value: object) -> object:
    """A text cell without surrounding spaces, in Unicode NFC (one category however the file spells it)."""
    return unicodedata.normalize("NFC", value.strip()) if isinstance(value, str) else value


def is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def normalise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A raw table as every reader sees it: column names stripped, blank and whitespace-only cells missing,
    surrounding spaces not part of a category. One rule for a training file, a test file read in chunks and a
    served model's input frame."""
    df.columns = column_names(df.columns, "the input")
    return _blank_to_missing(df)


def _csv_error(exc: Exception, path: Path, sep: str) -> DataError:
    if isinstance(exc, pd.errors.EmptyDataError):
        return DataError(f"data file has no columns: {path}")
    return DataError(f"cannot parse {path} as CSV with separator {sep!r}: {exc}".splitlines()[0])


def read_table(spec: DataSpec) -> tuple[pd.DataFrame, str]:
    """The raw table (blanks as NaN) and its fingerprint, or a :class:`DataError` that says what is wrong."""
    df, fingerprint, _ = read_table_and_encoding(spec)
    return df, fingerprint


def read_table_and_encoding(spec: DataSpec) -> tuple[pd.DataFrame, str, str]:
    """:func:`read_table`, and the encoding the file was read in (for messages that name it)."""
    raw = _read_bytes(spec.path)
    text, encoding = decode(raw, spec.encoding, str(spec.path))
    log.info("read %s as %s", spec.path, encoding)
    sep = spec.sep or _detect_sep(text)
    _header(text, sep, spec.path)
    try:
        df = pd.read_csv(
            io.StringIO(text), sep=sep, na_values=list(spec.na_values), keep_default_na=True, low_memory=False
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise _csv_error(exc, spec.path, sep) from None
    if df.empty:
        raise DataError(f"data file has a header but no rows: {spec.path}")
    return normalise_frame(df), fingerprint_bytes(raw), encoding


def iter_table(spec: DataSpec, chunksize: int) -> Iterator[pd.DataFrame]:
    """The raw table in chunks of ``chunksize`` rows, in bounded memory, parsed as :func:`read_table` parses it.

    Every cell is read as text and numbers are parsed later, column by column, with the same function whatever
    the chunk (:func:`objectives.final.check_features`): pandas' per-chunk type inference would read a column as
    numbers in one chunk and as text in the next. The index runs on across chunks, so row ``i`` is line ``i + 2``.
    """
    check_regular_file(spec.path)
    encoding = detect_file(spec.path, spec.encoding)
    log.info("read %s as %s", spec.path, encoding)
    with open(spec.path, encoding=encoding, newline="") as f:
        head = f.read(1 << 16)
    if not head.strip():
        raise DataError(f"data file is empty: {spec.path}")
    sep = spec.sep or _detect_sep(head)
    with open(spec.path, encoding=encoding, newline="") as f:
        _header(f, sep, spec.path)  # the whole header, not only the part in the first block
    rows = 0
    try:
        with pd.read_csv(
            spec.path,
            sep=sep,
            encoding=encoding,
            dtype=object,
            na_values=list(spec.na_values),
            keep_default_na=True,
            chunksize=chunksize,
        ) as reader:  # closed also when a chunk is refused (the generator is then closed mid-way)
            for chunk in reader:
                rows += len(chunk)
                yield normalise_frame(chunk)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise _csv_error(exc, spec.path, sep) from None
    if rows == 0:
        raise DataError(f"data file has a header but no rows: {spec.path}")


# --- reading a frame by the schema a model was trained with (losstune predict and the served model alike)


def missing_as_na(values: pd.Series, missing_text: set[str]) -> pd.Series:
    """``values`` with the cells whose text is one of ``missing_text`` (the study's na_values) missing."""
    if not missing_text or is_numeric(values):
        return values
    return values.mask(values.map(lambda v: isinstance(v, str) and v.strip() in missing_text))


def numeric_spellings(known: list[str]) -> dict[float, str]:
    """The training categories that are numbers written as text (codes such as ``007``), by their value, where
    one value has one spelling: a frame parsed by ``pd.read_csv`` hands the model 7, and the category is "007"."""
    found: dict[float, list[str]] = {}
    for text in known:
        try:
            found.setdefault(float(text), []).append(text)
        except ValueError:
            continue
    return {value: texts[0] for value, texts in found.items() if len(texts) == 1}


def category_text(value: Any, spellings: dict[float, str] | None = None) -> object:
    """A category as the training data had it: text (3.0 read as a number becomes "3", or the training's own
    spelling of that number, "003", when it had exactly one); missing stays NaN. ``value`` is a cell of an object
    column: any scalar pandas holds (``pd.isna`` takes each of them)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return np.nan
    if spellings and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        known = spellings.get(float(value))
        if known is not None:
            return known
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def categories_as_trained(values: pd.Series, known: list[str], missing_text: set[str]) -> pd.Series:
    """A categorical column as the model knows its categories (:func:`category_text`), na_values missing."""
    spellings = numeric_spellings(known)
    return missing_as_na(values, missing_text).map(lambda v: category_text(v, spellings)).astype("object")
