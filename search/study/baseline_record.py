"""The study's yardstick (:mod:`objectives.baseline`), once per study: computed by the first search on the
study's data and splits, kept in the study's own storage (a study user attribute, so ``status`` reads it without
data, scikit-learn or torch) and compared with the best trial wherever the study is shown.

It costs no budget slot: it is no trial (no Optuna trial, no child run); a new one is computed only when the
data, the CV settings or the metric change (its ``key``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from search.study.study_record import read_study, write_study
from search.study.trial_record import read_trial

if TYPE_CHECKING:
    import optuna

    from search.run.session import StudySession


def _key(session: StudySession) -> dict[str, Any]:
    config = session.file.trial_config()
    return {
        "fingerprint": session.dataset.fingerprint,
        "cv": config.cv.model_dump(),
        "metric": config.metric.label,
    }


def ensure_study_baseline(session: StudySession) -> dict[str, Any]:
    """The study's baseline record, computed and stored now if the study has none for its data and settings."""
    key = _key(session)
    stored = read_study(session.study).baseline
    if stored is not None and stored.get("key") == key:
        return stored
    from objectives.baseline import evaluate_baseline

    config = session.file.trial_config()
    record = {**evaluate_baseline(session.dataset, config.cv, config.metric).record(), "key": key}
    write_study(session.study, baseline=record)
    return record


def baseline_versus_best(study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> dict[str, Any] | None:
    """The stored baseline record with ``versus_best`` (the best trial minus the baseline, paired on the same
    folds; None without a best trial scored on the baseline's splits) and ``line`` (what people read); None
    when the study has no baseline yet."""
    from objectives.baseline import baseline_line, versus_baseline

    record = read_study(study).baseline
    if record is None:
        return None
    versus = None
    scores = None if best is None else read_trial(best).fold_scores
    if best is not None and best.value is not None and scores and len(scores) == len(record["fold_scores"]):
        versus = versus_baseline(list(scores), best.value, record)
    out = {k: v for k, v in record.items() if k != "key"}
    return {
        **out,
        "versus_best": None if versus is None else {"trial": best.number, **versus.to_dict()},  # type: ignore[union-attr]
        "line": baseline_line(record, versus, who=f"best trial {best.number}" if versus and best else "best trial"),
    }


def report_study_baseline(session: StudySession, tracker: Any, parent_run_id: str) -> str:
    """Ensure the study's baseline, compare it with the best trial (the one ``export`` would pick), put both on
    the MLflow parent run (:func:`search.tracking.baseline_run.log_baseline`) and return the line to print."""
    from search.study.ranking import choose
    from search.tracking.baseline_run import log_baseline

    ensure_study_baseline(session)
    trials = session.study.get_trials(deepcopy=False)
    choice = choose(trials)  # the one rule: the trial every view names
    best = None if choice is None else choice.trial
    info = baseline_versus_best(session.study, best)
    assert info is not None  # ensured above
    log_baseline(tracker.client, parent_run_id, info, step=len(trials))
    return str(info["line"])
