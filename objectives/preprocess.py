"""Preprocessing, fitted inside each fold on that fold's training rows only.

Numeric columns: median imputation, then the scaling and embedding of ``model.numeric_scaling`` and
``model.numeric_embedding`` (:mod:`objectives.numeric_encoders`). Every statistic (median, mean, quantiles, IQR,
bin edges) is fitted on the fold's training rows only. Categorical columns: most-frequent imputation, then
one-hot encoding with unknown categories ignored (an all-zero block). Fitting on all rows before splitting, as
many tutorials do, leaks the validation rows' statistics into training; here the fold's validation rows never
reach ``fit``.

Inside cross-validation the categorical columns reach the ColumnTransformers as integer codes, numbered in the
sorted order of the values. The output is the same matrix as from the strings (same one-hot column order, same
most-frequent tie-break: the smallest value), five to ten times faster, because scikit-learn encodes object
columns with a Python dictionary lookup per cell. A code is a name, not a statistic: numbering the values of
every row tells a fold nothing it could fit on, and a value absent from a fold's training rows is still unknown
to that fold's encoder. The final model is fitted on the strings themselves, so it reads raw tables.

A column whose values are all missing in a fold's training rows (a column with one value among 300 rows, say) is
kept, not dropped (``keep_empty_features``): its training rows are imputed with 0 (a constant feature, which the
scaler leaves at 0), so every fold has the same columns and none is left without features. The validation rows
that have a value in it get that value unscaled (the fold saw no values to scale by): the fold's model learned
nothing from the column, and the final model, fitted on all rows, scales it as usual.

Two more shortcuts with the same output: the folds get a plain float array rather than a DataFrame, and a numeric
column with no missing value in any row skips the median imputer, which would change nothing in it (scikit-learn
computes medians with a masked-array sort, the slowest statistic here). Its columns are put back in order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from objectives.config import STANDARD_NUMERIC, NumericEncoding

# smooth_clip and PiecewiseLinearEncoder are found here under their old names too: a model saved before
# objectives.numeric_encoders existed names them objectives.preprocess.* in its skops file
from objectives.numeric_encoders import PiecewiseLinearEncoder, numeric_encoder, smooth_clip  # noqa: F401


def _categorical_pipeline() -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)),
        ]
    )


def _numeric_pipeline(numeric: NumericEncoding) -> Pipeline:
    return Pipeline(
        [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", numeric_encoder(numeric))]
    )


def cap_quantiles(pre: ColumnTransformer, n_rows: int) -> None:
    """No more quantiles than the rows it is fitted on, for ``numeric_scaling: quantile`` (scikit-learn would do
    the same, with a warning a user cannot act on)."""
    pre.set_params(**{k: min(v, n_rows) for k, v in pre.get_params().items() if k.endswith("__n_quantiles")})


def make_preprocessor(
    numeric_columns: list[str], categorical: list[str], numeric: NumericEncoding = STANDARD_NUMERIC
) -> ColumnTransformer:
    """The preprocessing of the final model, on the raw table (numeric columns first, each a block of at most
    ``numeric.width`` columns: :func:`numeric_block_widths` once fitted; then the one-hot blocks)."""
    return ColumnTransformer(
        [
            ("numeric", _numeric_pipeline(numeric), numeric_columns),
            ("categorical", _categorical_pipeline(), categorical),
        ],
        remainder="drop",
        sparse_threshold=0.0,
    )


def _fold_preprocessor(has_missing: list[bool], n_categorical: int, numeric: NumericEncoding) -> ColumnTransformer:
    """:func:`make_preprocessor` for a float array of numeric columns then category codes, with the numeric
    columns that have no missing value given to a scaler alone (:func:`_numeric_order` restores the layout)."""
    n_numeric = len(has_missing)
    return ColumnTransformer(
        [
            ("numeric", _numeric_pipeline(numeric), [i for i in range(n_numeric) if has_missing[i]]),
            ("numeric_complete", numeric_encoder(numeric), [i for i in range(n_numeric) if not has_missing[i]]),
            ("categorical", _categorical_pipeline(), list(range(n_numeric, n_numeric + n_categorical))),
        ],
        remainder="drop",
        sparse_threshold=0.0,
    )


def _numeric_order(pre: ColumnTransformer) -> np.ndarray:
    """The output columns of a fitted :func:`_fold_preprocessor` in :func:`make_preprocessor`'s layout: each
    numeric column's block back in the table's order."""
    inputs, widths = _numeric_blocks(pre, ("numeric", "numeric_complete"))
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    order = np.argsort(np.asarray(inputs, dtype=np.int64), kind="stable")
    return np.concatenate([np.arange(starts[i], starts[i] + widths[i]) for i in order] or [np.zeros(0, np.int64)])


def numeric_block_widths(pre: ColumnTransformer) -> np.ndarray:
    """Output columns per numeric column of a fitted :func:`make_preprocessor` (numeric columns come first)."""
    return _numeric_blocks(pre, ("numeric",))[1]


def _numeric_blocks(pre: ColumnTransformer, names: tuple[str, ...]) -> tuple[list, np.ndarray]:
    """(input columns, output width of each) of the numeric columns of the fitted transformers ``names``, in
    output order: 1 column each, unless the pipeline embeds them (:meth:`PiecewiseLinearEncoder.column_widths`)."""
    inputs: list = []
    widths = [np.zeros(0, np.int64)]
    for name, _, cols in pre.transformers_:
        if name in names:
            embedding = _embedding(pre.named_transformers_[name])
            inputs += list(cols)
            widths.append(
                embedding.column_widths() if embedding is not None and len(cols) else np.ones(len(cols), np.int64)
            )
    return inputs, np.concatenate(widths)


def _embedding(fitted: object) -> PiecewiseLinearEncoder | None:
    if isinstance(fitted, PiecewiseLinearEncoder):
        return fitted
    steps = fitted.steps if isinstance(fitted, Pipeline) else []
    return next((found for _, step in steps if (found := _embedding(step)) is not None), None)


def category_codes(features: pd.DataFrame, categorical: list[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """``features`` with each categorical column replaced by float codes (NaN where missing), and per column the
    sorted distinct values: code ``i`` stands for ``vocabulary[col][i]``."""
    coded = features.copy(deep=False)
    vocabulary: dict[str, np.ndarray] = {}
    for col in categorical:
        codes, uniques = pd.factorize(features[col], sort=True)
        coded[col] = np.where(codes >= 0, codes, np.nan)
        vocabulary[col] = np.asarray(uniques, dtype=object)
    return coded, vocabulary


def fit_fold_preprocessors(
    features: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    train_rows: list[np.ndarray],
    encoding: NumericEncoding = STANDARD_NUMERIC,
    y: np.ndarray | None = None,
) -> tuple[list[ColumnTransformer], np.ndarray]:
    """One preprocessor per fold, each fitted on that fold's training rows, and every row transformed by each.
    ``y``, every row's label, is needed by target-aware bins (``encoding.target_bins``); each fold's fit gets its
    training rows' labels only.

    Returns the fitted preprocessors (fitted on :func:`category_codes`' table, so their categories are codes)
    and a ``[K, N, D]`` float32 array. Folds can see different categories and so produce different widths;
    narrower ones are padded with zero columns, which are zero for training and validation rows alike and so
    change nothing.
    """
    coded, vocabulary = category_codes(features, categorical)
    table = coded[list(numeric) + list(categorical)].to_numpy(dtype=np.float64)
    has_missing = np.isnan(table[:, : len(numeric)]).any(axis=0).tolist()
    n_rows, n_numeric = len(features), len(numeric) * encoding.width
    # the widest a fold can be: every value of every categorical column known to it
    stacked = np.zeros((len(train_rows), n_rows, n_numeric + sum(map(len, vocabulary.values()))), dtype=np.float32)
    fitted, width = [], 0
    for k, rows in enumerate(train_rows):
        pre = _fold_preprocessor(has_missing, len(categorical), encoding)
        cap_quantiles(pre, len(rows))
        # fit_transform on the training rows, then only the other rows: fitting already transformed the former
        train_block = pre.fit_transform(table[rows], None if y is None else y[rows])
        fold_width = train_block.shape[1]
        stacked[k, rows, :fold_width] = train_block
        others = np.setdiff1d(np.arange(n_rows), rows, assume_unique=True)
        if len(others):
            stacked[k, others, :fold_width] = pre.transform(table[others])
        # target-aware bins leave out the bins this fold's trees did not use: its blocks have their own widths
        numeric_order = _numeric_order(pre)
        if np.any(numeric_order != np.arange(len(numeric_order))):
            stacked[k, :, : len(numeric_order)] = stacked[k][:, numeric_order]
        fitted.append(pre)
        width = max(width, fold_width)
    if width < stacked.shape[2]:  # a value in none of the folds' training rows
        stacked = np.ascontiguousarray(stacked[:, :, :width])
    return fitted, stacked
