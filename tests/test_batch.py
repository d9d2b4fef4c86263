"""A phase's steps as one batch: which steps a worker takes at once (plan.pending_steps)."""

from __future__ import annotations

from objectives.config import LossConfig
from search.study.phases import DEFAULT_PLAN, Phase
from search.study.plan import PlanTrial, Step, Wait, config_key, pending_steps


def test_a_grid_phase_is_one_batch_of_its_pending_points():
    steps = pending_steps(DEFAULT_PLAN, [], limit=16)
    assert [s.phase.name for s in steps] == ["balance"] * 4
    assert len({s.claim for s in steps}) == 4
    # capped by the limit (the budget left), and a point running elsewhere is left out
    assert len(pending_steps(DEFAULT_PLAN, [], limit=3)) == 3
    running = PlanTrial(0, "balance", "RUNNING", steps[1].loss)
    rest = pending_steps(DEFAULT_PLAN, [running], limit=16)
    assert [s.claim for s in rest] == [steps[0].claim, steps[2].claim, steps[3].claim]
    # every point in flight: wait for them (the next phase needs their results)
    all_running = [PlanTrial(i, "balance", "RUNNING", s.loss) for i, s in enumerate(steps)]
    assert isinstance(pending_steps(DEFAULT_PLAN, all_running, limit=16), Wait)


def test_a_batch_never_spans_two_phases():
    steps = pending_steps(DEFAULT_PLAN, [], limit=16)
    done = [PlanTrial(i, "balance", "COMPLETE", s.loss, value=0.1 * i) for i, s in enumerate(steps[:3])]
    (last,) = pending_steps(DEFAULT_PLAN, done, limit=16)
    assert last.phase.name == "balance" and config_key(last.loss) == config_key(steps[3].loss)


def test_a_tpe_phase_takes_its_batch_within_its_trials():
    plan = (Phase(name="refine", kind="tpe", space={"gamma": (0.0, 5.0)}, trials=3, batch=2),)
    first = pending_steps(plan, [], limit=16)
    assert len(first) == 2 and all(isinstance(s, Step) and s.space for s in first)
    one_left = [
        PlanTrial(0, "refine", "COMPLETE", LossConfig(gamma=1.0), value=0.5),
        PlanTrial(1, "refine", "COMPLETE", LossConfig(gamma=2.0), value=0.4),
    ]
    assert len(pending_steps(plan, one_left, limit=16)) == 1  # the phase's third and last trial
    default_batch = pending_steps(DEFAULT_PLAN[3:], [], limit=16)
    assert len(default_batch) == 1  # batch: 1 unless the phase says otherwise
