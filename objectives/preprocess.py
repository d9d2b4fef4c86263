"""Preprocessing, fitted inside each fold on that fold's training rows only.

Numeric columns: median imputation, then scaling (``model.numeric_scaling``): ``standard`` (mean 0, variance 1),
``quantile`` (scikit-learn's ``QuantileTransformer`` to a normal distribution: ranks, so outliers and skew are
gone) or ``robust`` (``RobustScaler``: minus the median, over the interquartile range, then the smooth clipping
:func:`smooth_clip`, as in RealMLP, Holzmüller et al. 2024). Every statistic (median, mean, quantiles, IQR) is
fitted on the fold's training rows only. Categorical columns: most-frequent imputation, then
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
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
)

from objectives.config import STANDARD_NUMERIC, NumericEncoding

SMOOTH_CLIP = 3.0  # |x| beyond about this many IQRs is squashed towards it


def smooth_clip(x: np.ndarray) -> np.ndarray:
    """``x / sqrt(1 + (x / c)^2)`` with ``c`` = :data:`SMOOTH_CLIP`: the identity near 0, bounded by ±c, smooth
    and monotone (RealMLP's smooth clipping): an outlier keeps its order but cannot dominate a layer."""
    return x / np.sqrt(1.0 + np.square(x / SMOOTH_CLIP))


def _numeric_encoder(numeric: NumericEncoding) -> Pipeline | StandardScaler | QuantileTransformer:
    """The numeric scaler of ``model.numeric_scaling``, followed by the piecewise-linear embedding when
    ``model.numeric_embedding`` asks for it (a fresh, unfitted one)."""
    scaler = _scaler(numeric.scaling)
    if not numeric.bins:
        return scaler
    return Pipeline([("scale", scaler), ("embed", PiecewiseLinearEncoder(numeric.bins, numeric.target_bins))])


class PiecewiseLinearEncoder(TransformerMixin, BaseEstimator):
    """Each column ``x`` as ``bins`` columns ``e_t = clip((x - b_{t-1}) / (b_t - b_{t-1}), 0, 1)``: the
    piecewise-linear encoding (PLE) of Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular
    Deep Learning". A value's encoding is 1 for every bin below it, its position inside its own bin, 0 above, so
    the first layer can give each range of a column its own slope. A bin of zero width (repeated edges: a column
    with a frequent value) is a step at its edge, ``x >= b_t``. Beyond the training range a value keeps the
    encoding of the nearest end (the clip): an outlier cannot push a layer further than the largest training
    value did.

    The edges ``b_0 <= ... <= b_bins``:

    - ``target=False``: the training rows' quantiles.
    - ``target=True``: target-aware bins (the paper's "tree-based" bins). The edges are the split thresholds of a
      decision tree fitted to the training labels on this column alone, with at most ``bins`` leaves and at least
      :data:`TREE_MIN_LEAF` rows per leaf, plus the column's minimum and maximum. A column with fewer useful
      splits gets fewer bins, and its unused bins (always 0) are left out of the output: a column the tree split
      ``u`` times gives ``u + 1`` bins (:meth:`column_widths`). Why leave them out: they change nothing a layer
      computes but its cost: on bank marketing 64 of 119 are unused, and the week ran 1.15x faster without them
      (tests/benchmarks/batch_last_run.md). Each column also keeps its scaled value, clipped to
      ±:data:`KEPT_VALUE_CLIP`, as one more column. Why: quantile edges put no
      edge where the label changes. On a census table, capital gain is 0 for 92 % of rows, so its quantile bins
      collapse onto 0. Measured on five tables (tests/benchmarks/model_last_run.md), tree edges helped the census
      and mammography tables, and keeping the value helped the bank table. The labels are the fold's training
      rows' only (``fit`` is never given the validation rows).

    Written here rather than taken from scikit-learn's ``SplineTransformer`` (degree-1 splines span the same
    functions) because a saved model's preprocessing is loaded with skops, and this class holds only a float
    array, while the spline's fitted state holds SciPy objects skops would have to be told to trust."""

    target = False  # an encoder saved by losstune 0.2 has no such attribute: it loads as quantile bins
    # the output columns kept, in target mode (unused bins dropped); None: all of them, as an encoder saved by
    # losstune 0.3.0 gives (its network was trained on them all)
    kept_columns_: np.ndarray | None = None

    def __init__(self, bins: int = 16, target: bool = False) -> None:
        self.bins = bins
        self.target = target

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> PiecewiseLinearEncoder:
        x = np.asarray(x, dtype=np.float64)
        self.kept_columns_ = None  # a refit (set_params) must not keep an earlier fit's columns
        if not self.target:
            self.edges_ = np.quantile(x, np.linspace(0.0, 1.0, self.bins + 1), axis=0).T  # [columns, bins + 1]
        elif y is None:
            raise ValueError("target-aware bins are fitted on the training rows' labels: pass y to fit")
        else:
            self.edges_ = np.stack([_tree_edges(column, np.asarray(y), self.bins) for column in x.T])
            used = np.isfinite(self.edges_[:, 1:])  # a bin from +inf to +inf is never reached
            self.kept_columns_ = np.flatnonzero(np.concatenate([used, np.ones((len(used), 1), bool)], axis=1))
        self.n_features_in_ = x.shape[1]
        return self

    def column_widths(self) -> np.ndarray:
        """Output columns per input column, in order (fitted)."""
        per_column = self.bins + self.target
        if self.kept_columns_ is None:
            return np.full(self.n_features_in_, per_column)
        return np.bincount(self.kept_columns_ // per_column, minlength=self.n_features_in_)

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        low, high = self.edges_[:, :-1], self.edges_[:, 1:]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            width = high - low  # NaN for an unused target-aware bin (+inf to +inf): a step never reached
            cell = x[:, :, np.newaxis]
            ramp = np.where(width > 0, (cell - low) / np.where(width > 0, width, 1.0), (cell >= high).astype(float))
        encoded = np.clip(ramp, 0.0, 1.0)
        if self.target:
            kept = np.clip(x, -KEPT_VALUE_CLIP, KEPT_VALUE_CLIP)[:, :, np.newaxis]
            encoded = np.concatenate([encoded, kept], axis=2)
        encoded = encoded.reshape(len(x), -1)
        return encoded if self.kept_columns_ is None else encoded[:, self.kept_columns_]

    def get_feature_names_out(self, input_features: list[str] | None = None) -> np.ndarray:
        names = list(input_features) if input_features is not None else [f"x{i}" for i in range(self.n_features_in_)]
        suffixes = [f"_ple{t}" for t in range(self.bins)] + (["_value"] if self.target else [])
        out = np.array([name + suffix for name in names for suffix in suffixes], dtype=object)
        return out if self.kept_columns_ is None else out[self.kept_columns_]


TREE_MIN_LEAF = 64  # rows per leaf of a target-aware bin (as in the rtdl_num_embeddings examples)
KEPT_VALUE_CLIP = 5.0  # the scaled value kept beside target-aware bins, clipped to this many units


def _tree_edges(column: np.ndarray, y: np.ndarray, bins: int) -> np.ndarray:
    """``bins + 1`` edges: the column's minimum, a one-column decision tree's thresholds on the labels ``y``, the
    maximum, then ``+inf`` for each bin the tree did not use (a bin from +inf to +inf: always 0)."""
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(
        max_leaf_nodes=bins, min_samples_leaf=TREE_MIN_LEAF, min_impurity_decrease=1e-4, random_state=0
    ).fit(column[:, np.newaxis], y)
    thresholds = tree.tree_.threshold[tree.tree_.feature >= 0]
    edges = np.unique(np.concatenate([[column.min(), column.max()], thresholds]))
    return np.concatenate([edges, np.full(bins + 1 - len(edges), np.inf)])


def _scaler(scaling: str) -> Pipeline | StandardScaler | QuantileTransformer:
    """The numeric scaler of ``model.numeric_scaling`` (a fresh, unfitted one)."""
    if scaling == "standard":
        return StandardScaler()
    if scaling == "quantile":
        # subsample=None: every training row's value enters the quantiles (deterministic, no RNG)
        return QuantileTransformer(output_distribution="normal", n_quantiles=1000, subsample=None)
    if scaling == "robust":
        # unit_variance: the IQR of a normal column maps to that of N(0, 1), so the clip acts at about 3 sigma
        clip = FunctionTransformer(smooth_clip, feature_names_out="one-to-one")
        return Pipeline([("robust", RobustScaler(unit_variance=True)), ("clip", clip)])
    raise ValueError(f"unknown numeric scaling {scaling!r}: standard, quantile or robust")


def _categorical_pipeline() -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)),
        ]
    )


def _numeric_pipeline(numeric: NumericEncoding) -> Pipeline:
    return Pipeline(
        [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", _numeric_encoder(numeric))]
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
            ("numeric_complete", _numeric_encoder(numeric), [i for i in range(n_numeric) if not has_missing[i]]),
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
