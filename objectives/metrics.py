r"""Metrics from confusion counts, vectorised over many thresholds at once.

.. math::

    F_\beta = \frac{(1 + \beta^2)\,TP}{(1 + \beta^2)\,TP + \beta^2\,FN + FP}, \qquad
    F_1 = F_{\beta=1}, \qquad
    \text{macro } F_1 = \tfrac12\left(F_1^{+} + F_1^{-}\right)

where :math:`F_1^{-}` is F1 with the negative class taken as positive (:math:`TN` in place of :math:`TP`).
An undefined ratio (0/0) scores 0, as scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

import numpy as np

from objectives.config import MetricConfig


def _fbeta(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta: float) -> np.ndarray:
    b2 = beta * beta
    num = (1.0 + b2) * tp.astype(np.float64)
    den = num + b2 * fn + fp
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def score_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray, metric: MetricConfig
) -> np.ndarray:
    if metric.name == "f1":
        return _fbeta(tp, fp, fn, 1.0)
    if metric.name == "fbeta":
        return _fbeta(tp, fp, fn, metric.beta)
    if metric.name == "macro_f1":
        return 0.5 * (_fbeta(tp, fp, fn, 1.0) + _fbeta(tn, fn, fp, 1.0))
    raise ValueError(f"unknown metric {metric.name!r}")
