"""The study's results table, read from the stored trials: the table the phased plan used to keep by hand."""

from __future__ import annotations

import pandas as pd

from search.plan import TrialRecord
from search.run_params import UNWEIGHTED
from search.study_file import LOSS_PARAMS

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
    return pd.DataFrame(rows, columns=COLUMNS)


def for_people(table: pd.DataFrame) -> pd.DataFrame:
    """The table as it is written for people (the MLflow results table, JSON and CSV alike): an unweighted
    alpha is ``none``, as in the run names and the console, rather than JSON's null or CSV's blank cell, which
    would read as a missing value. (``status --json`` keeps null: it is for programs.)"""
    shown = table.copy()
    if "alpha" in shown.columns:
        shown["alpha"] = shown["alpha"].astype(object).map(lambda v: UNWEIGHTED if v is None or pd.isna(v) else v)
    return shown


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no trials yet)"
    shown = table.copy()
    for col in ("cv_score", "honest_score", "threshold"):
        shown[col] = shown[col].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.4f}")
    for col in LOSS_PARAMS:
        shown[col] = shown[col].map(lambda v: UNWEIGHTED if v is None or pd.isna(v) else f"{v:g}")
    return shown.to_string(index=False)
