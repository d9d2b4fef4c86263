"""Which trial a study stands by, and how sure it is: the rule (``--by``), the verdict against the reference and
the estimate to quote for unseen data. Shared by ``losstune export`` (written into the exported file) and
``losstune status``, so both say the same thing; every number is read from the trial's record written by
:mod:`search.study.noise`, the same values the MLflow metrics and the results table carry.

The rules themselves (``mean``, ``honest``, ``confirmed``, ``auto`` with its ``later`` case) are
:func:`search.study.ranking.choose`, the one rule every view uses. The confirmed scores replace, not join, the
original ones (averaging with the original would bring the selection's luck back): they are free of the search's
seed luck, not of the luck of the rows (the same rows chose the trial and score it again: BBC-CV,
:mod:`objectives.selection_bias`, corrects that part). The choice among the few confirmed configurations on the
same fresh folds is a much smaller selection, not corrected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from objectives.config import StrictModel
from objectives.errors import LosstuneError
from objectives.stats import BETTER, SAME, WORSE
from search.study.ranking import complete_trials, confirmed_trials, on_study_splits, reference_trial
from search.study.trial_record import StoredComparison, StoredTrial, read_trial

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

VERDICT_TEXT = {
    BETTER: "better than the reference beyond the noise",
    WORSE: "worse than the reference beyond the noise",
    SAME: "not distinguishable from the reference",
}


class Confidence(StrictModel):
    """How sure the chosen trial is; written into the exported file's provenance."""

    selected_by: Literal["mean", "honest", "confirmed", "later", "trial"]
    selected_why: str | None = None  # the rule's sentence (search.study.ranking.StudyChoice.why)
    score: FiniteFloat  # the trial's OOF score (cv_score)
    score_se: FiniteFloat | None = None  # corrected resampled SE (objectives.stats)
    folds: int | None = None
    repeats: int | None = None
    cv_seed: int | None = None
    reference_trial: int | None = None  # the study's one reference trial (search.study.ranking.reference_trial)
    reference_paired_trial: int | None = None  # the reference's run on this trial's splits, when another trial
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


def confidence(
    trial: FrozenTrial, selected_by: str, trials: Sequence[FrozenTrial], reference_key: str, why: str | None = None
) -> Confidence:
    """The verdict and estimate of ``trial``; ``reference_key`` is :func:`search.study.plan.config_key` of the study's
    reference configuration."""
    a = read_trial(trial)
    if trial.value is None:
        raise LosstuneError(f"trial {trial.number} has no score: only a complete trial is chosen")
    complete = complete_trials(trials)
    ref = reference_trial(trials, reference_key)
    paired_ref = a.reference_trial
    verdict, text = _verdict(trial, a, ref, reference_key)
    if a.cv is not None:
        pool = confirmed_trials(complete)
        basis = (
            f"honest cross-fitted score on a fresh CV seed ({a.cv_seed}, {a.repeats or 1} repeat(s)) "
            "that no trial used to choose it: free of the search's seed luck, not of the luck of the rows "
            "(the same rows chose it); chosen among "
            f"{len(pool)} confirmed configuration(s) on that seed, which is not corrected"
        )
    else:
        pool = on_study_splits(complete)
        basis = (
            f"honest cross-fitted score of the best of {len(pool)} trials on the same seed: optimistic by the "
            "selection among them (run a confirm phase for an estimate free of it)"
        )
    return Confidence(
        **_adjusted(trial.number, a, pool),
        selected_by=selected_by,
        selected_why=why,
        score=trial.value,
        score_se=a.cv_score_se,
        folds=a.folds,
        repeats=a.repeats,
        cv_seed=a.cv_seed,
        reference_trial=ref,
        reference_paired_trial=paired_ref if paired_ref is not None and paired_ref != ref else None,
        diff_vs_reference=a.diff_vs_reference,
        diff_vs_reference_se=a.diff_vs_reference_se,
        verdict=verdict,
        verdict_text=text,
        estimate=a.honest_score,
        estimate_se=a.honest_score_se,
        estimate_basis=basis,
        n_trials=len(pool),
    )


def _adjusted(number: int, a: StoredTrial, pool: Sequence[FrozenTrial]) -> dict[str, Any]:
    """Confidence's ``adjusted_*`` fields (empty without a reference comparison): Holm's adjustment of trial
    ``number``'s comparison with the reference (``a``: its record) over every trial of ``pool`` compared with the
    same reference trial (the p-values recomputed from the stored difference, SE and fold count)."""
    from objectives.selection_bias import adjusted_verdict, comparison_of

    mine = a.comparison("reference")
    if mine is None or mine.se is None:
        return {}
    family: list[tuple[int, StoredComparison, int]] = []
    for t in pool:
        record = read_trial(t)
        c = record.comparison("reference")
        if c is not None and c.trial == mine.trial and c.se is not None:
            family.append((t.number, c, len(record.fold_scores or ()) - 1))
    comparisons = [comparison_of(c.diff, c.se, df) for _, c, df in family if c.se is not None]
    adjusted = adjusted_verdict(comparisons, [n for n, _, _ in family].index(number))
    return {"adjusted_verdict": adjusted.verdict, "adjusted_p": adjusted.adjusted_p, "adjusted_family": adjusted.family}


def _verdict(trial: FrozenTrial, a: StoredTrial, ref: int | None, reference_key: str) -> tuple[str, str]:
    """The trial's verdict against the study's reference (``a``: its record), and its sentence."""
    from search.study.plan import config_key
    from search.study.stored_config import stored_loss

    if a.verdict_vs_reference is not None:
        words = reference_words(ref, a.reference_trial, a.cv_seed)
        return a.verdict_vs_reference, f"{VERDICT_TEXT[a.verdict_vs_reference]} ({words})"
    if config_key(stored_loss(trial, a)) == reference_key:
        return "is the reference", "this is the reference configuration"
    return "no reference", "no reference trial on the same splits to compare with"


def reference_words(reference: int | None, paired: int | None, seed: int | None) -> str:
    """How every view names the reference: ``reference t000``, and for a trial paired with the reference's re-run on
    other splits (a confirm phase's seed), ``reference t000, run as t010 on seed 1000``."""
    if reference is None:
        return "reference" if paired is None else f"reference run t{paired:03d}"
    if paired is None or paired == reference:
        return f"reference t{reference:03d}"
    return f"reference t{reference:03d}, run as t{paired:03d} on seed {seed}"


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
    if c.selected_why:
        lines.insert(0, f"chosen by {c.selected_by}: {c.selected_why}")
    return lines
