"""Which trial a study stands by, and how sure it is: the rule (``--by``), the verdict against the reference and
the estimate to quote for unseen data. Shared by ``losstune export`` (written into the exported file) and
``losstune status``, so both say the same thing; every number is read from the trial's user attrs written by
:mod:`search.study.noise`, the same values the MLflow metrics and the results table carry.

Rules:

- ``mean``: the best OOF score on the study's own CV seed (the study's objective; ``oof`` is the old name);
- ``honest``: the best honest (cross-fitted) score on the study's own CV seed;
- ``confirmed``: the best trial of the latest confirm phase, i.e. the best configuration re-evaluated on a fresh
  seed with repeats. Its score is free of the seed luck the selection on the study's seed picked (the confirmed
  scores replace, not join, the original ones: averaging with the original would bring that luck back), not of
  the luck of the rows (the same rows chose it and score it again: BBC-CV, :mod:`objectives.selection_bias`,
  corrects that part);
  the choice among the few confirmed configurations on the same fresh folds is a much smaller selection, not
  corrected;
- ``auto`` (the default): ``confirmed`` when a confirm phase has finished trials, else ``mean``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from objectives.config import StrictModel
from objectives.errors import LosstuneError
from objectives.stats import BETTER, SAME, WORSE
from search.study.ranking import best

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


Rule = Literal["mean", "honest", "confirmed"]
RULES = ("auto", "mean", "honest", "confirmed", "oof")
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

VERDICT_TEXT = {
    BETTER: "better than the reference beyond the noise",
    WORSE: "worse than the reference beyond the noise",
    SAME: "not distinguishable from the reference",
}


class Confidence(StrictModel):
    """How sure the chosen trial is; written into the exported file's provenance."""

    selected_by: Literal["mean", "honest", "confirmed", "trial"]
    score: FiniteFloat  # the trial's OOF score (cv_score)
    score_se: FiniteFloat | None = None  # corrected resampled SE (objectives.stats)
    folds: int | None = None
    repeats: int | None = None
    cv_seed: int | None = None
    reference_trial: int | None = None
    diff_vs_reference: FiniteFloat | None = None  # this trial's score minus the reference's, same splits
    diff_vs_reference_se: FiniteFloat | None = None
    verdict: Literal["better", "worse", "not distinguishable", "is the reference", "no reference"]
    verdict_text: str
    estimate: FiniteFloat | None = None  # the score to quote for unseen data: the honest cross-fitted score
    estimate_se: FiniteFloat | None = None
    estimate_basis: str
    n_trials: int  # complete trials the choice was made among
    # the verdict against the reference after Holm's adjustment over every trial compared with it on the same
    # splits (objectives.selection_bias): it holds its level when the chosen trial is the best of them
    adjusted_verdict: Literal["better", "worse", "not distinguishable"] | None = None
    adjusted_p: FiniteFloat | None = None
    adjusted_family: int | None = None


def _on_study_splits(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.user_attrs.get("cv") is None]


