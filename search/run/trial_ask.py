"""What asking Optuna for a step's trial takes: the sampler (a grid point's values fixed, a TPE phase's space
drawn), the loss parameters suggested to it (so that Optuna records them as params TPE can learn from), and the
fields of its record the trial is written with (:mod:`search.study.trial_record`), its configuration among them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optuna.samplers import BaseSampler, PartialFixedSampler, RandomSampler, TPESampler

from objectives.config import CVConfig, TrialConfig
from search.run.budget import worker_id
from search.study.loss_params import LOSS_PARAMS
from search.study.loss_point import LossPoint, loss_point, loss_values
from search.study.plan import Step

if TYPE_CHECKING:
    import optuna

TPE_STARTUP_TRIALS = 2  # TPE's default of 10 random trials would spend a whole week's budget at random


def sampler_for(step: Step, study_seed: int, n_trials: int) -> BaseSampler:
    """A grid point's values fixed (the random base sampler never draws: every parameter is fixed), or TPE over
    the step's space with the rest fixed; seeded by the study's CV seed and the trials so far."""
    fixed = fixed_params(step)
    if step.loss is not None:
        return PartialFixedSampler(fixed_params=fixed, base_sampler=RandomSampler(seed=0))
    tpe = TPESampler(n_startup_trials=TPE_STARTUP_TRIALS, constant_liar=True, seed=study_seed * 100_003 + n_trials)
    return PartialFixedSampler(fixed_params=fixed, base_sampler=tpe) if fixed else tpe


def fixed_params(step: Step) -> dict[str, float]:
    """Optuna's fixed params of a step (flat by nature): every loss parameter not sampled (all of them for a grid
    point), but an unweighted alpha, which is no parameter at all."""
    values = loss_values(step.point).items()
    return {k: v for k, v in values if v is not None and k not in (step.space or {})}


def suggest_loss(trial: optuna.Trial, step: Step, bounds: dict[str, tuple[float, float]]) -> LossPoint:
    """Every loss parameter suggested to ``trial`` (within ``bounds``, the plan's one range per parameter), but
    an unweighted alpha, which is no parameter at all: the trial's loss, refused or not."""
    values: dict[str, float | None] = {}
    sampled, fixed = step.space or {}, fixed_params(step)
    for name in LOSS_PARAMS:
        if name not in sampled and name not in fixed:
            values[name] = None  # alpha=None: no class weighting, so no alpha parameter at all
            continue
        low, high = sampled.get(name, bounds[name])
        values[name] = trial.suggest_float(name, low, high)
    return loss_point(values)


def trial_attrs(
    step: Step,
    week: str,
    slot: int,
    fingerprint: str,
    loss: LossPoint,
    cv: CVConfig,
    config: TrialConfig | None,
) -> dict[str, Any]:
    """The fields of its record (:class:`~search.study.trial_record.StoredTrial`) a trial is asked with, written
    before it trains (a killed trial has them too): where it stands in the plan and the budget, its ``loss`` and
    CV seed (and a confirm trial's own ``cv``), then its configuration; an invalid configuration (``config``
    None) has none."""
    fields: dict[str, Any] = {
        "phase": step.phase.name,
        "phase_index": step.phase_index,
        "week": week,
        "loss": loss,
        "slot": slot,
        "worker": worker_id(),
        "data_fingerprint": fingerprint,
        "cv_seed": cv.seed,
        **({"cv": cv} if step.cv is not None else {}),
    }
    if config is not None:
        fields["trial_config"] = config
    return fields
