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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from objectives.data_spec import DataSpec, check_regular_file
from objectives.encoding import decode, detect_file
from objectives.errors import DataError

# reading a file is part of reading the data: its log lines (which encoding a file was read in) carry the logger
# name that --verbose output shows and log filters select, objectives.data
log = logging.getLogger("objectives.data")

SEPARATORS = (",", ";", "\t", "|")


def fingerprint_bytes(raw: bytes) -> str:
    """Content hash of the file as read: any edit to the data changes it."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def _read_bytes(path: Path) -> bytes:
    check_regular_file(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file is empty: {path}")
    return raw


def _detect_sep(text: str) -> str:
    head = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(head, delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        return ","


def _header(text: str, sep: str) -> list[str]:
    first = next(csv.reader(io.StringIO(text), delimiter=sep), [])
    return [c.strip() for c in first]


def _blank_to_missing(df: pd.DataFrame) -> pd.DataFrame:
    """Blank and whitespace-only cells are missing values; surrounding spaces are not part of a category.

    Text columns are cleaned through their distinct values (``pd.factorize``): a 45k-row column of a dozen
    categories costs a dozen ``str.strip`` calls, not 45k."""
    for col in df.columns:
        if not is_numeric(df[col]):
            codes, uniques = pd.factorize(df[col].astype("object"), use_na_sentinel=True)
            cleaned = np.array([u.strip() if isinstance(u, str) else u for u in uniques] + [np.nan], dtype=object)
            cleaned[[isinstance(u, str) and u == "" for u in cleaned]] = np.nan
            df[col] = pd.Series(cleaned[codes], index=df.index, dtype=object)  # code -1 picks the trailing NaN
    return df


def is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def normalise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A raw table as every reader sees it: column names stripped, blank and whitespace-only cells missing,
    surrounding spaces not part of a category. One rule for a training file, a test file read in chunks and a
    served model's input frame."""
    df.columns = [str(c).strip() for c in df.columns]
    return _blank_to_missing(df)


def _check_header(header: list[str], path: Path) -> None:
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(f"duplicate column name(s) {dupes} in {path}: rename them so each column is unique")


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
    _check_header(_header(text, sep), spec.path)
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
    _check_header(_header(head, sep), spec.path)
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
