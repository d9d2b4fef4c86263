"""Reading a user's CSV into a validated, typed :class:`Dataset`.

Everything a user can get wrong about a table is caught here, with one line that says what is wrong and how to
fix it: the file, its encoding and separator, the target, junk in numeric columns, ID columns, duplicated or
empty columns. Nothing is dropped silently: an ID-like column is excluded with a warning that names it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from objectives.data_spec import DataSpec  # also imported from here; it lives where pandas is not imported
from objectives.encoding import decode, detect_file
from objectives.errors import DataError

log = logging.getLogger(__name__)

SEPARATORS = (",", ";", "\t", "|")
# float32's range: the features reach the network as float32, and wider numbers overflow to inf there (and their
# squares overflow the float64 variance of the scaler first)
FLOAT32_MAX = float(np.finfo(np.float32).max)
# a column counts as "numeric with junk" when at least this share of its non-missing values parse as numbers
NUMERIC_SHARE = 0.9


@dataclass
class Dataset:
    """Features, a 0/1 target and what is needed to reproduce and explain them."""

    features: pd.DataFrame
    y: np.ndarray  # int8, 1 = positive
    positive_label: str
    negative_label: str
    numeric_columns: list[str]
    categorical_columns: list[str]
    fingerprint: str
    source: Path
    excluded_columns: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return len(self.y)

    @property
    def positive_rate(self) -> float:
        return float(self.y.mean())


def fingerprint_bytes(raw: bytes) -> str:
    """Content hash of the file as read: any edit to the data changes it."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


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
        if not _is_numeric(df[col]):
            codes, uniques = pd.factorize(df[col].astype("object"), use_na_sentinel=True)
            cleaned = np.array([u.strip() if isinstance(u, str) else u for u in uniques] + [np.nan], dtype=object)
            cleaned[[isinstance(u, str) and u == "" for u in cleaned]] = np.nan
            df[col] = pd.Series(cleaned[codes], index=df.index, dtype=object)  # code -1 picks the trailing NaN
    return df


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def _coerce_numeric_or_explain(df: pd.DataFrame, exclude: set[str]) -> pd.DataFrame:
    """Turn text columns that hold numbers into numbers; refuse ones that are numbers plus a few junk strings."""
    for col in df.columns:
        if col in exclude or _is_numeric(df[col]):
            continue
        present = df[col].dropna()
        if present.empty:
            continue
        # parse each distinct value once, then spread the verdict over the rows
        codes, uniques = pd.factorize(present)
        parsed_uniques = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce").to_numpy()
        bad = pd.Series(np.isnan(parsed_uniques[codes].astype(float)), index=present.index)
        if not bad.any():
            df[col] = pd.to_numeric(df[col])
        elif (~bad).mean() >= NUMERIC_SHARE:
            junk = present[bad]
            rows = ", ".join(
                f"line {i + 2}: {v!r}" for i, v in zip(junk.index[:3], junk.iloc[:3])
            )  # +2: header, 1-based
            values = sorted({str(v) for v in junk.unique()})[:5]
            raise DataError(
                f"column {col!r} is numeric except {len(junk)} value(s) ({rows}); if they mean 'missing', declare "
                f"them with " + " ".join(f"--na-value {v!r}" for v in values) + " (na_values in a study file)"
            )
    return df


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
    df, fingerprint, _ = _read_table(spec)
    return df, fingerprint


def _read_table(spec: DataSpec) -> tuple[pd.DataFrame, str, str]:
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
    try:
        reader = pd.read_csv(
            spec.path,
            sep=sep,
            encoding=encoding,
            dtype=object,
            na_values=list(spec.na_values),
            keep_default_na=True,
            chunksize=chunksize,
        )
        rows = 0
        for chunk in reader:
            rows += len(chunk)
            yield normalise_frame(chunk)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise _csv_error(exc, spec.path, sep) from None
    if rows == 0:
        raise DataError(f"data file has a header but no rows: {spec.path}")


def rows_text(index: pd.Index, first_line: int | None, limit: int = 5) -> str:
    """``line 5, line 9`` (a file: index + ``first_line``) or ``row 3, row 7`` (a frame), at most ``limit``."""
    shown = [f"line {i + first_line}" if first_line is not None else f"row {i}" for i in index[:limit]]
    return ", ".join(shown) + (", ..." if len(index) > limit else "")


def refuse_out_of_range(col: str, values: pd.Series, where: str, first_line: int | None) -> None:
    """Numbers the network cannot take: inf, or finite but beyond float32 (1e308 would become inf there)."""
    with np.errstate(invalid="ignore"):
        bad = np.abs(values.to_numpy(dtype=np.float64)) > FLOAT32_MAX
    if bad.any():
        examples = ", ".join(f"{v:g}" for v in values[bad].unique()[:3])
        raise DataError(
            f"column {col!r}{where} has {int(bad.sum())} infinite or too large value(s) ({examples}; beyond "
            f"float32's ±{FLOAT32_MAX:.1e}) at {rows_text(values.index[bad], first_line)}: replace them with "
            "finite numbers in that range (rescale the column), or declare their text missing with --na-value "
            "(na_values in a study file)"
        )


