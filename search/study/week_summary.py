"""What a study's trials say, the same in every view (``status``, ``status --json``, the study report): the best
trial by the one rule (:func:`search.study.ranking.choose`, export's default) and how sure it is, the reference,
the week's ensemble with the best trial's selection-corrected estimate, and the yardstick.

Reads the study's database and its kept ensemble (``status`` computes it again, in seconds, when a trial was added
since; the report does not): no data, no torch, no MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.study.baseline_record import baseline_versus_best
from search.study.loss_params import LOSS_PARAMS, UNWEIGHTED
from search.study.plan import config_key
from search.study.ranking import choose, reference_trial
from search.study.results import plan_trials
from search.study.stored_config import stored_config
from search.study.study_ensemble import StudyEnsemble, format_best_corrected, format_ensemble, study_ensemble
from search.study.trial_record import read_trial
from search.study.verdict import Confidence, confidence, format_confidence

if TYPE_CHECKING:
    import optuna

    from search.study.study_file import StudyFile


def week_summary(
    file: StudyFile, study: optuna.Study, compute_stale: bool = True, ensemble: StudyEnsemble | None = None
) -> dict:
    """What the study's trials say, as ``status`` and the study report show it: the best trial by the one rule
    (export's default) with its confidence, the reference, the week's ensemble and the yardstick. The ensemble is
    ``ensemble`` when given (the one a search just made and logged), else the study's (``compute_stale`` False:
    only a kept one, nothing computed or written; the report, which opens the study read-only)."""
    records = plan_trials(study)
    trials = study.get_trials(deepcopy=False)
    choice = choose(trials)
    best = None if choice is None else choice.trial
    reference = file.reference_loss
    if ensemble is None:
        ensemble = study_ensemble(records, file, compute_stale=compute_stale)
    return {
        "metric": file.trial_config().metric.label,
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
        "reference_trial": reference_trial(trials, config_key(reference)),
        "ensemble": None if ensemble is None else ensemble.to_dict(),
        "baseline": baseline_versus_best(study, best),
        "running": sum(t.state.name == "RUNNING" for t in trials),
    }


def summary_lines(summary: dict) -> list[str]:
    """A :func:`week_summary` as lines: the best trial and how sure it is, the reference, the ensemble, the
    yardstick."""
    ensemble = None if summary.get("ensemble") is None else StudyEnsemble(**summary["ensemble"])
    lines = []
    best = summary["best"]
    if summary.get("running"):
        # a worker that ran nothing (another took the batch) would otherwise name a best that is about to change
        so_far = "what follows is the best so far" if best else "no complete trial yet"
        lines.append(
            f"{summary['running']} trial(s) still running (other workers, or a stopped one not yet detected): {so_far}"
        )
    if best:
        params = " ".join(f"{k}={UNWEIGHTED if best[k] is None else f'{best[k]:g}'}" for k in LOSS_PARAMS)
        lines.append(f"best: trial {best['trial']} ({best['phase']}) {params}  score {best['score']:.4f}")
        lines += ["  " + line for line in format_confidence(Confidence(**best["confidence"]), summary["metric"])]
        corrected = None if ensemble is None else format_best_corrected(ensemble, best["trial"])
        lines += [] if corrected is None else ["  " + corrected]
    if summary.get("reference_trial") is not None:
        lines.append(f"reference: trial {summary['reference_trial']} (every verdict is against it)")
    if ensemble is not None:
        lines += format_ensemble(ensemble)
    if summary.get("baseline"):
        lines.append(summary["baseline"]["line"])
    return lines
