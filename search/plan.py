"""The phased plan, carried out on the stored trials.

Nothing about the plan's progress is kept anywhere but in the trials themselves (their ``phase`` user attr and
loss configuration), so a stopped, crashed or next-week run derives exactly where the plan stands:

* the **base** of phase *i* is the loss configuration of the best complete trial of the phases before it
  (the defaults for the first phase), with the phase's ``fixed`` values on top;
* a **grid** phase is done when every point (base + point) has a finished outcome: a complete trial with that
  configuration in any phase, or a trial of this phase that failed for a reason that would repeat (divergence,
  an invalid configuration). A trial lost to a crash does not count: the point is retried;
* a **tpe** phase is done after ``trials`` trials, or never when it is the last, open-ended one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from objectives.config import LossConfig
from search.study_file import LOSS_PARAMS, PARAM_LIMITS, Phase

# failure kinds recorded in a trial's user attrs; these would fail the same way again
REPEATABLE_FAILURES = frozenset({"diverged", "invalid"})


@dataclass(frozen=True)
class TrialRecord:
    """What the plan needs to know of one stored trial."""

    number: int
    phase: str
    state: str  # COMPLETE, FAIL, RUNNING, WAITING, PRUNED
    loss: dict[str, float | None]
    value: float | None = None
    failure: str | None = None


@dataclass(frozen=True)
class Step:
    """The next trial to run: a grid point (``loss`` given) or a TPE draw (``space`` given)."""

    phase_index: int
    phase: Phase
    base: dict[str, float | None]
    loss: dict[str, float | None] | None = None
    space: dict[str, tuple[float, float]] | None = None
    attempt: int = 0

    @property
    def claim(self) -> str | None:
        """The key a worker claims before running a grid point, so that two workers never run it twice."""
        if self.loss is None:
            return None
        return f"{self.phase.name}:{config_key(self.loss)}#{self.attempt}"

    @property
    def fixed(self) -> dict[str, float | None]:
        """Every loss parameter not sampled: all of them for a grid point."""
        if self.loss is not None:
            return dict(self.loss)
        return {k: v for k, v in self.base.items() if k not in (self.space or {})}


@dataclass(frozen=True)
class Wait:
    """Every pending point of the current phase is running elsewhere; the next phase needs their results."""

    phase: Phase
    running: list[int] = field(default_factory=list)


def config_key(loss: dict[str, float | None]) -> str:
    return json.dumps({k: (None if loss.get(k) is None else round(float(loss[k]), 10)) for k in LOSS_PARAMS})


def default_loss() -> dict[str, float | None]:
    return LossConfig().model_dump()


def _phase_index(phases: tuple[Phase, ...], name: str) -> int:
    """Position of a trial's phase in the plan; trials of phases no longer in the plan count as earlier."""
    for i, p in enumerate(phases):
        if p.name == name:
            return i
    return -1


def best_record(records: list[TrialRecord], before_phase: int | None, phases: tuple[Phase, ...]) -> TrialRecord | None:
    done = [
        r for r in records
        if r.state == "COMPLETE" and r.value is not None
        and (before_phase is None or _phase_index(phases, r.phase) < before_phase)
    ]  # fmt: skip
    return max(done, key=lambda r: (r.value, -r.number), default=None)


def phase_base(records: list[TrialRecord], index: int, phases: tuple[Phase, ...]) -> dict[str, float | None]:
    best = best_record(records, index, phases)
    base = dict(best.loss) if best else default_loss()
    return {**base, **phases[index].fixed}


def next_step(phases: tuple[Phase, ...], records: list[TrialRecord]) -> Step | Wait | None:
    """Where the plan stands: the next trial to run, a wait for running trials, or None when it is finished."""
    for i, phase in enumerate(phases):
        base = phase_base(records, i, phases)
        if phase.kind == "tpe":
            spent = sum(1 for r in records if r.phase == phase.name and r.state != "WAITING")
            if phase.trials is None or spent < phase.trials:
                return Step(phase_index=i, phase=phase, base=base, space=dict(phase.space or {}))
            continue
        pending, running = [], []
        for point in phase.grid or []:
            loss = {**base, **point}
            key = config_key(loss)
            same = [r for r in records if config_key(r.loss) == key]
            finished = any(
                r.state == "COMPLETE" or (r.phase == phase.name and r.state == "FAIL" and r.failure in REPEATABLE_FAILURES)
                for r in same
            )  # fmt: skip
            if finished:
                continue
            in_flight = [r.number for r in same if r.state in ("RUNNING", "WAITING")]
            if in_flight:
                running += in_flight
                continue
            crashes = sum(1 for r in same if r.phase == phase.name and r.state == "FAIL")
            pending.append(Step(phase_index=i, phase=phase, base=base, loss=loss, attempt=crashes))
        if pending:
            return pending[0]
        if running:
            return Wait(phase=phase, running=running)
    return None


def distribution_bounds(phases: tuple[Phase, ...]) -> dict[str, tuple[float, float]]:
    """One range per loss parameter, covering every value the plan can give it (defaults included).

    Optuna requires a parameter's distribution kind to stay the same across trials; keeping the range the same
    too lets TPE read grid-phase trials as ordinary observations."""
    values: dict[str, list[float]] = {k: [] for k in LOSS_PARAMS}
    for k, v in default_loss().items():
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


def pending_steps(phases: tuple[Phase, ...], records: list[TrialRecord], limit: int) -> list[Step] | Wait | None:
    """Up to ``limit`` steps of the current phase that can run at once (a batch): every pending grid point, or
    ``phase.batch`` TPE draws (within the phase's ``trials``). A Wait or None as :func:`next_step` says.

    Found by asking :func:`next_step` again with each step already taken counted as a running trial, so the
    rules of what is pending stay in one place."""
    first = next_step(phases, records)
    if not isinstance(first, Step):
        return first
    if first.loss is None:
        limit = min(limit, first.phase.batch)
    steps = [first]
    while len(steps) < limit:
        taken = steps[-1]
        records = [*records, TrialRecord(number=-len(steps), phase=taken.phase.name, state="RUNNING",
                                         loss=dict(taken.loss or taken.base))]  # fmt: skip
        following = next_step(phases, records)
        if not isinstance(following, Step) or following.phase_index != first.phase_index:
            break
        steps.append(following)
    return steps