def _target_labels(y_raw: pd.Series, spec: DataSpec) -> tuple[np.ndarray, str, str]:
    if y_raw.isna().any():
        rows = ", ".join(str(i + 2) for i in y_raw.index[y_raw.isna()][:5])
        raise DataError(
            f"target column {spec.target!r} has {int(y_raw.isna().sum())} missing value(s) (line {rows}): "
            "remove those rows or fill in their labels"
        )
    labels = y_raw.map(lambda v: str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v))
    counts = labels.value_counts()
    if len(counts) != 2:
        shown = ", ".join(f"{k!r} ({v})" for k, v in counts.head(5).items())
        raise DataError(
            f"target column {spec.target!r} must have exactly 2 classes, found {len(counts)}: {shown}"
            + (" (is this the right column?)" if len(counts) > 2 else "")
        )
    if spec.positive is None:
        # minority class; on an exact tie the larger label (so 1 over 0, "yes" over "no")
        positive = sorted(counts.index, key=lambda k: (-counts[k], k))[-1]
    else:
        positive = str(spec.positive)
        if positive not in counts.index:
            raise DataError(
                f"positive label {positive!r} is not in target column {spec.target!r} "
                f"(its values are {sorted(counts.index)})"
            )
    negative = next(k for k in counts.index if k != positive)
    return (labels == positive).to_numpy(dtype=np.int8), positive, negative


def load_dataset(spec: DataSpec) -> Dataset:
    """Read, validate and split a CSV into features and a 0/1 target."""
    df, fingerprint, encoding = _read_table(spec)
    if spec.target not in df.columns:
        raise DataError(
            f"target column {spec.target!r} not found in {spec.path.name} (read as {encoding}); columns are: "
            f"{', '.join(df.columns[:30])}"
        )
    missing_drop = [c for c in spec.drop if c not in df.columns]
    if missing_drop:
        raise DataError(f"--drop column(s) {missing_drop} not found in {spec.path.name}")
    if spec.target in spec.drop:
        raise DataError(f"cannot drop the target column {spec.target!r}")
    y, positive, negative = _target_labels(df[spec.target], spec)
    features = df.drop(columns=[spec.target, *spec.drop])
    if features.shape[1] == 0:
        raise DataError("no feature columns left after removing the target and the dropped columns")

    empty = [c for c in features.columns if features[c].isna().all()]
    if empty:
        raise DataError(
            f"column(s) {empty} have no values at all: drop them with " + " ".join(f"--drop {c!r}" for c in empty)
        )

    features = _coerce_numeric_or_explain(features, exclude=set())
    numeric = [c for c in features.columns if _is_numeric(features[c])]
    for col in numeric:
        features[col] = features[col].astype(np.float64)
        refuse_out_of_range(col, features[col], "", first_line=2)
    text_cols = [c for c in features.columns if c not in numeric]
    excluded = [c for c in text_cols if len(features) > 1 and features[c].nunique(dropna=False) == len(features)]
    categorical = [c for c in text_cols if c not in excluded]
    if not numeric and not categorical:
        raise DataError("no usable feature columns: every column was an ID or was dropped")
    # warnings only once every refusal above has passed: a refused table is one line, not a warning and a line
    for col in excluded:
        log.warning("column %r has a distinct value in every row (an ID?): excluded from the features", col)
    features = features.drop(columns=excluded)
    for col in numeric:
        if _looks_like_row_counter(features[col]):
            # kept (a number can be a real feature), but an ID used as a feature leaks row order into the model
            log.warning(
                "column %r counts the rows (distinct consecutive integers, an ID?): kept as a feature; "
                "leave it out with --drop %s (drop: [%s] in a study file)",
                col,
                col,
                col,
            )
    for col in categorical:
        features[col] = features[col].astype("object")
    return Dataset(
        features=features,
        y=y,
        positive_label=positive,
        negative_label=negative,
        numeric_columns=numeric,
        categorical_columns=categorical,
        fingerprint=fingerprint,
        source=spec.path,
        excluded_columns=excluded,
    )


def _looks_like_row_counter(s: pd.Series) -> bool:
    """Integers, all distinct, covering a consecutive range: 1..n or 0..n-1, in any order."""
    values = s.to_numpy(dtype=np.float64, na_value=np.nan)
    if len(values) < 3 or np.isnan(values).any() or not np.all(values == np.round(values)):
        return False
    return len(np.unique(values)) == len(values) and values.max() - values.min() == len(values) - 1


def check_folds(dataset: Dataset, folds: int) -> None:
    """Stratified K-fold needs at least ``folds`` rows of each class."""
    n_pos = int(dataset.y.sum())
    n_neg = dataset.n_rows - n_pos
    for name, label, count in (
        ("positive", dataset.positive_label, n_pos),
        ("negative", dataset.negative_label, n_neg),
    ):
        if count >= folds:
            continue
        if count < 2:
            raise DataError(
                f"only {count} {name} row(s) (label {label!r}): cross-validation needs at least 2 of each class"
            )
        raise DataError(
            f"only {count} {name} row(s) (label {label!r}) for {folds} folds: every fold needs at least one; "
            f"use --folds {max(2, count)} or more data"
        )
