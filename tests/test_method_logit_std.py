"""Logit-standardised KD against a reference written from Sun et al. (2024), float64, tiny tensors."""
import math

import pytest
import torch

from kdcore.methods import get_method
from kdcore.methods.logit_std import LogitStandardKDLoss

EPS = 1e-7


def zscore(row):
    c = len(row)
    mean = sum(row) / c
    std = (sum((v - mean) ** 2 for v in row) / (c - 1)) ** 0.5  # sample std, as the authors compute it
    return [(v - mean) / (std + EPS) for v in row]


def reference(z_s, z_t, temperature):
    total = 0.0
    for row_s, row_t in zip(z_s, z_t):
        a_s = [v / temperature for v in zscore(row_s)]
        a_t = [v / temperature for v in zscore(row_t)]
        ls = [v - torch.logsumexp(torch.stack(a_s), 0) for v in a_s]
        lt = [v - math.log(sum(math.exp(x) for x in a_t)) for v in a_t]
        total = total + sum(math.exp(b) * (b - a) for a, b in zip(ls, lt))
    return temperature**2 * total / len(z_s)


@pytest.mark.parametrize("temperature", [2.0, 3.0])
def test_logit_std_matches_reference_values_and_gradients(temperature):
    g = torch.Generator().manual_seed(6)
    z_s = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z_t = (10 * torch.randn(4, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    loss = LogitStandardKDLoss(temperature)(z_s, z_t)
    ref = reference(list(z_s), [[v.item() for v in row] for row in z_t], temperature)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-9)
    (grad,) = torch.autograd.grad(loss, z_s)
    (ref_grad,) = torch.autograd.grad(ref, z_s)
    assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-12)
    assert grad.abs().sum() > 0


def test_logit_std_ignores_the_teachers_scale_and_sends_no_gradient_to_it():
    z_t = torch.randn(6, 10, dtype=torch.float64)
    # the point of the method: a student whose logits are a shifted, scaled copy already matches
    assert LogitStandardKDLoss()(0.1 * z_t + 3.0, z_t).item() == pytest.approx(0.0, abs=1e-10)
    z_s = torch.randn(6, 10, requires_grad=True)
    z_t = torch.randn(6, 10, requires_grad=True)
    LogitStandardKDLoss()(z_s, z_t).backward()
    assert z_t.grad is None and z_s.grad is not None


def test_logit_std_is_registered_with_the_authors_defaults():
    record = get_method("logit_std")
    assert record.family == "logit" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "logit_std", **dict(temperature=2.0, kd_weight=9.0, ce_weight=1.0)}
