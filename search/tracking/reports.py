"""Per-trial report files: the plots and tables that explain one trial, written into a directory.

:func:`write_trial_reports` is pure matplotlib / pandas / scikit-learn and knows nothing about MLflow: the
tracker writes these files into a temporary directory and uploads the directory in one call.

Figures are built as :class:`matplotlib.figure.Figure` objects directly (never through pyplot), so no global
figure registry or interactive backend is involved; ``savefig`` renders them with Agg, and a figure is freed as
soon as it goes out of scope (there is no pyplot state to close). This runs after every trial of a search, so it
is kept cheap: three small PNGs at 100 dpi, long curves thinned to a few thousand points before drawing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import classification_report, precision_recall_curve

from objectives.config import TrialConfig
from objectives.data import Dataset
from objectives.evaluate import EvaluationResult
from objectives.threshold import metric_curve

log = logging.getLogger(__name__)

DPI = 100
# a curve with more points than this is thinned before drawing: invisible at this size, and much faster to render
MAX_CURVE_POINTS = 2000

LEARNING_CURVES_PNG = "learning_curves.png"
LEARNING_CURVES_CSV = "learning_curves.csv"
THRESHOLD_CURVES_PNG = "threshold_curves.png"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
CONFUSION_MATRIX_JSON = "confusion_matrix.json"
CLASSIFICATION_REPORT_TXT = "classification_report.txt"
MISCLASSIFIED_CSV = "misclassified.csv"

REPORT_FILES = (
    LEARNING_CURVES_PNG,
    LEARNING_CURVES_CSV,
    THRESHOLD_CURVES_PNG,
    CONFUSION_MATRIX_PNG,
    CONFUSION_MATRIX_JSON,
    CLASSIFICATION_REPORT_TXT,
    MISCLASSIFIED_CSV,
)

# leading columns of misclassified.csv; a feature with one of these names is written as "<name> (feature)"
_MISCLASSIFIED_KEYS = ("kind", "row", "fold", "y_true", "proba")


def write_trial_reports(
    directory: Path, result: EvaluationResult, dataset: Dataset, config: TrialConfig, top_n: int = 20
) -> list[Path]:
    """Write the report files of one trial into ``directory`` (created if missing); return their paths.

    Files: ``learning_curves.png/.csv``, ``threshold_curves.png``, ``confusion_matrix.png/.json``,
    ``classification_report.txt`` and ``misclassified.csv`` (see :data:`REPORT_FILES`). Epochs are numbered
    from 1, data rows from 0 (the row of the table as read, header excluded).
    """
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    if len(result.oof_proba) != dataset.n_rows:
        raise ValueError(
            f"the result has {len(result.oof_proba)} OOF predictions but the dataset has {dataset.n_rows} rows: "
            "they do not belong together"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    negative, positive = dataset.negative_label, dataset.positive_label
    written = [
        *_learning_curves(directory, result),
        _threshold_curves(directory / THRESHOLD_CURVES_PNG, result, config),
        *_confusion_matrix(directory, result, negative, positive),
        _classification_report(directory / CLASSIFICATION_REPORT_TXT, result, negative, positive),
        _misclassified(directory / MISCLASSIFIED_CSV, result, dataset, top_n),
    ]
    log.debug("wrote %d report files to %s", len(written), directory)
    return written


# --------------------------------------------------------------------------------------------------- figures


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.6, left: float = 0.1) -> tuple[Figure, list]:
    """The one way figures are made here: a pyplot-free Figure with ``ncols`` side-by-side axes.

    Margins are fixed rather than computed (tight or constrained layout would cost an extra draw of every
    figure: about a third of the reports' time).
    """
    fig = Figure(figsize=(width * ncols, height), dpi=DPI)
    fig.subplots_adjust(left=left / ncols, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()  # nothing registered anywhere: clearing drops the artists now instead of at garbage collection
    return path


def _thin(*arrays: np.ndarray, keep: int | None = None) -> tuple[np.ndarray, ...]:
    """Every array sampled at the same at most ~MAX_CURVE_POINTS evenly spaced indices (ends and ``keep`` kept)."""
    n = len(arrays[0])
    if n <= MAX_CURVE_POINTS:
        return arrays
    idx = np.linspace(0, n - 1, MAX_CURVE_POINTS).astype(np.int64)
    if keep is not None:
        idx = np.union1d(idx, [keep])
    return tuple(a[idx] for a in arrays)


# ------------------------------------------------------------------------------------------ learning curves


def _learning_curves(directory: Path, result: EvaluationResult) -> list[Path]:
    train = np.atleast_2d(np.asarray(result.train_loss, dtype=np.float64))
    val = np.atleast_2d(np.asarray(result.val_loss, dtype=np.float64))
    if train.shape != val.shape:
        raise ValueError(f"train_loss {train.shape} and val_loss {val.shape} must both be [folds, epochs]")
    folds, epochs = train.shape
    epoch = np.arange(1, epochs + 1)

    table = pd.DataFrame(
        {
            "fold": np.repeat(np.arange(folds), epochs),
            "epoch": np.tile(epoch, folds),
            "train_loss": train.ravel(),
            "val_loss": val.ravel(),
        }
    )
    csv_path = directory / LEARNING_CURVES_CSV
    table.to_csv(csv_path, index=False)

    fig, (ax_train, ax_val) = _figure(ncols=2, width=4.6, left=0.16)
    marker = "o" if epochs <= 30 else None
    for k in range(folds):
        color = f"C{k % 10}"
        ax_train.plot(epoch, train[k], color=color, marker=marker, markersize=3, linewidth=1, label=f"fold {k}")
        ax_val.plot(epoch, val[k], color=color, marker=marker, markersize=3, linewidth=1, label=f"fold {k}")
    if folds > 1:
        ax_train.plot(epoch, train.mean(axis=0), color="black", linewidth=2, label="mean")
        ax_val.plot(epoch, val.mean(axis=0), color="black", linewidth=2, label="mean")
    for ax, title in ((ax_train, "training loss"), (ax_val, "validation loss")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if epochs <= 20:
            ax.set_xticks(epoch)
    ax_train.set_ylabel("loss")
    # the two panels are on the same scale, so train and validation can be compared by eye
    finite = np.concatenate([train.ravel(), val.ravel()])
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.max() > finite.min():
        pad = 0.05 * (finite.max() - finite.min())
        for ax in (ax_train, ax_val):
            ax.set_ylim(finite.min() - pad, finite.max() + pad)
    ax_val.legend(fontsize="small", loc="upper right", ncol=2 if folds > 5 else 1)
    return [_save(fig, directory / LEARNING_CURVES_PNG), csv_path]


# ----------------------------------------------------------------------------------------- threshold curves


def _threshold_curves(path: Path, result: EvaluationResult, config: TrialConfig) -> Path:
    y, proba, t = result.y_true, result.oof_proba, result.threshold
    label = config.metric.label

    precision, recall, _ = precision_recall_curve(y, proba)
    recall, precision = _thin(recall, precision)
    thresholds, scores = metric_curve(y, proba, config.metric)
    thresholds = np.clip(thresholds, 0.0, 1.0)  # the "nothing positive" cut sits just above the highest proba
    thresholds, scores = _thin(thresholds, scores, keep=int(np.argmax(scores)))

    fig, (ax_pr, ax_m) = _figure(ncols=2, width=4.6, left=0.16)
    ax_pr.plot(recall, precision, color="C0", linewidth=1.2, drawstyle="steps-post")
    ax_pr.axhline(result.positive_rate, color="grey", linestyle=":", linewidth=1, label="positive rate")
    ax_pr.plot(
        [result.recall],
        [result.precision],
        "o",
        color="C3",
        markersize=7,
        label=f"threshold {t:.3f}\nP={result.precision:.3f} R={result.recall:.3f}",
    )
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02))
    ax_pr.set_title(f"precision-recall (PR-AUC {result.pr_auc:.3f})")
    ax_pr.legend(fontsize="small", loc="lower left")

    ax_m.plot(thresholds, scores, color="C0", linewidth=1.2)
    ax_m.axvline(t, color="C3", linestyle="--", linewidth=1)
    ax_m.plot(
        [t], [result.oof_score], "o", color="C3", markersize=7, label=f"{label}={result.oof_score:.3f} at {t:.3f}"
    )
    ax_m.set(xlabel="threshold (predict positive when proba >= threshold)", ylabel=f"OOF {label}", xlim=(0, 1))
    ax_m.set_ylim(0, max(1.0, float(np.nanmax(scores)) if len(scores) else 1.0) * 1.02)
    ax_m.set_title(f"{label} versus threshold")
    ax_m.legend(fontsize="small", loc="upper right")
    for ax in (ax_pr, ax_m):
        ax.grid(alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------- confusion matrix


def _confusion_matrix(directory: Path, result: EvaluationResult, negative: str, positive: str) -> list[Path]:
    (tn, fp), (fn, tp) = result.confusion_matrix
    json_path = directory / CONFUSION_MATRIX_JSON
    json_path.write_text(
        json.dumps({"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp), "threshold": float(result.threshold)})
        + "\n"
    )

    counts = np.array([[tn, fp], [fn, tp]], dtype=np.int64)
    # colour by the share of each true class, so the minority row is readable; the text shows the counts
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, (ax,) = _figure(ncols=1, width=4.6, height=3.8, left=0.28)
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                f"{counts[i, j]:,}\n({shares[i, j]:.1%})",
                ha="center",
                va="center",
                color="white" if shares[i, j] > 0.6 else "black",
                fontsize=11,
            )
    # matplotlib's bundled font has no Japanese glyphs: such labels would be boxes (and a warning per glyph);
    # the JSON and the classification report keep the real labels
    ticks = [
        f"{negative} (neg)" if negative.isascii() else "negative",
        f"{positive} (pos)" if positive.isascii() else "positive",
    ]
    ax.set_xticks([0, 1], ticks)
    ax.set_yticks([0, 1], ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"OOF confusion matrix at threshold {result.threshold:.4f}", fontsize=10)
    return [_save(fig, directory / CONFUSION_MATRIX_PNG), json_path]


# ------------------------------------------------------------------------------------------------- tables


def _classification_report(path: Path, result: EvaluationResult, negative: str, positive: str) -> Path:
    pred = (result.oof_proba >= result.threshold).astype(np.int64)
    report = classification_report(
        result.y_true, pred, labels=[0, 1], target_names=[str(negative), str(positive)], digits=4, zero_division=0
    )
    header = (
        f"out-of-fold predictions of {len(pred)} rows, positive = {positive!r}, "
        f"predicted positive when proba >= {result.threshold:.6g} (threshold chosen to maximise {result.metric})\n\n"
    )
    path.write_text(header + report)
    return path


def _misclassified(path: Path, result: EvaluationResult, dataset: Dataset, top_n: int) -> Path:
    y = np.asarray(result.y_true).astype(bool)
    proba = np.asarray(result.oof_proba, dtype=np.float64)
    pred = proba >= result.threshold
    rows = np.arange(len(proba))

    fp_rows = rows[pred & ~y]
    fp_rows = fp_rows[np.lexsort((fp_rows, -proba[fp_rows]))][:top_n]  # most confident false alarms first
    fn_rows = rows[~pred & y]
    fn_rows = fn_rows[np.lexsort((fn_rows, proba[fn_rows]))][:top_n]  # most confidently missed positives first
    picked = np.r_[fp_rows, fn_rows].astype(np.int64)

    head = pd.DataFrame(
        {
            "kind": ["FP"] * len(fp_rows) + ["FN"] * len(fn_rows),
            "row": picked,
            "fold": np.asarray(result.fold_of_row)[picked],
            "y_true": y[picked].astype(np.int64),
            "proba": proba[picked],
        }
    )
    features = dataset.features.iloc[picked].reset_index(drop=True)
    features.columns = [f"{c} (feature)" if c in _MISCLASSIFIED_KEYS else c for c in features.columns]
    pd.concat([head, features], axis=1).to_csv(path, index=False)
    return path
