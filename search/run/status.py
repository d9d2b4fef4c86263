"""``losstune status``: where a study stands, read-only.

It reads the study file and the study's database only: no data, no pandas, no torch, no MLflow, so that it
answers at once."""

from __future__ import annotations

from pathlib import Path

from search.run.budget import iso_week
from search.run.session import StudySession
from search.study.choices import phase_choices
from search.study.plan import plan_step
from search.study.results import format_table, plan_trials, results_rows
from search.study.study_ensemble import StudyEnsemble, ensemble_row
from search.study.week_summary import summary_lines, week_summary


def study_status(study_path: Path, budget_override: int | None = None) -> dict:
    session = StudySession(study_path, with_data=False, create=False)
    week = iso_week()
    budget = session.budget_for_week(budget_override)
    spent = session.ledger.spent(week)
    records = plan_trials(session.study)
    step = plan_step(session.file, records)
    reference = session.file.reference_loss
    return {
        "study": session.file.name,
        "storage": session.storage_display,
        "week": week,
        "budget": budget,
        "spent": spent,
        "left": max(0, budget - spent),
        "phase": "complete" if step is None else step.phase.name,
        **week_summary(session.file, session.study),
        "reference": reference.model_dump(),  # by name, as the trials' rows
        "choices": phase_choices(session.phases, records, reference),
        "trials": results_rows(session.study, reference),
    }


def format_status(status: dict) -> str:
    ensemble = None if status.get("ensemble") is None else StudyEnsemble(**status["ensemble"])
    rows = status["trials"] + ([] if ensemble is None else [ensemble_row(ensemble)])
    lines = [format_table(rows), "", *summary_lines(status)]
    if status["choices"]:
        lines += ["choices (each against its closest rival, same splits):", *("  " + c for c in status["choices"])]
    lines.append(f"phase: {status['phase']}")
    lines.append(f"budget {status['week']}: {status['spent']}/{status['budget']} used, {status['left']} left")
    return "\n".join(lines)
