"""The hand-written backward of FoldMLP and the fused per-fold Adam, each against torch's own implementation."""

from __future__ import annotations

import pytest
import torch

from objectives.config import LossConfig, ModelConfig
from objectives.losses import combined_terms, combined_terms_and_grad
from objectives.model import MLP, Activations, FoldMLP
from objectives.optim import FoldAdam

LOSS = LossConfig(alpha=0.25, gamma=2.0, bce_weight=0.5, focal_weight=0.5)


def _fold_mlp(hidden: tuple[int, ...], n_features: int = 7, n_folds: int = 3, dropout: float = 0.0, **kw) -> FoldMLP:
    gens = [torch.Generator().manual_seed(10 + k) for k in range(n_folds)]
    return FoldMLP(n_features, ModelConfig(hidden=hidden, dropout=dropout), gens, torch.device("cpu"), **kw)


def _batch(n_folds: int = 3, rows: int = 33, n_features: int = 7, dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n_folds, rows, n_features, generator=gen, dtype=dtype) * 2
    y = (torch.rand(n_folds, rows, generator=gen) < 0.3).to(dtype)
    return x, y


@pytest.mark.parametrize("hidden", [(16, 8), (5,), ()])
def test_backward_equals_autograd_on_each_folds_mlp(hidden):
    model = _fold_mlp(hidden, dtype=torch.float64)
    x, y = _batch()
    acts = Activations()
    logits = model.forward(x, keep=acts)
    _, dterms = combined_terms_and_grad(logits, y, LOSS)
    model.backward(acts, dterms / x.shape[1])  # d(mean loss)/d(logits)
    for k in range(x.shape[0]):
        mlp = MLP(x.shape[2], model.cfg).double()
        mlp.load_state_dict(model.state_dict_of_fold(k))
        loss = combined_terms(mlp(x[k]), y[k], LOSS).mean()
        loss.backward()
        torch.testing.assert_close(mlp(x[k]), logits[k], rtol=0, atol=1e-12)
        expected = torch.cat([p.grad.t().reshape(-1) if p.dim() == 2 else p.grad for p in mlp.parameters()])
        # MLP stores weights as [out, in]; FoldMLP as [in, out]: compare layer by layer in FoldMLP's layout
        mine = torch.cat([t[k].reshape(-1) for pair in zip(model.grad_weights, model.grad_biases) for t in pair])
        torch.testing.assert_close(mine, expected, rtol=1e-10, atol=1e-12)


def test_backward_with_dropout_equals_autograd_with_the_same_masks():
    model = _fold_mlp((16, 8), dropout=0.4, dtype=torch.float64)
    x, y = _batch()
    acts = Activations()
    logits = model.forward(x, dropout_generator=torch.Generator().manual_seed(3), keep=acts)
    assert all((m == 0).any() for m in acts.dropout), "some units must be dropped"
    _, dterms = combined_terms_and_grad(logits, y, LOSS)
    model.backward(acts, dterms)
    # the same network written with autograd, applying the recorded dropout multipliers
    params = model.params.clone().requires_grad_()
    weights, biases = model._views(params)
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b, h, w)
        if i < len(weights) - 1:
            h = torch.relu(h) * acts.dropout[i]
    reference = h.squeeze(-1)
    torch.testing.assert_close(reference.detach(), logits, rtol=0, atol=1e-12)
    combined_terms(reference, y, LOSS).sum().backward()
    torch.testing.assert_close(model.grad, params.grad, rtol=1e-10, atol=1e-12)


def test_bf16_products_give_nearly_the_fp32_gradient():
    exact, mixed = _fold_mlp((32, 16)), _fold_mlp((32, 16), compute_dtype=torch.bfloat16)
    x, y = _batch(rows=256, dtype=torch.float32)
    for model in (exact, mixed):
        acts = Activations()
        logits = model.forward(x, keep=acts)
        model.backward(acts, combined_terms_and_grad(logits, y, LOSS)[1] / x.shape[1])
    assert mixed.grad.dtype == torch.float32 and acts.inputs[1].dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(exact.grad, mixed.grad, dim=1)
    assert torch.all(cosine > 0.99), cosine
    assert not torch.equal(exact.grad, mixed.grad)  # the products really were bf16


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_fold_adam_equals_torch_adam_per_fold_and_skips_inactive_folds(weight_decay):
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(3, 40, generator=gen, dtype=torch.float64)
    grad = torch.zeros_like(params)
    mine = FoldAdam(params, grad, lr=0.01, weight_decay=weight_decay)
    folds = [params[k].clone().requires_grad_() for k in range(3)]
    theirs = [torch.optim.Adam([p], lr=0.01, weight_decay=weight_decay, foreach=False) for p in folds]
    schedule = [None, None, [True, False, True], None, [False, True, True], None]
    for active in schedule:
        grad.copy_(torch.randn(3, 40, generator=gen, dtype=torch.float64))
        mine.step(active)
        for k in range(3):
            if active is None or active[k]:
                folds[k].grad = grad[k].clone()
                theirs[k].step()
    assert mine.fold_steps() == [5, 5, 6]
    for k in range(3):
        torch.testing.assert_close(params[k], folds[k].detach(), rtol=1e-12, atol=1e-14)
