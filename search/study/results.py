"""The study's results table, read from the stored trials: the table the phased plan used to keep by hand."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from search.study.loss_params import LOSS_PARAMS, UNWEIGHTED
from search.study.loss_point import loss_values
from search.study.plan import PlanTrial, config_key
from search.study.ranking import choose, reference_trial
from search.study.stored_config import stored_loss
from search.study.trial_record import StoredTrial, read_trial

if TYPE_CHECKING:  # pandas is imported by the functions that build a table, not by the plan's plan_trials
    import optuna
    import pandas as pd

    from objectives.config import LossConfig

# the noise columns (search.study.noise) stand beside the score they qualify; differences are this trial minus the other
NOISE_COLUMNS = [
    "cv_score_se",
    "honest_score_se",
    "repeats",
    "cv_seed",
    "diff_vs_reference",
    "diff_vs_reference_se",
    "verdict_vs_reference",
    "reference_trial",
    "reference_paired_trial",
    "diff_vs_best",
    "diff_vs_best_se",
    "verdict_vs_best",
    "best_trial",
]
COLUMNS = [
    "trial",
    "phase",
    *LOSS_PARAMS,
    "cv_score",
    "honest_score",
    "threshold",
    "state",
    "week",
    "memo",
    *NOISE_COLUMNS,
]


def plan_trial_of(t: optuna.trial.FrozenTrial, stored: StoredTrial | None = None) -> PlanTrial:
    """What the plan and the paired comparisons read of a stored trial (``stored``: its record, when read)."""
    a = stored or read_trial(t)
    return PlanTrial(
        number=t.number,
        phase=a.phase_name,
        state=t.state.name,
        loss=stored_loss(t, a),
        value=t.value if t.state.name == "COMPLETE" else None,
        failure=a.failure,
        cv=None if a.cv is None else a.cv.model_dump(),
        cv_seed=a.cv_seed,
        fold_scores=a.fold_scores or None,
        folds=a.folds,
        repeats=a.repeats,
        fingerprint=a.data_fingerprint,
    )


def plan_trials(study: optuna.Study) -> list[PlanTrial]:
    """Every stored trial as the plan sees it (:func:`plan_trial_of`)."""
    return [plan_trial_of(t) for t in study.get_trials(deepcopy=False)]


def results_table(study: optuna.Study, reference: LossConfig | None = None) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(results_rows(study, reference), columns=COLUMNS)


def results_rows(study: optuna.Study, reference: LossConfig | None = None) -> list[dict[str, Any]]:
    """One dict per stored trial, keyed by :data:`COLUMNS` (missing values are None); no pandas needed.

    The memo marks the study's choice (``best (by confirmed)``: :func:`search.study.ranking.choose` with
    ``auto``, what ``export`` picks) and, given the study's ``reference`` configuration, its one reference
    trial; ``reference_trial`` is then that trial on every row, and ``reference_paired_trial`` the reference's
    run a row was paired with when it is another one (a confirm phase's re-run on its seed)."""
    trials = study.get_trials(deepcopy=False)
    choice = choose(trials)
    ref = None if reference is None else reference_trial(trials, config_key(reference))
    rows = []
    for t in trials:
        a = read_trial(t)
        loss = loss_values(stored_loss(t, a))  # a row is flat
        if t.state.name == "FAIL":
            memo = a.failure_reason or "worker stopped (no heartbeat): retried"
        else:
            marks = [f"best (by {choice.rule})"] if choice is not None and t.number == choice.number else []
            memo = "; ".join([*marks, *(["reference"] if t.number == ref else [])])
        paired_ref = a.reference_trial
        noise = {k: getattr(a, k, None) for k in NOISE_COLUMNS}  # reference_paired_trial: set below, or None
        if ref is not None and paired_ref is not None:
            noise["reference_trial"] = ref
            noise["reference_paired_trial"] = paired_ref if paired_ref != ref else None
        rows.append(
            {
                "trial": t.number,
                "phase": a.phase_name,
                **loss,
                "cv_score": t.value if t.state.name == "COMPLETE" else None,
                "honest_score": a.honest_score,
                "threshold": a.threshold,
                "state": t.state.name,
                "week": a.week,
                "memo": memo,
                **noise,
            }
        )
    return rows


def _blank(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def plus_minus(value: float | None, se: float | None, signed: bool = False) -> str:
    """``0.6919 ± 0.0030``; blank without a value, the value alone without an SE."""
    if _blank(value):
        return ""
    head = f"{value:+.4f}" if signed else f"{value:.4f}"
    return head if _blank(se) else f"{head} ± {se:.4f}"


VERDICT_MARK = {"better": "better", "worse": "worse", "not distinguishable": "~same"}


def format_table(table: pd.DataFrame | list[dict[str, Any]]) -> str:
    """The table (or :func:`results_rows`) as text, columns right-aligned under their names: each score with its
    SE, each difference with its SE and verdict (``~same``: not distinguishable), the noise columns folded into
    them. No pandas needed for rows."""
    records = table if isinstance(table, list) else table.to_dict("records")
    rows = [{str(k): v for k, v in row.items()} for row in records]
    if not rows:
        return "(no trials yet)"
    shown = [_shown(row) for row in rows]
    columns = list(shown[0])
    cells = [[row[col] for col in columns] for row in shown]
    widths = [max(len(col), *(len(line[i]) for line in cells)) for i, col in enumerate(columns)]
    return "\n".join(" ".join(t.rjust(w) for t, w in zip(line, widths)).rstrip() for line in [columns, *cells])


def _shown(row: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for col, v in row.items():
        if col in NOISE_COLUMNS:
            continue
        if col == "cv_score":
            out[col] = plus_minus(v, row.get("cv_score_se"))
        elif col in ("honest_score", "threshold"):
            out[col] = "" if _blank(v) else f"{v:.4f}"
        elif col in LOSS_PARAMS:
            out[col] = v if isinstance(v, str) else UNWEIGHTED if _blank(v) else f"{v:g}"  # str: a row of no one loss
        else:
            out[col] = "" if _blank(v) else str(v)
    if "cv_score_se" in row:
        for name in ("reference", "best"):
            d, se = row.get(f"diff_vs_{name}"), row.get(f"diff_vs_{name}_se")
            if _blank(d):
                out[f"vs_{name}"] = ""
                continue
            verdict, other = row[f"verdict_vs_{name}"], row[f"{name}_trial"]  # recorded with every difference
            run = row.get("reference_paired_trial") if name == "reference" else None
            who = f"t{int(other):03d}" + ("" if run is None or _blank(run) else f" as t{int(run):03d}")
            out[f"vs_{name}"] = f"{plus_minus(d, se, signed=True)} {VERDICT_MARK.get(verdict, verdict)} ({who})"
        out["seed"] = "" if _blank(row.get("cv_seed")) else str(int(row["cv_seed"]))
    return out


def for_people(table: pd.DataFrame) -> pd.DataFrame:
    """The table as it is written for people (the MLflow results table, JSON and CSV alike): an unweighted
    alpha is ``none``, as in the run names and the console, rather than JSON's null or CSV's blank cell, which
    would read as a missing value. (``status --json`` keeps null: it is for programs.)"""
    import pandas as pd

    shown = table.copy()
    if "alpha" in shown.columns:
        shown["alpha"] = shown["alpha"].astype(object).map(lambda v: UNWEIGHTED if v is None or pd.isna(v) else v)
    return shown