def _confirmed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The complete trials of the latest confirm phase (they share its fresh seed, so they are paired)."""
    confirm = [t for t in trials if t.user_attrs.get("cv") is not None]
    if not confirm:
        return []
    latest = max(t.user_attrs.get("phase_index", -1) for t in confirm)
    return [t for t in confirm if t.user_attrs.get("phase_index", -1) == latest]


def resolve_rule(trials: Sequence[FrozenTrial], by: str) -> Rule:
    if by not in RULES:
        raise LosstuneError(f"unknown selection rule {by!r}: use one of {', '.join(RULES)}")
    if by == "oof":
        return "mean"
    if by == "auto":
        return "confirmed" if _confirmed(complete_trials(trials)) else "mean"
    return by  # type: ignore[return-value]


def complete_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]


def select(trials: Sequence[FrozenTrial], rule: Rule) -> FrozenTrial | None:
    """The chosen complete trial under ``rule`` (ties: the earliest); None when there is none to choose from."""
    complete = complete_trials(trials)
    if rule == "confirmed":
        pool = _confirmed(complete)
        if not pool:
            raise LosstuneError(
                "no confirm-phase trial has finished yet: run the plan's confirm phase or use --by mean"
            )
        return best(pool)
    pool = _on_study_splits(complete)
    if rule == "honest":
        pool = [t for t in pool if t.user_attrs.get("honest_score") is not None]
        if not pool:
            raise LosstuneError("no trial has an honest score recorded: use --by mean")
        return best(pool, score=lambda t: t.user_attrs["honest_score"])
    return best(pool)


def confidence(trial: FrozenTrial, selected_by: str, trials: Sequence[FrozenTrial], reference_key: str) -> Confidence:
    """The verdict and estimate of ``trial``; ``reference_key`` is :func:`search.study.plan.config_key` of the study's
    reference configuration."""
    from search.study.plan import config_key
    from search.study.stored_config import stored_loss

    a = trial.user_attrs
    if trial.value is None:
        raise LosstuneError(f"trial {trial.number} has no score: only a complete trial is chosen")
    complete = complete_trials(trials)
    if a.get("verdict_vs_reference") is not None:
        verdict = a["verdict_vs_reference"]
        text = f"{VERDICT_TEXT[verdict]} (trial {a['reference_trial']})"
    elif config_key(stored_loss(trial)) == reference_key:
        verdict, text = "is the reference", "this is the reference configuration"
    else:
        verdict, text = "no reference", "no reference trial on the same splits to compare with"
    if a.get("cv") is not None:
        pool = _confirmed(complete)
        basis = (
            f"honest cross-fitted score on a fresh CV seed ({a.get('cv_seed')}, {a.get('repeats', 1)} repeat(s)) "
            "that no trial used to choose it: free of the search's seed luck, not of the luck of the rows "
            "(the same rows chose it); chosen among "
            f"{len(pool)} confirmed configuration(s) on that seed, which is not corrected"
        )
    else:
        pool = _on_study_splits(complete)
        basis = (
            f"honest cross-fitted score of the best of {len(pool)} trials on the same seed: optimistic by the "
            "selection among them (run a confirm phase for an estimate free of it)"
        )
    return Confidence(
        **_adjusted(trial, pool),
        selected_by=selected_by,
        score=trial.value,
        score_se=a.get("cv_score_se"),
        folds=a.get("folds"),
        repeats=a.get("repeats"),
        cv_seed=a.get("cv_seed"),
        reference_trial=a.get("reference_trial"),
        diff_vs_reference=a.get("diff_vs_reference"),
        diff_vs_reference_se=a.get("diff_vs_reference_se"),
        verdict=verdict,
        verdict_text=text,
        estimate=a.get("honest_score"),
        estimate_se=a.get("honest_score_se"),
        estimate_basis=basis,
        n_trials=len(pool),
    )


def _adjusted(trial: FrozenTrial, pool: Sequence[FrozenTrial]) -> dict[str, Any]:
    """Confidence's ``adjusted_*`` fields (empty without a reference comparison): Holm's adjustment of
    ``trial``'s comparison with the reference over every trial of ``pool`` compared with the same reference trial
    (the p-values recomputed from the stored difference, SE and fold count)."""
    from objectives.selection_bias import adjusted_verdict, comparison_of

    ref = trial.user_attrs.get("reference_trial")
    if ref is None or trial.user_attrs.get("diff_vs_reference_se") is None:
        return {}
    family = [
        t
        for t in pool
        if t.user_attrs.get("reference_trial") == ref and t.user_attrs.get("diff_vs_reference_se") is not None
    ]
    comparisons = [
        comparison_of(
            t.user_attrs["diff_vs_reference"],
            t.user_attrs["diff_vs_reference_se"],
            len(t.user_attrs["fold_scores"]) - 1,
        )
        for t in family
    ]
    a = adjusted_verdict(comparisons, [t.number for t in family].index(trial.number))
    return {"adjusted_verdict": a.verdict, "adjusted_p": a.adjusted_p, "adjusted_family": a.family}


def format_confidence(c: Confidence, metric: str) -> list[str]:
    """Two lines for the CLI: the score and the verdict, then the estimate to quote."""
    se = "" if c.score_se is None else f" ± {c.score_se:.4f}"
    lines = [f"{metric} {c.score:.4f}{se} (OOF, by {c.selected_by})"]
    if c.diff_vs_reference is not None:
        diff_se = "" if c.diff_vs_reference_se is None else f" ± {c.diff_vs_reference_se:.4f}"
        lines[0] += f", {c.diff_vs_reference:+.4f}{diff_se} vs reference: {c.verdict_text}"
        if c.adjusted_verdict is not None and c.adjusted_family and c.adjusted_family > 1:
            lines[0] += (
                f"; {c.adjusted_verdict} as the best of {c.adjusted_family} (Holm-adjusted p {c.adjusted_p:.3f})"
            )
    else:
        lines[0] += f": {c.verdict_text}"
    if c.estimate is not None:
        est_se = "" if c.estimate_se is None else f" ± {c.estimate_se:.4f}"
        lines.append(f"estimate for unseen data: {metric} {c.estimate:.4f}{est_se} ({c.estimate_basis})")
    return lines
