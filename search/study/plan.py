"""The phased plan, carried out on the stored trials.

Nothing about the plan's progress is kept anywhere but in the trials themselves (their ``phase`` user attr and
loss configuration), so a stopped, crashed or next-week run derives exactly where the plan stands:

* the **base** of phase *i* is the loss configuration of the best complete trial of the phases before it
  (the defaults for the first phase), with the phase's ``fixed`` values on top;
* a **grid** phase is done when every point (base + point) has a finished outcome: a complete trial with that
  configuration in any phase, or a trial of this phase that failed for a reason that would repeat (divergence,
  an invalid configuration). A trial lost to a crash does not count: the point is retried;
* a **tpe** phase is done after ``trials`` trials, or never when it is the last, open-ended one;
* a **confirm** phase re-runs the study's reference and the ``top`` best configurations of the earlier phases
  (ranked by their score on the study's own CV seed), each as one trial with ``repeats`` repeats on a CV seed no
  earlier trial used (the phase's :func:`fresh_seed`, kept in every one of its trials' ``cv``). It is done when
  each has a finished outcome in this phase. Its scores are free of the seed luck the selection on the study's
  seed picked (other splits and initial weights), not of the luck of the rows, which are the same rows that chose
  them; they are paired with each other (same fresh splits), not with the other phases' trials.

The ranking itself ("the best of the earlier phases") stays the best mean on the study's seed; whether that
choice was within noise is what :func:`phase_choices` reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from objectives.bounds import SEED_MAX
from objectives.config import CVConfig, LossConfig
from objectives.errors import LosstuneError
from search.study.loss_params import LOSS_PARAMS, PARAM_LIMITS, by_name
from search.study.loss_point import LossPoint, config_key, loss_values, with_values
from search.study.phases import Phase, default_reference
from search.study.ranking import best, ranked
from search.study.steps import PlanTrial, Step, Wait

if TYPE_CHECKING:
    from search.study.study_file import StudyFile

# failure kinds recorded in a trial's user attrs; these would fail the same way again
REPEATABLE_FAILURES = frozenset({"diverged", "invalid"})
# a confirm phase's seed starts a new block of this many seeds, so that its repeats' split seeds (derived from it)
# never meet those of an earlier phase
FRESH_SEED_STRIDE = 1000


def _phase_index(phases: tuple[Phase, ...], name: str) -> int:
    """Position of a trial's phase in the plan; trials of phases no longer in the plan count as earlier."""
    for i, p in enumerate(phases):
        if p.name == name:
            return i
    return -1


def best_record(records: list[PlanTrial], before_phase: int | None, phases: tuple[Phase, ...]) -> PlanTrial | None:
    done = [
        r
        for r in records
        if r.scored
        and r.cv is None  # scores on other seeds (confirm trials) do not rank against these
        and (before_phase is None or _phase_index(phases, r.phase) < before_phase)
    ]
    return best(done)


def phase_base(records: list[PlanTrial], index: int, phases: tuple[Phase, ...]) -> LossPoint:
    """The best configuration of the phases before ``index`` (LossConfig's defaults for the first), with the
    phase's fixed values on top (which LossConfig may refuse over that best: the phase's points are then too)."""
    chosen = best_record(records, index, phases)
    return with_values(LossConfig() if chosen is None else chosen.loss, phases[index].fixed)


def trial_cv(study_cv: CVConfig, step: Step) -> CVConfig:
    """The CV settings a step's trial runs with: the study's, or a confirm step's fresh seed and repeats."""
    return study_cv if step.cv is None else CVConfig(**{**study_cv.model_dump(), **step.cv})


def _finished(same: list[PlanTrial], phase: str) -> bool:
    """Whether a point has its outcome among ``same`` (its trials): a complete one, or one of ``phase`` that
    failed for a reason that would repeat (divergence, an invalid configuration)."""
    repeats = (r.phase == phase and r.state == "FAIL" and r.failure in REPEATABLE_FAILURES for r in same)
    return any(r.state == "COMPLETE" for r in same) or any(repeats)


def plan_step(file: StudyFile, records: list[PlanTrial]) -> Step | Wait | None:
    """:func:`next_step` for a :class:`~search.study.study_file.StudyFile`: its phases, reference and CV seed."""
    return next_step(file.phases, records, reference=file.reference_loss, study_seed=file.cv.seed)


def next_step(
    phases: tuple[Phase, ...], records: list[PlanTrial], reference: LossConfig | None = None, study_seed: int = 0
) -> Step | Wait | None:
    """Where the plan stands: the next trial to run, a wait for running trials, or None when it is finished."""
    for i, phase in enumerate(phases):
        if phase.kind == "confirm":
            found = _confirm_step(i, phase, phases, records, reference or default_reference(phases), study_seed)
            if found is not None:
                return found
            continue
        base = phase_base(records, i, phases)
        if phase.kind == "tpe":
            spent = sum(1 for r in records if r.phase == phase.name and r.state != "WAITING")
            if phase.trials is None or spent < phase.trials:
                return Step(phase_index=i, phase=phase, base=base, space=by_name(phase.space or {}))
            continue
        points = [with_values(base, point) for point in phase.grid or []]
        mine = [r for r in records if r.cv is None]  # a grid point's trials: those on the study's splits
        found = _pending_or_running(
            i, phase, [(loss, [r for r in mine if config_key(r.loss) == config_key(loss)]) for loss in points], base
        )
        if found is not None:
            return found
    return None


