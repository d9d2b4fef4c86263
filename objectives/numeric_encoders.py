"""How a numeric column reaches the model, once imputed: the maths of ``model.numeric_scaling`` and
``model.numeric_embedding`` (:class:`~objectives.config.NumericEncoding`), as fresh, unfitted scikit-learn
transformers that :mod:`objectives.preprocess` puts into each fold's pipeline.

Scaling: ``standard`` (mean 0, variance 1), ``quantile`` (scikit-learn's ``QuantileTransformer`` to a normal
distribution: ranks, so outliers and skew are gone) or ``robust`` (``RobustScaler``: minus the median, over the
interquartile range, then the smooth clipping :func:`smooth_clip`, as in RealMLP, Holzmüller et al. 2024).
Embedding: :class:`PiecewiseLinearEncoder`, on quantile or target-aware bins. Every statistic (mean, quantiles,
IQR, bin edges) is fitted where :mod:`objectives.preprocess` fits it: on a fold's training rows only.

A saved model's preprocessing names these classes and functions (skops), so their names are part of the model
directory format: ``search.model.model_dir.TRUSTED_SKOPS_TYPES`` lists them, here and under
``objectives.preprocess``, where models saved before this module existed found them.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, QuantileTransformer, RobustScaler, StandardScaler

from objectives.config import NumericEncoding

SMOOTH_CLIP = 3.0  # |x| beyond about this many IQRs is squashed towards it


def smooth_clip(x: np.ndarray) -> np.ndarray:
    """``x / sqrt(1 + (x / c)^2)`` with ``c`` = :data:`SMOOTH_CLIP`: the identity near 0, bounded by ±c, smooth
    and monotone (RealMLP's smooth clipping): an outlier keeps its order but cannot dominate a layer."""
    return x / np.sqrt(1.0 + np.square(x / SMOOTH_CLIP))


def numeric_encoder(numeric: NumericEncoding) -> Pipeline | StandardScaler | QuantileTransformer:
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
