"""The study's results table, read from the stored trials: the table the phased plan used to keep by hand."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from search.plan import TrialRecord
from search.study_file import LOSS_PARAMS

if TYPE_CHECKING:  # pandas is imported by the functions that build a table, not by the plan's trial_records
    import pandas as pd

COLUMNS = ["trial", "phase", *LOSS_PARAMS, "cv_score", "honest_score", "threshold", "state", "week", "memo"]


def trial_records(study) -> list[TrialRecord]:
    records = []
    for t in study.get_trials(deepcopy=False):
        loss = t.user_attrs.get("loss") or {k: t.params.get(k) for k in LOSS_PARAMS}
        records.append(
            TrialRecord(
                number=t.number,
                phase=t.user_attrs.get("phase", "?"),
                state=t.state.name,
                loss=loss,
                value=t.value if t.state.name == "COMPLETE" else None,
                failure=t.user_attrs.get("failure"),
            )
        )
    return records


def results_table(study) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(results_rows(study), columns=COLUMNS)


def results_rows(study) -> list[dict]:
    """One dict per stored trial, keyed by :data:`COLUMNS` (missing values are None); no pandas needed."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: (t.value, -t.number)).number if complete else None
    rows = []
    for t in trials:
        a = t.user_attrs
        loss = a.get("loss") or {k: t.params.get(k) for k in LOSS_PARAMS}
        if t.state.name == "FAIL":
            memo = a.get("failure_reason") or "worker stopped (no heartbeat): retried"
        else:
            memo = "best" if t.number == best else ""
        rows.append(
            {
                "trial": t.number,
                "phase": a.get("phase", "?"),
                **{k: loss.get(k) for k in LOSS_PARAMS},
                "cv_score": t.value if t.state.name == "COMPLETE" else None,
                "honest_score": a.get("honest_score"),
                "threshold": a.get("threshold"),
                "state": t.state.name,
                "week": a.get("week"),
                "memo": memo,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a text table, columns right-aligned under their names (as pandas prints a frame)."""
    if not rows:
        return "(no trials yet)"
    columns = list(rows[0])
    cells = [[_cell(col, row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(line[i]) for line in cells)) for i, col in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(" ".join(text.rjust(w) for text, w in zip(line, widths)).rstrip() for line in lines)


def _cell(column: str, value) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if column in ("cv_score", "honest_score", "threshold"):
        return "" if missing else f"{value:.4f}"
    if column in LOSS_PARAMS:
        return "None" if missing else f"{value:g}"
    return "" if missing else str(value)
