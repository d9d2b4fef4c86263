"""Preprocessing, fitted inside each fold on that fold's training rows only.

Numeric columns: median imputation, then standardisation. Categorical columns: most-frequent imputation, then
one-hot encoding with unknown categories ignored (an all-zero block). Fitting on all rows before splitting, as
many tutorials do, leaks the validation rows' statistics into training; here the fold's validation rows never
reach ``fit``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def make_preprocessor(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)),
                    ]
                ),
                categorical,
            ),
        ],
        remainder="drop",
        sparse_threshold=0.0,
    )


def fit_fold_preprocessors(
    features: pd.DataFrame, numeric: list[str], categorical: list[str], train_rows: list[np.ndarray]
) -> tuple[list[ColumnTransformer], np.ndarray]:
    """One preprocessor per fold, each fitted on that fold's training rows, and every row transformed by each.

    Returns the fitted preprocessors and a ``[K, N, D]`` float32 array. Folds can see different categories and
    so produce different widths; narrower ones are padded with zero columns, which are zero for training and
    validation rows alike and so change nothing.
    """
    fitted, blocks = [], []
    for rows in train_rows:
        pre = make_preprocessor(numeric, categorical).fit(features.iloc[rows])
        fitted.append(pre)
        blocks.append(np.asarray(pre.transform(features), dtype=np.float32))
    width = max(b.shape[1] for b in blocks)
    stacked = np.zeros((len(blocks), len(features), width), dtype=np.float32)
    for k, block in enumerate(blocks):
        stacked[k, :, : block.shape[1]] = block
    return fitted, stacked
