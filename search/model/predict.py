"""``losstune predict``: a model directory applied to a CSV, written as a submission file.

The test file is read like the training data (the config's separator, encoding unless ``--encoding`` names
another, and missing-value strings), checked against the columns the model needs, and given one output row per
input row: the id column (``--id-col``, or by default the ID-like column excluded in training when the file has
it), the label named after the target (0/1 at the saved threshold, or the original labels) and optionally the
probability of the positive class.

The file is streamed in chunks of :data:`CHUNK_ROWS` rows (:func:`objectives.data.iter_table`), so memory stays
flat with the row count; the output is written by :func:`search.formats.atomic_write.atomic_file` (a temporary
file of its own, renamed only when every row is written). Any refusal (a bad value in the last chunk, a full
disk, SIGTERM) removes the temporary file and leaves an existing ``OUT`` as it was; an output that is an input
(the test file, a file of the model directory) is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from objectives.data import DataSpec, iter_table
from objectives.errors import DataError, LosstuneError
from objectives.final import FORWARD_ROWS, CheckedFeatures
from search.formats.atomic_write import atomic_file, refuse_input_as_output
from search.model.model_dir import PackagedModel, warn_unusual
from search.model.model_dir_loading import load_model_dir

log = logging.getLogger(__name__)

CHUNK_ROWS = 48 * FORWARD_ROWS  # a multiple of the forward block: the same probabilities as the whole file at once
FIRST_LINE = 2  # row i of the file is line i + 2 (the header is line 1)


@dataclass
class PredictOutcome:
    out: Path
    n_rows: int
    n_positive: int
    threshold: float
    id_col: str | None
    label_col: str


@dataclass
class _Unusual:
    """What the chunks had that is worth a warning, gathered so that it is said once for the whole file."""

    unseen: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    has_value: dict[str, bool] = field(default_factory=dict)

    def add(self, checked: CheckedFeatures) -> None:
        for col, count in checked.unseen.items():
            self.unseen[col] = self.unseen.get(col, 0) + count
            shown = self.examples.setdefault(col, [])
            shown.extend(v for v in checked.unseen_examples[col] if v not in shown and len(shown) < 3)
        for col in checked.features.columns:
            self.has_value[col] = self.has_value.get(col, False) or bool(checked.features[col].notna().any())

    def warn(self, n_rows: int, source: str) -> None:
        empty = [c for c, seen in self.has_value.items() if not seen] if n_rows > 1 else []
        warn_unusual(self.unseen, self.examples, empty, source)


def predict_file(
    model_dir: Path,
    test_path: Path,
    out: Path,
    id_col: str | None = None,
    proba: bool = False,
    labels: Literal["01", "original"] = "01",
    encoding: str | None = None,
) -> PredictOutcome:
    out = Path(out)
    if not out.parent.is_dir():  # before the model is read
        raise LosstuneError(f"output directory does not exist: {out.parent}")
    refuse_input_as_output(out, [Path(model_dir), Path(test_path)])
    if Path(model_dir).resolve() in out.parent.resolve().parents or out.parent.resolve() == Path(model_dir).resolve():
        raise LosstuneError(f"the output {out} is inside the model directory {model_dir}: write it elsewhere")
    model = load_model_dir(model_dir)
    data = model.config.data
    from search.formats.validation import validated

    read_as = {"sep": data.sep, "encoding": encoding or data.encoding, "na_values": data.na_values}  # --encoding wins
    spec = validated(DataSpec, "predict", {"path": Path(test_path), "target": model.target, **read_as})
    source = Path(test_path).name
    unusual, n_rows, n_positive = _Unusual(), 0, 0
    label_col = model.target
    with atomic_file(out, inputs=[Path(test_path)]) as f:
        for chunk in iter_table(spec, CHUNK_ROWS):
            if n_rows == 0:
                id_col = _id_column(model, chunk, id_col, source)
                label_col = model.target if model.target != id_col else "label"
            checked = model.check(chunk, source, FIRST_LINE)
            unusual.add(checked)
            pred = model.predict_checked(checked, FIRST_LINE)
            _result(model, chunk, pred, id_col, label_col, proba, labels).to_csv(
                f, index=False, header=n_rows == 0, lineterminator="\n"
            )
            n_rows += len(chunk)
            n_positive += int(pred["label"].sum())
    unusual.warn(n_rows, source)
    return PredictOutcome(out, n_rows, n_positive, model.threshold, id_col, label_col)


def _result(
    model: PackagedModel,
    chunk: pd.DataFrame,
    pred: pd.DataFrame,
    id_col: str | None,
    label_col: str,
    proba: bool,
    labels: str,
) -> pd.DataFrame:
    result = pd.DataFrame(index=chunk.index)
    if id_col is not None:
        result[id_col] = chunk[id_col].map(spreadsheet_safe)
    if labels == "original":
        mapping = {1: spreadsheet_safe(model.final.positive_label), 0: spreadsheet_safe(model.final.negative_label)}
        result[label_col] = pred["label"].map(mapping)
    else:
        result[label_col] = pred["label"]
    if proba:
        result["proba"] = pred["proba"]
    return result


# a cell a spreadsheet would run as a formula (CSV injection): =, +, -, @, and tab or CR before one of them
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell that a spreadsheet would take for a formula (``=HYPERLINK(...)``, ``+cmd|...``) written with
    a leading ``'``, which spreadsheets show as text; a number (``-5``, ``+1.5``), a missing cell and any other
    text are written as they are."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


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
