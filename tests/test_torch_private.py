"""torch's private functions, as objectives/torch_private.py calls them: each must still exist, take the arguments
it is given and compute what torch's public API computes. A failure here after a torch upgrade names the function
that changed; fix objectives/torch_private.py (or go back to the public API there) before anything else."""

import re
from pathlib import Path

import pytest
import torch

from objectives.torch_private import foreach_add_, fused_adam_, relu_backward

OBJECTIVES = Path(__file__).resolve().parents[1] / "objectives"


def _schema_arguments(op) -> list[tuple[str, bool, bool]]:
    return [(a.name, a.kwarg_only, a.has_default_value()) for a in op._schema.arguments]


def test_fused_adam_takes_the_arguments_it_is_given():
    arguments = _schema_arguments(torch.ops.aten._fused_adam_.default)
    positional = [name for name, kwarg_only, _ in arguments if not kwarg_only]
    assert positional == ["self", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps"]
    passed = {"lr", "beta1", "beta2", "weight_decay", "eps", "amsgrad", "maximize"}
    keywords = {name for name, kwarg_only, _ in arguments if kwarg_only}
    assert passed <= keywords, f"keyword arguments gone: {passed - keywords}"
    required = {name for name, kwarg_only, default in arguments if kwarg_only and not default}
    assert required <= passed, f"new required keyword arguments: {required - passed}"


def test_foreach_add_takes_a_list_and_a_scalar():
    assert [name for name, _, _ in _schema_arguments(torch.ops.aten._foreach_add_.Scalar)] == ["self", "scalar"]


def test_foreach_add_adds_to_every_tensor_in_place():
    steps = [torch.zeros((), dtype=torch.float32) for _ in range(3)]
    steps[1] += 4.0
    foreach_add_(steps, 1.0)
    foreach_add_(steps[:1], 1.0)
    assert [float(s) for s in steps] == [2.0, 5.0, 1.0]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_adam_step_is_torch_adams(dtype, weight_decay):
    """Five steps on a tiny tensor: bit for bit torch.optim.Adam(fused=True), which runs the same kernel, and to
    rounding the reference single-tensor Adam (the update rule itself)."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(7, generator=gen, dtype=dtype)
    grads = [torch.randn(7, generator=gen, dtype=dtype) for _ in range(5)]
    hyper = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)

    mine, grad = start.clone(), torch.zeros_like(start)
    exp_avg, exp_avg_sq, step = torch.zeros_like(start), torch.zeros_like(start), torch.zeros(())
    references = {}
    for fused in (True, False):
        p = start.clone().requires_grad_()
        references[fused] = (p, torch.optim.Adam([p], fused=fused, foreach=None if fused else False, **hyper))
    for g in grads:
        grad.copy_(g)
        foreach_add_([step], 1.0)
        fused_adam_(
            [mine], [grad], [exp_avg], [exp_avg_sq], [step], lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, wd=weight_decay
        )
        for p, opt in references.values():
            p.grad = g.clone()
            opt.step()
    fused_p, fused_opt = references[True]
    assert torch.equal(mine, fused_p.detach())
    state = fused_opt.state[fused_p]
    assert torch.equal(exp_avg, state["exp_avg"]) and torch.equal(exp_avg_sq, state["exp_avg_sq"])
    assert float(step) == float(state["step"]) == 5.0
    tolerance = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(mine, references[False][0].detach(), **tolerance)
    assert not torch.equal(mine, start)


def test_torch_private_names_are_called_only_from_the_wrapper_module():
    calls = {
        path.name: re.findall(r"torch\._[a-z]\w*", path.read_text(encoding="utf-8"))
        for path in OBJECTIVES.glob("*.py")
        if path.name != "torch_private.py"
    }
    assert {name: found for name, found in calls.items() if found} == {}


def test_threshold_backward_takes_grad_input_and_threshold():
    names = [name for name, _, _ in _schema_arguments(torch.ops.aten.threshold_backward.default)]
    assert names == ["grad_output", "self", "threshold"]


def test_relu_backward_is_autograds_relu_gradient():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    x[0, :3] = 0.0  # at 0 the ReLU's gradient is 0, as autograd has it
    grad = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    leaf = x.clone().requires_grad_()
    torch.relu(leaf).backward(grad)
    assert torch.equal(relu_backward(grad, torch.relu(x)), leaf.grad)
    assert torch.equal(relu_backward(grad, x), leaf.grad)
