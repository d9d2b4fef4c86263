"""``losstune status``: where a study stands, read-only."""

from __future__ import annotations

from pathlib import Path

from search.budget import iso_week
from search.plan import next_step
from search.results import format_table, results_table, trial_records
from search.session import StudySession


def study_status(study_path: Path, budget_override: int | None = None) -> dict:
    session = StudySession(study_path, with_data=False, create=False)
    week = iso_week()
    budget = session.budget_for_week(budget_override)
    spent = session.ledger.spent(week)
    records = trial_records(session.study)
    complete = [r for r in records if r.state == "COMPLETE"]
    best = max(complete, key=lambda r: (r.value, -r.number), default=None)
    step = next_step(session.phases, records)
    return {
        "study": session.file.name,
        "storage": session.storage_display,
        "week": week,
        "budget": budget,
        "spent": spent,
        "left": max(0, budget - spent),
        "phase": "complete" if step is None else step.phase.name,
        "best": None if best is None else {"trial": best.number, "phase": best.phase, "score": best.value, **best.loss},
        "trials": results_table(session.study).to_dict(orient="records"),
    }


def format_status(status: dict) -> str:
    import pandas as pd

    table = pd.DataFrame(status["trials"])
    lines = [format_table(table) if len(table) else "(no trials yet)", ""]
    best = status["best"]
    if best:
        params = " ".join(
            f"{k}={'none' if best[k] is None else best[k]}" for k in ("alpha", "gamma", "bce_weight", "focal_weight")
        )
        lines.append(f"best: trial {best['trial']} ({best['phase']}) {params}  score {best['score']:.4f}")
    lines.append(f"phase: {status['phase']}")
    lines.append(f"budget {status['week']}: {status['spent']}/{status['budget']} used, {status['left']} left")
    return "\n".join(lines)
