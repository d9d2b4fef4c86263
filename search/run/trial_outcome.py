"""A trial in flight and what became of it: :class:`TrialProgress` (how far a trial of a batch got, what its
failure handler needs), :class:`TrialOutcome` (what the worker reports) and the one line printed per trial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from objectives.config import TrialConfig
from search.study.loss_params import loss_words
from search.study.loss_point import LossPoint
from search.study.plan import PlanTrial, Step
from search.study.trial_record import StoredTrial

if TYPE_CHECKING:
    import optuna

    from objectives.evaluate import EvaluationResult


@dataclass
class TrialOutcome:
    number: int
    phase: str
    loss: LossPoint | None  # None: a trial that failed before its loss was asked
    state: str
    result: EvaluationResult | None = None
    reason: str | None = None
    stats: StoredTrial | None = None  # search.study.noise.trial_stats: SEs and paired differences
    batch_size: int = 1  # trials trained together in one job (the result's seconds are the job's)


@dataclass
class TrialProgress:
    """How far one trial got: what its failure handler needs to mark it."""

    trial: optuna.Trial
    step: Step
    trial_id: int  # Optuna's storage id, which its heartbeat names
    loss: LossPoint | None = None  # what Optuna was asked for: set when it is asked
    config: TrialConfig | None = None
    run_id: str | None = None
    told: bool = False
    outcome: TrialOutcome | None = None
    batch_size: int = 1  # trials of the job it was trained in

    def trained(self) -> tuple[TrialConfig, str]:
        """The configuration and MLflow run of a trial that is being trained: both set when it was asked."""
        if self.config is None or self.run_id is None:
            raise RuntimeError(f"trial {self.trial.number} was not asked with a valid configuration and a run")
        return self.config, self.run_id

    def plan_trial(self, result: EvaluationResult) -> PlanTrial:
        """What the plan will read of this trial once it is told with ``result`` (the one view of a trial that
        has just been trained: :func:`search.study.noise.trial_stats` pairs it with the stored ones)."""
        config, _ = self.trained()
        return PlanTrial(
            self.trial.number,
            self.step.phase.name,
            "COMPLETE",
            self.asked_loss(),
            value=float(result.oof_score),
            cv=None if self.step.cv is None else config.cv.model_dump(),  # a confirm trial's own CV settings
            cv_seed=config.cv.seed,
            fold_scores=tuple(float(v) for v in result.fold_scores),
            folds=config.cv.folds,
            repeats=int(result.repeats),
            fingerprint=result.fingerprint,
        )

    def asked_loss(self) -> LossPoint:
        """The loss the trial was asked with (set when it is asked, before it trains)."""
        if self.loss is None:
            raise RuntimeError(f"trial {self.trial.number} has no loss yet: it was not asked")
        return self.loss


def format_outcome(o: TrialOutcome, metric: str) -> str:
    params = "" if o.loss is None else loss_words(o.loss, ".3g")  # to 3 digits, as run names
    if o.result is None:
        return f"t{o.number:03d} {o.phase:<8} {params}  FAILED: {o.reason}"
    r = o.result
    return (
        f"t{o.number:03d} {o.phase:<8} {params}  {metric} {_with_noise(r.oof_score, o.stats)} "
        f"(honest {r.honest_score_mean:.4f})  threshold {r.threshold:.3f}  {_time(r.seconds, o.batch_size)}"
        f"{_vs_reference(o.stats)}"
    )


def _time(seconds: float, batch_size: int) -> str:
    """A trial's own time: its share of the job it was trained in (the trials of a batch train at once)."""
    if batch_size <= 1:
        return f"{seconds:.1f}s"
    return f"{seconds / batch_size:.1f}s (1/{batch_size} of a {seconds:.1f}s batch)"


def _with_noise(score: float, stats: StoredTrial | None) -> str:
    return f"{score:.4f}" if stats is None or stats.cv_score_se is None else f"{score:.4f} ± {stats.cv_score_se:.4f}"


def _vs_reference(stats: StoredTrial | None) -> str:
    c = None if stats is None else stats.comparison("reference")
    if stats is None or c is None:
        return ""
    from search.study.verdict import reference_words

    who = reference_words(stats.study_reference_trial, c.trial, stats.cv_seed)
    return f"  vs {who}: {c.diff:+.4f} ± {c.se:.4f} {c.verdict}"
