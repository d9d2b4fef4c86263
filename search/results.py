"""The study's results table, read from the stored trials: the table the phased plan used to keep by hand."""

from __future__ import annotations

import pandas as pd

from search.plan import TrialRecord
from search.study_file import LOSS_PARAMS

# the noise columns (search.noise) stand beside the score they qualify; differences are this trial minus the other
NOISE_COLUMNS = [
    "cv_score_se", "honest_score_se", "repeats", "cv_seed", "diff_vs_reference", "diff_vs_reference_se",
    "verdict_vs_reference", "reference_trial", "diff_vs_best", "diff_vs_best_se", "verdict_vs_best", "best_trial",
]  # fmt: skip
COLUMNS = ["trial", "phase", *LOSS_PARAMS, "cv_score", "honest_score", "threshold", "state", "week", "memo",
           *NOISE_COLUMNS]  # fmt: skip


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
                cv=t.user_attrs.get("cv"),
                cv_seed=t.user_attrs.get("cv_seed"),
                fold_scores=tuple(t.user_attrs["fold_scores"]) if t.user_attrs.get("fold_scores") else None,
                folds=t.user_attrs.get("folds"),
            )
        )
    return records


def results_table(study) -> pd.DataFrame:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    # the best on the study's own splits: confirm trials (their own seeds) are ranked by export --by confirmed
    ranked = [t for t in complete if t.user_attrs.get("cv") is None]
    best = max(ranked, key=lambda t: (t.value, -t.number)).number if ranked else None
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
                **{k: a.get(k) for k in NOISE_COLUMNS},
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and pd.isna(v))


def plus_minus(value, se, signed: bool = False) -> str:
    """``0.6919 ± 0.0030``; blank without a value, the value alone without an SE."""
    if _blank(value):
        return ""
    head = f"{value:+.4f}" if signed else f"{value:.4f}"
    return head if _blank(se) else f"{head} ± {se:.4f}"


VERDICT_MARK = {"better": "better", "worse": "worse", "not distinguishable": "~same"}


def format_table(table: pd.DataFrame) -> str:
    """The table as text: each score with its SE, each difference with its SE and verdict (``~same``: not
    distinguishable), the noise columns folded into them."""
    if table.empty:
        return "(no trials yet)"
    shown = table.copy()
    if "cv_score_se" in shown.columns:
        shown["cv_score"] = [plus_minus(v, se) for v, se in zip(shown["cv_score"], shown["cv_score_se"])]
        for name, col in (("reference", "vs_reference"), ("best", "vs_best")):
            shown[col] = [
                "" if _blank(d) else f"{plus_minus(d, se, signed=True)} {VERDICT_MARK.get(v, v)} (t{int(n)})"
                for d, se, v, n in zip(shown[f"diff_vs_{name}"], shown[f"diff_vs_{name}_se"],
                                       shown[f"verdict_vs_{name}"], shown[f"{name}_trial"])
            ]  # fmt: skip
        seeds = shown["cv_seed"].map(lambda v: "" if _blank(v) else str(int(v)))
        shown = shown.drop(columns=[c for c in NOISE_COLUMNS if c in shown.columns]).assign(seed=seeds)
    for col in ("honest_score", "threshold"):
        shown[col] = shown[col].map(lambda v: "" if _blank(v) else f"{v:.4f}")
    for col in LOSS_PARAMS:
        shown[col] = shown[col].map(lambda v: "None" if _blank(v) else f"{v:g}")
    return shown.to_string(index=False)
