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
from search.study.ranking import choose, reference_trial
from search.study.results import format_table, plan_trials, results_rows
from search.study.stored_config import stored_config
from search.study.study_ensemble import (
    StudyEnsemble,
    ensemble_row,
    format_best_corrected,
    format_ensemble,
    study_ensemble,
)
from search.study.trial_record import read_trial
from search.study.verdict import Confidence, confidence, format_confidence


def study_status(study_path: Path, budget_override: int | None = None) -> dict:
    session = StudySession(study_path, with_data=False, create=False)
    week = iso_week()
    budget = session.budget_for_week(budget_override)
    spent = session.ledger.spent(week)
    records = plan_trials(session.study)
    step = plan_step(session.file, records)
    trials = session.study.get_trials(deepcopy=False)
    choice = choose(trials)  # the one rule (export's default): status shows what export would pick
    best = None if choice is None else choice.trial
    reference = session.file.reference_loss
    ensemble = study_ensemble(records, session.file)
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
        if best is None or choice is None
        else {
            "trial": best.number,
            "phase": read_trial(best).phase_name,
            "score": best.value,
            **stored_config(best).loss.model_dump(),
            "rule": choice.rule,
            "why": choice.why,
            "confidence": confidence(best, choice.rule, trials, config_key(reference), choice.why).model_dump(),
        },
        "reference": reference.model_dump(),  # by name, as the trials' rows
        "reference_trial": reference_trial(trials, config_key(reference)),
        "choices": phase_choices(session.phases, records, reference),
        "trials": results_rows(session.study, reference),
        "ensemble": None if ensemble is None else ensemble.to_dict(),
        "baseline": baseline_versus_best(session.study, best),
    }


def format_status(status: dict) -> str:
    ensemble = None if status.get("ensemble") is None else StudyEnsemble(**status["ensemble"])
    rows = status["trials"] + ([] if ensemble is None else [ensemble_row(ensemble)])
    lines = [format_table(rows), ""]
    best = status["best"]
    if best:
        params = " ".join(f"{k}={UNWEIGHTED if best[k] is None else f'{best[k]:g}'}" for k in LOSS_PARAMS)
        lines.append(f"best: trial {best['trial']} ({best['phase']}) {params}  score {best['score']:.4f}")
        lines += ["  " + line for line in format_confidence(Confidence(**best["confidence"]), status["metric"])]
        corrected = None if ensemble is None else format_best_corrected(ensemble, best["trial"])
        lines += [] if corrected is None else ["  " + corrected]
    if status.get("reference_trial") is not None:
        lines.append(f"reference: trial {status['reference_trial']} (every verdict is against it)")
    if ensemble is not None:
        lines += format_ensemble(ensemble)
    if status.get("baseline"):
        lines.append(status["baseline"]["line"])
    if status["choices"]:
        lines += ["choices (each against its closest rival, same splits):", *("  " + c for c in status["choices"])]
    lines.append(f"phase: {status['phase']}")
    lines.append(f"budget {status['week']}: {status['spent']}/{status['budget']} used, {status['left']} left")
    return "\n".join(lines)