def _pending_or_running(
    index: int,
    phase: Phase,
    points: list[tuple[LossPoint, list[PlanTrial]]],
    base: LossPoint | None = None,
    cv: dict | None = None,
) -> Step | Wait | None:
    """The step for the first of ``points`` (each a loss and its trials) without an outcome and not in flight
    (over ``base``, else over itself; ``attempt``: its crashes in ``phase`` so far), else a :class:`Wait` for the
    trials in flight, else None (the phase is done)."""
    running: list[int] = []
    for loss, same in points:
        if _finished(same, phase.name):
            continue
        in_flight = [r.number for r in same if r.state in ("RUNNING", "WAITING")]
        if in_flight:
            running += in_flight
            continue
        crashes = sum(1 for r in same if r.phase == phase.name and r.state == "FAIL")
        return Step(
            phase_index=index, phase=phase, base=loss if base is None else base, loss=loss, attempt=crashes, cv=cv
        )
    return Wait(phase=phase, running=running) if running else None


def confirm_candidates(
    index: int, phase: Phase, phases: tuple[Phase, ...], records: list[PlanTrial], reference: LossConfig
) -> list[LossPoint]:
    """The configurations a confirm phase re-runs: the reference first (so that the others can be compared with
    it when they finish), then the ``top`` best distinct configurations of the earlier phases."""
    candidates = ranked(r for r in records if r.scored and r.cv is None and _phase_index(phases, r.phase) < index)
    chosen: dict[str, LossPoint] = {}
    if phase.confirm_reference:
        chosen[config_key(reference)] = reference
    top: list[str] = []
    for r in candidates:
        key = config_key(r.loss)
        if key in top:
            continue
        top.append(key)
        chosen.setdefault(key, r.loss)
        if len(top) == phase.confirm_top:
            break
    return list(chosen.values())


def fresh_seed(phase: Phase, records: list[PlanTrial], study_seed: int) -> int:
    """A confirm phase's CV seed: the one its trials already recorded, else the start of the next block of
    :data:`FRESH_SEED_STRIDE` seeds above every seed used so far (so no earlier trial used it)."""
    own = [r.cv_seed for r in records if r.phase == phase.name and r.cv is not None and r.cv_seed is not None]
    if own:
        return own[0]
    used = [study_seed, *(r.cv_seed for r in records if r.cv_seed is not None)]
    seed = (max(used) // FRESH_SEED_STRIDE + 1) * FRESH_SEED_STRIDE
    if seed > SEED_MAX:  # only a study whose trials recorded seeds beyond what a study file now accepts
        raise LosstuneError(
            f"phase {phase.name!r}: no fresh CV seed is left above the seeds used ({max(used)}; the splitter takes "
            f"at most {SEED_MAX}): start a new study with a smaller cv.seed"
        )
    return seed


def _confirm_step(
    index: int,
    phase: Phase,
    phases: tuple[Phase, ...],
    records: list[PlanTrial],
    reference: LossConfig,
    study_seed: int,
) -> Step | Wait | None:
    cv = {"seed": fresh_seed(phase, records, study_seed), "repeats": phase.confirm_repeats}
    mine = [r for r in records if r.phase == phase.name]
    candidates = confirm_candidates(index, phase, phases, records, reference)
    return _pending_or_running(
        index,
        phase,
        [(loss, [r for r in mine if config_key(r.loss) == config_key(loss)]) for loss in candidates],
        cv=cv,
    )


def distribution_bounds(phases: tuple[Phase, ...]) -> dict[str, tuple[float, float]]:
    """One range per loss parameter, covering every value the plan can give it (defaults included).

    Optuna requires a parameter's distribution kind to stay the same across trials; keeping the range the same
    too lets TPE read grid-phase trials as ordinary observations."""
    values: dict[str, list[float]] = {k: [] for k in LOSS_PARAMS}
    for k, v in loss_values(LossConfig()).items():
        if v is not None:
            values[k].append(float(v))
    for p in phases:
        sources = [p.fixed, *(p.grid or [])]
        for src in sources:
            for k, v in src.items():
                if v is not None:
                    values[k].append(float(v))
        for k, (lo, hi) in (p.space or {}).items():
            values[k] += [lo, hi]
    out = {}
    for k, vs in values.items():
        lo, hi = (min(vs), max(vs)) if vs else PARAM_LIMITS[k]
        out[k] = (lo, hi) if lo < hi else PARAM_LIMITS[k]
    return out


def pending_steps(
    phases: tuple[Phase, ...],
    records: list[PlanTrial],
    limit: int,
    reference: LossConfig | None = None,
    study_seed: int = 0,
) -> list[Step] | Wait | None:
    """Up to ``limit`` steps of the current phase that can run at once (a batch): every pending grid point, or
    ``phase.batch`` TPE draws (within the phase's ``trials``). A Wait or None as :func:`next_step` says.

    Found by asking :func:`next_step` again with each step already taken counted as a running trial, so the
    rules of what is pending stay in one place."""
    first = next_step(phases, records, reference=reference, study_seed=study_seed)
    if not isinstance(first, Step):
        return first
    if first.loss is None:
        limit = min(limit, first.phase.batch)
    steps = [first]
    while len(steps) < limit:
        taken = steps[-1]
        records = [
            *records,
            PlanTrial(
                number=-len(steps),
                phase=taken.phase.name,
                state="RUNNING",
                loss=taken.point,
                cv=taken.cv,
                cv_seed=(taken.cv or {}).get("seed"),
            ),
        ]
        following = next_step(phases, records, reference=reference, study_seed=study_seed)
        # one job trains one set of splits: a batch never mixes phases or CV settings
        if not isinstance(following, Step) or following.phase_index != first.phase_index or following.cv != first.cv:
            break
        steps.append(following)
    return steps
