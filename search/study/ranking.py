"""The one rule that names the best trial, used by every view: ``search``'s summary, ``status`` and ``status
--json``, the results table and its memo, the MLflow parent run's tags and description, the study report and
``export --by``. Each of them calls :func:`choose` (or, for a plain ranking, :func:`best` / :func:`ranked`), so
they can never name different trials.

The primitives: the highest score, and among equal scores the lowest trial number (the configuration that got
there first). They work on anything with a score and a number: Optuna trials and
:class:`~search.study.plan.PlanTrial` (``value`` and ``number``, the default), or rows of a table (given
``score`` and ``number``).

The study's choice, :func:`choose`, by rule (``export --by``):

- ``mean``: the best OOF score on the study's own CV seed;
- ``honest``: the best honest (cross-fitted) score on the study's own CV seed;
- ``confirmed``: the best trial of the latest confirm phase (re-evaluated on a fresh seed with repeats: its score
  is not inflated by the selection made on the study's seed);
- ``auto`` (the default): ``mean`` until a confirm phase has finished trials, then ``confirmed``, **unless a later
  trial is better on the evidence**: a trial of a phase after the latest confirm phase (refinement), on the
  study's own seed, that beats the confirmed configuration's own trial on that seed beyond the noise (the paired
  test of :func:`search.study.choices.paired`, same splits). The best of those (by mean) is then chosen, with the
  rule ``later``. A later trial that is only within noise of the confirmed choice does not displace it (it is
  one more draw from the luck the confirm phase removed); a later confirm phase re-confirms among its own
  candidates and then decides.

Every choice says which rule chose and why (:class:`StudyChoice`). The study's reference is one trial per study
(:func:`reference_trial`): every view names that one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from objectives.errors import LosstuneError
from objectives.stats import BETTER
from search.study.trial_record import read_trial

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

T = TypeVar("T")
Rule = Literal["mean", "honest", "confirmed", "later"]
RULES = ("auto", "mean", "honest", "confirmed")

# The defaults read ``value`` and ``number`` of whatever is ranked (an Optuna trial, a PlanTrial): typed Any so
# that they fit the ``Callable[[T], ...]`` parameters for every T; callers rank scored items only.


def _value(item: Any) -> float:
    return float(item.value)


def _number(item: Any) -> int:
    return int(item.number)


def _rank_key(score: Callable[[T], float], number: Callable[[T], int]) -> Callable[[T], tuple[float, int]]:
    return lambda item: (-score(item), number(item))


def ranked(items: Iterable[T], score: Callable[[T], float] = _value, number: Callable[[T], int] = _number) -> list[T]:
    """``items``, best first."""
    return sorted(items, key=_rank_key(score, number))


def best(items: Iterable[T], score: Callable[[T], float] = _value, number: Callable[[T], int] = _number) -> T | None:
    """The best of ``items``, or None when there is none."""
    return min(items, key=_rank_key(score, number), default=None)


# ------------------------------------------------------------------------------------------ the study's choice


@dataclass(frozen=True)
class StudyChoice:
    """The trial a study stands by: ``rule`` is the rule that chose it, ``why`` says so in a sentence."""

    trial: FrozenTrial
    rule: Rule
    why: str

    @property
    def number(self) -> int:
        return int(self.trial.number)


def complete_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]


def on_study_splits(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if read_trial(t).cv is None]


def confirmed_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The complete trials of the latest confirm phase (they share its fresh seed, so they are paired)."""
    confirm = [t for t in complete_trials(trials) if read_trial(t).cv is not None]
    if not confirm:
        return []
    latest = max(_phase_index(t) for t in confirm)
    return [t for t in confirm if _phase_index(t) == latest]


def _phase_index(trial: FrozenTrial) -> int:
    """The trial's phase's position in the plan it ran in; -1 when not recorded."""
    index = read_trial(trial).phase_index
    return -1 if index is None else index


def resolve_rule(trials: Sequence[FrozenTrial], by: str) -> Literal["mean", "honest", "confirmed", "auto"]:
    """``by`` checked (one line for an unknown rule)."""
    if by not in RULES:
        raise LosstuneError(f"unknown selection rule {by!r}: use one of {', '.join(RULES)}")
    return by  # type: ignore[return-value]


