"""``losstune status``: where a study stands, read-only.

It reads the study file and the study's database only: no data, no pandas, no torch, no MLflow, so that it
answers at once."""

from __future__ import annotations

from pathlib import Path

from search.run.budget import iso_week
from search.run.session import StudySession
from search.study.baseline_record import baseline_versus_best
from search.study.choices import phase_choices
from search.study.loss_params import LOSS_PARAMS, UNWEIGHTED
from search.study.plan import config_key, plan_step
from search.study.results import format_table, results_rows, trial_records
from search.study.stored_config import stored_config
from search.study.verdict import Confidence, confidence, format_confidence, resolve_rule, select


def study_status(study_path: Path, budget_override: int | None = None) -> dict:
    session = StudySession(study_path, with_data=False, create=False)
    week = iso_week()
    budget = session.budget_for_week(budget_override)
    spent = session.ledger.spent(week)
    records = trial_records(session.study)
    step = plan_step(session.file, records)
    trials = session.study.get_trials(deepcopy=False)
    rule = resolve_rule(trials, "auto")  # the rule export uses by default: status shows what export would pick
    best = select(trials, rule)
    reference = session.file.reference_loss
    return {
        "study": session.file.name,
        "metric": session.file.trial_config().metric.label,
        "storage": session.storage_display,
        "week": week,
        "budget": budget,
        "spent": spent,
        "left": max(0, budget - spent),
        "phase": "complete" if step is None else step.phase.name,
        "best": None
        if best is None
        else {
            "trial": best.number,
            "phase": best.user_attrs.get("phase", "?"),
            "score": best.value,
            **stored_config(best, session.file).loss.model_dump(),
            "confidence": confidence(best, rule, trials, config_key(reference)).model_dump(),
        },
        "reference": reference,
        "choices": phase_choices(session.phases, records, reference),
        "trials": results_rows(session.study),
        "baseline": baseline_versus_best(session.study, best),
    }


def format_status(status: dict) -> str:
    lines = [format_table(status["trials"]), ""]
    best = status["best"]
    if best:
        params = " ".join(f"{k}={UNWEIGHTED if best[k] is None else best[k]}" for k in LOSS_PARAMS)
        lines.append(f"best: trial {best['trial']} ({best['phase']}) {params}  score {best['score']:.4f}")
        lines += ["  " + line for line in format_confidence(Confidence(**best["confidence"]), status["metric"])]
    if status.get("baseline"):
        lines.append(status["baseline"]["line"])
    if status["choices"]:
        lines += ["choices (each against its closest rival, same splits):", *("  " + c for c in status["choices"])]
    lines.append(f"phase: {status['phase']}")
    lines.append(f"budget {status['week']}: {status['spent']}/{status['budget']} used, {status['left']} left")
    return "\n".join(lines)
