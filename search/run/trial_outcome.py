"""A trial in flight and what became of it: :class:`TrialProgress` (how far a trial of a batch got, what its
failure handler needs), :class:`TrialOutcome` (what the worker reports) and the one line printed per trial."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from objectives.config import TrialConfig
from objectives.errors import TrainingDiverged
from search.study.loss_params import UNWEIGHTED
from search.study.plan import PlanTrial, Step
from search.study.trial_record import StoredTrial

if TYPE_CHECKING:
    import optuna

    from objectives.evaluate import EvaluationResult


@dataclass
class TrialOutcome:
    number: int
    phase: str
    loss: dict
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
    loss: dict = field(default_factory=dict)
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

    def record(self, outcome: EvaluationResult | TrainingDiverged) -> PlanTrial:
        """What the plan will read of this trial once it is told."""
        if isinstance(outcome, TrainingDiverged):
            return PlanTrial(self.trial.number, self.step.phase.name, "FAIL", self.loss, failure="diverged")
        cv = None if self.step.cv is None or self.config is None else self.config.cv.model_dump()
        return PlanTrial(
            self.trial.number,
            self.step.phase.name,
            "COMPLETE",
            self.loss,
            value=outcome.oof_score,
            cv=cv,
            cv_seed=None if self.config is None else self.config.cv.seed,
        )


def format_outcome(o: TrialOutcome, metric: str) -> str:
    params = " ".join(f"{k}={UNWEIGHTED if v is None else f'{v:.3g}'}" for k, v in o.loss.items())  # as run names
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