def choose(trials: Sequence[FrozenTrial], by: str = "auto") -> StudyChoice | None:
    """The study's best trial under rule ``by`` (module docstring), or None when no complete trial can be chosen
    by it (``mean``/``auto`` before any trial finished on the study's seed). One-line errors for a rule that
    cannot apply (``confirmed`` before a confirm phase, ``honest`` without honest scores)."""
    rule = resolve_rule(trials, by)
    complete = complete_trials(trials)
    confirmed = confirmed_trials(trials)
    if rule == "confirmed" or (rule == "auto" and confirmed):
        if not confirmed:
            raise LosstuneError(
                "no confirm-phase trial has finished yet: run the plan's confirm phase or use --by mean"
            )
        top = best(confirmed)
        assert top is not None  # confirmed is not empty
        seed = read_trial(top).cv_seed
        why = f"the best of {len(confirmed)} confirmed trial(s) on the fresh seed {seed}"
        if rule == "auto":
            later = _later_winner(trials, top, confirmed)
            if later is not None:
                return later
        return StudyChoice(top, "confirmed", why)
    pool = on_study_splits(complete)
    if rule == "honest":
        honest = {t.number: score for t in pool if (score := read_trial(t).honest_score) is not None}
        pool = [t for t in pool if t.number in honest]
        if not pool:
            raise LosstuneError("no trial has an honest score recorded: use --by mean")
        top = best(pool, score=lambda t: honest[t.number])
        return None if top is None else StudyChoice(top, "honest", f"the best honest score of {len(pool)} trial(s)")
    top = best(pool)
    if top is None:
        return None
    return StudyChoice(top, "mean", f"the best OOF score of {len(pool)} trial(s) on the study's seed")


def _later_winner(
    trials: Sequence[FrozenTrial], confirmed_best: FrozenTrial, confirmed: list[FrozenTrial]
) -> StudyChoice | None:
    """A trial after the latest confirm phase that beats the confirmed configuration beyond the noise, on the
    study's seed (paired with that configuration's own trial there), or None."""
    from search.study.choices import paired
    from search.study.loss_params import loss_text
    from search.study.results import plan_trial_of
    from search.study.steps import config_key
    from search.study.stored_config import stored_loss

    confirm_phase = max(_phase_index(t) for t in confirmed)
    last_confirm = max(t.number for t in confirmed)
    study_trials = on_study_splits(complete_trials(trials))
    key = config_key(stored_loss(confirmed_best))
    own = min((t for t in study_trials if config_key(stored_loss(t)) == key), key=_number, default=None)
    if own is None:  # the confirmed configuration never ran on the study's seed: nothing to pair a later trial with
        return None

    def is_later(t: FrozenTrial) -> bool:
        index = read_trial(t).phase_index
        return index > confirm_phase if index is not None and confirm_phase >= 0 else t.number > last_confirm

    base = plan_trial_of(own)
    winners = []
    for t in study_trials:
        if not is_later(t) or config_key(stored_loss(t)) == key:
            continue
        c = paired(plan_trial_of(t), base)
        if c is not None and c.verdict == BETTER:
            winners.append((t, c))
    if not winners:
        return None
    t, c = min(winners, key=lambda w: _rank_key(_value, _number)(w[0]))
    why = (
        f"trial {t.number} ({read_trial(t).phase_name}, after the confirm phase) beats the confirmed choice "
        f"{loss_text(stored_loss(confirmed_best))} (trial {confirmed_best.number}; trial {own.number} on the study's "
        f"seed) by {c.diff:+.4f} ± {c.se:.4f}, better beyond the noise"
    )
    return StudyChoice(t, "later", why)


def reference_trial(trials: Sequence[FrozenTrial], reference_key: str) -> int | None:
    """The study's one reference trial: the first complete trial of the reference configuration on the study's
    own seed (else on any seed), or None before it has run. Confirm phases re-run the reference on their fresh
    seed to pair with it there; those re-runs are named as the reference's, not as another reference."""
    from search.study.steps import config_key
    from search.study.stored_config import stored_loss

    mine = [t for t in complete_trials(trials) if config_key(stored_loss(t)) == reference_key]
    pool = on_study_splits(mine) or mine
    return min((t.number for t in pool), default=None)
