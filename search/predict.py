"""``losstune predict``: a model directory applied to a CSV, written as a submission file.

The test file is read like the training data (the config's separator, encoding and missing-value strings),
checked against the columns the model needs, and given one output row per input row: the id column (``--id-col``,
or by default the ID-like column excluded in training when the file has it), the label named after the target
(0/1 at the saved threshold, or the original labels) and optionally the probability of the positive class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from objectives.data import DataSpec, read_table
from objectives.errors import DataError, LosstuneError
from search.model_package import PackagedModel, load_model_dir

log = logging.getLogger(__name__)


@dataclass
class PredictOutcome:
    out: Path
    n_rows: int
    n_positive: int
    threshold: float
    id_col: str | None
    label_col: str


def predict_file(
    model_dir: Path, test_path: Path, out: Path, id_col: str | None = None, proba: bool = False,
    labels: Literal["01", "original"] = "01",
) -> PredictOutcome:  # fmt: skip
    out = Path(out)
    if not out.parent.is_dir():
        raise LosstuneError(f"output directory does not exist: {out.parent}")
    model = load_model_dir(model_dir)
    data = model.config.data
    spec = DataSpec(path=Path(test_path), target=model.target, sep=data.sep, encoding=data.encoding,
                    na_values=data.na_values)  # fmt: skip
    frame, _ = read_table(spec)
    id_col = _id_column(model, frame, id_col, Path(test_path).name)
    pred = model.predict(frame, source=Path(test_path).name)
    label_col = model.target if model.target != id_col else "label"
    result = pd.DataFrame(index=frame.index)
    if id_col is not None:
        result[id_col] = frame[id_col]
    if labels == "original":
        mapping = {1: model.final.positive_label, 0: model.final.negative_label}
        result[label_col] = pred["label"].map(mapping)
    else:
        result[label_col] = pred["label"]
    if proba:
        result["proba"] = pred["proba"]
    tmp = out.with_name(out.name + ".tmp")
    result.to_csv(tmp, index=False)
    tmp.replace(out)  # atomic: an interrupted write never leaves a half file under the real name
    return PredictOutcome(out, len(result), int(pred["label"].sum()), model.threshold, id_col, label_col)


def _id_column(model: PackagedModel, frame: pd.DataFrame, wanted: str | None, source: str) -> str | None:
    if wanted is not None:
        if wanted not in frame.columns:
            columns = ", ".join(frame.columns[:30])
            raise DataError(f"--id-col {wanted!r} is not a column of {source}; columns are: {columns}")
        return wanted
    excluded = model.manifest.get("trained_on", {}).get("excluded_columns") or []
    return next((c for c in excluded if c in frame.columns), None)


def format_predict(o: PredictOutcome) -> str:
    kept = f"id column {o.id_col!r}" if o.id_col else "no id column (give one with --id-col)"
    return (
        f"wrote {o.n_rows} row(s) to {o.out}: {o.n_positive} predicted positive at threshold {o.threshold:.4f}; "
        f"label column {o.label_col!r}, {kept}"
    )
