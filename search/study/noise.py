"""A finished trial's score with its noise, and its paired differences from the reference and the best so far.

Computed once, when the trial is told (:func:`trial_stats`, the told part of the trial's
:class:`~search.study.trial_record.StoredTrial`), and stored with the trial; the MLflow metrics
(:func:`stats_metrics`), the results table, ``status`` and ``export`` all read those same values, so they carry
the same numbers. Fields written (besides the scores ``threshold``, ``honest_score``, ``honest_score_std``,
``seconds`` and ``chosen_epochs``):

- ``folds``, ``repeats``, ``cv_seed``: K, R and the CV seed the trial ran with;
- ``fold_scores``, ``honest_fold_scores``: lists of R*K floats, repeat-major (index ``r * K + k``);
- ``repeat_scores``: R floats, each repeat's OOF score;
- ``cv_score_se``, ``honest_score_se``: corrected resampled standard errors (:mod:`objectives.stats`);
- ``reference_trial``, ``diff_vs_reference``, ``diff_vs_reference_se``, ``verdict_vs_reference``: against the
  study's reference configuration evaluated on the same splits (None when there is none yet, or for the
  reference itself);
- ``study_reference_trial``: the study's one reference trial (the reference configuration's first run on the
  study's seed), which every view names; ``reference_trial`` may be its re-run on a confirm phase's seed;
- ``best_trial``, ``diff_vs_best``, ``diff_vs_best_se``, ``verdict_vs_best``: against the best trial on the same
  splits that had finished when this one was told (the incumbent).

Differences are this trial's OOF score minus the other's; the SE and the verdict come from the paired fold
scores (see :func:`search.study.choices.paired`).
"""

from __future__ import annotations

from typing import Any

from objectives.config import LossConfig, TrialConfig
from objectives.evaluate import EvaluationResult
from objectives.stats import BETTER, WORSE, corrected_se
from search.study.choices import paired
from search.study.plan import PlanTrial, config_key
from search.study.ranking import best
from search.study.trial_record import StoredTrial

VERDICT_CODE = {BETTER: 1.0, WORSE: -1.0}  # MLflow metrics are numbers: +1 better, -1 worse, 0 not distinguishable


def result_scores(result: EvaluationResult, folds: int) -> dict[str, Any]:
    """Fold scores, repeats and per-repeat scores of a result (fields of
    :class:`~search.study.trial_record.StoredTrial`): the one place that reads the engine's repeats."""
    fold_scores = [float(v) for v in result.fold_scores]
    repeats = int(result.repeats)
    if repeats * folds != len(fold_scores):
        raise ValueError(f"{len(fold_scores)} fold scores for {repeats} repeats of {folds} folds")
    return {
        "folds": folds,
        "repeats": repeats,
        "fold_scores": fold_scores,
        "honest_fold_scores": [float(v) for v in result.honest_fold_scores],
        "repeat_scores": [float(v) for v in result.repeat_scores],
    }


def trial_stats(
    records: list[PlanTrial],
    me: PlanTrial,
    result: EvaluationResult,
    config: TrialConfig,
    reference: LossConfig,
) -> StoredTrial:
    """What a trial that has just finished stores when it is told: its scores and the fields above, as the told
    part of its record (only those fields set). ``me`` is the plan's view of it with its result
    (:meth:`search.run.trial_outcome.TrialProgress.plan_trial`); ``records`` are the study's other trials."""
    folds = config.cv.folds
    scores = result_scores(result, folds)
    others = [r for r in records if r.number != me.number and r.scored and r.cv_key == me.cv_key and r.fold_scores]
    ref_key = config_key(reference)
    ref = min((r for r in others if config_key(r.loss) == ref_key), key=lambda r: r.number, default=None)
    if config_key(me.loss) == ref_key:
        ref = None  # the reference itself
    best_other = best(others)
    # the study's one reference trial (search.study.ranking.reference_trial, on records): named on every line
    same_config = [r for r in records if r.scored and config_key(r.loss) == ref_key]
    study_ref = min((r.number for r in [r for r in same_config if r.cv is None] or same_config), default=None)
    out: dict[str, Any] = {
        "honest_score": result.honest_score_mean,
        "threshold": result.threshold,
        "seconds": result.seconds,
        "honest_score_std": result.honest_score_std,
        **scores,
        "cv_seed": config.cv.seed,
        # the epoch count the scores are of (train.checkpoint_every: chosen on the mean fold score): export uses it
        "chosen_epochs": int(result.chosen_epochs or config.train.epochs),
        "cv_score_se": corrected_se(scores["fold_scores"], folds),
        "honest_score_se": corrected_se(scores["honest_fold_scores"], folds),
        "study_reference_trial": study_ref,
        "is_reference": config_key(me.loss) == ref_key,
    }
    for name, other in (("reference", ref), ("best", best_other)):
        c = None if other is None else paired(me, other)
        out[f"{name}_trial"] = None if c is None or other is None else other.number
        out[f"diff_vs_{name}"] = None if c is None else c.diff
        out[f"diff_vs_{name}_se"] = None if c is None else c.se
        out[f"verdict_vs_{name}"] = None if c is None else c.verdict
    return StoredTrial.model_validate(out)


def stats_metrics(stats: StoredTrial) -> dict[str, float]:
    """The MLflow metrics of :func:`trial_stats`' values: SEs, per-repeat scores, differences and verdict codes."""
    if stats.cv_score_se is None or stats.honest_score_se is None or stats.repeats is None:
        raise ValueError("the metrics are of a told trial's stats (search.study.noise.trial_stats)")
    metrics = {"cv_score_se": stats.cv_score_se, "honest_score_se": stats.honest_score_se, "repeats": stats.repeats}
    # the per-repeat scores are the steps of one metric, cv_score_repeat (search.tracking.trial_runs), not one
    # metric per repeat: a 1-repeat trial would show NaN under cv_score_r1, cv_score_r2 in the UI
    for name in ("reference", "best"):
        c = stats.comparison(name)
        if c is not None and c.se is not None:  # trial_stats records a comparison whole: its SE with it
            metrics[f"diff_vs_{name}"] = c.diff
            metrics[f"diff_vs_{name}_se"] = c.se
            metrics[f"verdict_vs_{name}"] = VERDICT_CODE.get(c.verdict or "", 0.0)
    return {k: float(v) for k, v in metrics.items()}
