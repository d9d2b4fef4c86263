"""A user's CSV as a validated, typed :class:`Dataset`: features, a 0/1 target and their column types.

Everything a user can get wrong about a table is caught here or in :mod:`objectives.table` (which reads the
file), with one line that says what is wrong and how to fix it: the target, junk in numeric columns, numbers
beyond float32, ID columns, empty columns. Nothing is dropped silently: an ID-like column is excluded with a
warning that names it.

The reading functions of :mod:`objectives.table` (:func:`read_table`, :func:`iter_table`,
:func:`normalise_frame`, :func:`fingerprint_bytes`) and :class:`~objectives.data_spec.DataSpec` are imported
from here too (``__all__``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from objectives.data_spec import DataSpec
from objectives.errors import DataError
from objectives.table import (
    check_regular_file,
    fingerprint_bytes,
    is_numeric,
    iter_table,
    normalise_frame,
    read_table,
    read_table_and_encoding,
)

__all__ = [
    "DataSpec",
    "Dataset",
    "check_folds",
    "check_regular_file",
    "fingerprint_bytes",
    "iter_table",
    "load_dataset",
    "normalise_frame",
    "read_table",
    "refuse_out_of_range",
    "rows_text",
]

log = logging.getLogger(__name__)

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


def _coerce_numeric_or_explain(df: pd.DataFrame, exclude: set[str]) -> pd.DataFrame:
    """Turn text columns that hold numbers into numbers; refuse ones that are numbers plus a few junk strings."""
    for col in df.columns:
        if col in exclude or is_numeric(df[col]):
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
    df, fingerprint, encoding = read_table_and_encoding(spec)
    _check_target_and_drop(df, spec, encoding)
    y, positive, negative = _target_labels(df[spec.target], spec)
    features, numeric, categorical, excluded = _typed_features(df.drop(columns=[spec.target, *spec.drop]))
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


def _check_target_and_drop(df: pd.DataFrame, spec: DataSpec, encoding: str) -> None:
    """The target and the ``drop`` columns are columns of the table, and the target is not dropped."""
    if spec.target not in df.columns:
        raise DataError(
            f"target column {spec.target!r} not found in {spec.path.name} (read as {encoding}); columns are: "
            f"{', '.join(df.columns[:30])}"
        )
    missing_drop = [c for c in spec.drop if c not in df.columns]
    if missing_drop:
        raise DataError(
            f"column(s) to drop {missing_drop} not found in {spec.path.name} (data.drop in a study file, --drop on "
            "the command line)"
        )
    if spec.target in spec.drop:
        raise DataError(f"cannot drop the target column {spec.target!r}")


def _typed_features(features: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """The feature columns typed (numeric as float64, the others as categories), with the numeric, the
    categorical and the excluded (ID-like) column names; a table with no usable feature is refused."""
    if features.shape[1] == 0:
        raise DataError("no feature columns left after removing the target and the dropped columns")
    empty = [c for c in features.columns if features[c].isna().all()]
    if empty:
        raise DataError(
            f"column(s) {empty} have no values at all: drop them (data.drop: {empty} in a study file, or "
            + " ".join(f"--drop {c!r}" for c in empty)
            + ")"
        )
    features = _coerce_numeric_or_explain(features, exclude=set())
    numeric = [c for c in features.columns if is_numeric(features[c])]
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
                "column %(col)r counts the rows (distinct consecutive integers, an ID?): kept as a feature; "
                "leave it out with --drop %(col)s (drop: [%(col)s] in a study file)",
                {"col": col},
            )
    for col in categorical:
        features[col] = features[col].astype("object")
    return features, numeric, categorical, excluded


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
