"""What each phase of the plan chose, and whether that choice was within noise: the paired comparison of two
trials on their shared splits, and one line per phase (the MLflow parent run's ``plan_choices.txt``,
``losstune status``)."""

from __future__ import annotations

from objectives.config import LossConfig
from objectives.stats import Comparison, compare
from search.study.loss_params import loss_text
from search.study.phases import Phase, default_reference
from search.study.plan import PlanTrial, best_record, config_key
from search.study.ranking import best


def paired(a: PlanTrial, b: PlanTrial) -> Comparison | None:
    """A minus B on their shared splits, or None when they cannot be paired (other splits, no fold scores)."""
    if a.value is None or b.value is None or not (a.scored and b.scored and a.cv_key == b.cv_key):
        return None
    if not (a.fold_scores and b.fold_scores and a.folds) or len(a.fold_scores) != len(b.fold_scores):
        return None
    return compare(a.fold_scores, b.fold_scores, a.folds, diff=a.value - b.value)


def phase_choices(
    phases: tuple[Phase, ...], records: list[PlanTrial], reference: LossConfig | None = None
) -> list[str]:
    """One line per phase with a result: what it chose and whether that choice was within noise, e.g.
    ``balance: g=3 a=none w=0.8/0.2 chosen (trial 2), +0.002 ± 0.003 over g=3 a=none w=0.5/0.5 (trial 0), not
    distinguishable``. For a grid or tpe phase, the best configuration so far against the runner-up among the
    phase's trials and the earlier best; for a confirm phase, its best against the reference on the fresh seed."""
    reference = reference or default_reference(phases)
    lines = []
    for i, phase in enumerate(phases):
        mine = [r for r in records if r.phase == phase.name and r.scored]
        if not mine:
            continue
        if phase.kind == "confirm":
            top = _first(best(mine))
            ref = next((r for r in mine if config_key(r.loss) == config_key(reference)), None)
            if ref is None or ref.number == top.number:
                lines.append(
                    f"{phase.name}: {loss_text(top.loss)} confirmed best (trial {top.number}, "
                    f"{top.value:.4f}){', the reference itself' if ref is not None else ''}"
                )
                continue
            lines.append(_choice_line(phase.name, "confirmed best", top, ref, "the reference "))
            continue
        chosen = _first(best_record(records, i + 1, phases))  # the phase's own scored trials rank: never None
        earlier = best_record(records, i, phases)
        if chosen.phase != phase.name and earlier is not None:  # no trial of this phase beat the earlier choice
            own = _first(best([r for r in mine if r.cv is None] or mine))
            lines.append(_kept_line(phase.name, chosen, own))
            continue
        rivals = [r for r in [*mine, *([earlier] if earlier else [])] if r.number != chosen.number]
        rivals = [r for r in rivals if config_key(r.loss) != config_key(chosen.loss)]
        if not rivals:
            lines.append(f"{phase.name}: {loss_text(chosen.loss)} chosen (trial {chosen.number}), no rival")
            continue
        runner_up = _first(best(rivals))
        lines.append(_choice_line(phase.name, "chosen", chosen, runner_up, ""))
    return lines


def _choice_line(phase: str, what: str, a: PlanTrial, b: PlanTrial, b_role: str) -> str:
    c = paired(a, b)
    head = f"{phase}: {loss_text(a.loss)} {what} (trial {a.number})"
    if c is None:
        return (
            f"{head}, {_score(a) - _score(b):+.4f} over {b_role}{loss_text(b.loss)} (trial {b.number}), no paired folds"
        )
    return f"{head}, {c.diff:+.4f} ± {c.se:.4f} over {b_role}{loss_text(b.loss)} (trial {b.number}), {c.verdict}"


def _kept_line(phase: str, kept: PlanTrial, own: PlanTrial) -> str:
    """A phase none of whose trials beat the earlier choice: that choice is kept, and the phase's best is named."""
    c = paired(own, kept)
    diff = (
        f"{_score(own) - _score(kept):+.4f}, no paired folds"
        if c is None
        else f"{c.diff:+.4f} ± {c.se:.4f}, {c.verdict}"
    )
    return (
        f"{phase}: kept {loss_text(kept.loss)} (trial {kept.number}, {kept.phase}); the phase's best, "
        f"{loss_text(own.loss)} (trial {own.number}), {diff}"
    )


def _first(record: PlanTrial | None) -> PlanTrial:
    """The best of a pool known to hold a scored trial (the caller checked it is not empty)."""
    if record is None:
        raise ValueError("no scored trial to choose from")
    return record


def _score(record: PlanTrial) -> float:
    if record.value is None:
        raise ValueError(f"trial {record.number} has no score")
    return record.value
