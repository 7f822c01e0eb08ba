"""PKT against an entry-by-entry reference written from Passalis & Tefas (2018), float64, tiny tensors."""
import math

import pytest
import torch

from kdcore.methods import EMBEDDING, get_method
from kdcore.methods.pkt import PKTLoss

EPS = 1e-7


def reference_pkt(e_s, e_t):
    n = len(e_s)

    def probs(e):
        k = [[((e[i] @ e[j]) / ((e[i].norm() + EPS) * (e[j].norm() + EPS)) + 1) / 2 for j in range(n)] for i in range(n)]
        return [[k[i][j] / sum(k[i]) for j in range(n)] for i in range(n)]

    ps, pt = probs(e_s), probs(e_t)
    return sum(pt[i][j] * torch.log((pt[i][j] + EPS) / (ps[i][j] + EPS)) for i in range(n) for j in range(n)) / n**2


def test_pkt_matches_reference_values_and_gradients():
    g = torch.Generator().manual_seed(1)
    e_s = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    e_t = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    loss = PKTLoss()(e_s, e_t)
    ref = reference_pkt(e_s, e_t.detach())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-9)
    assert loss.item() > 0
    (grad,) = torch.autograd.grad(loss, e_s)
    (ref_grad,) = torch.autograd.grad(ref, e_s)
    assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-12)
    assert grad.abs().sum() > 0


def test_pkt_sends_no_gradient_to_the_teacher_and_ignores_scale():
    e_s = torch.randn(6, 4, requires_grad=True)
    e_t = torch.randn(6, 4, requires_grad=True)
    PKTLoss()(e_s, e_t).backward()
    assert e_t.grad is None and e_s.grad is not None
    t = torch.randn(6, 4, dtype=torch.float64)
    # cosine kernel: a positively scaled copy of the teacher has the same neighbour distribution
    assert PKTLoss()(5.0 * t, t).item() == pytest.approx(0.0, abs=1e-9)
    assert math.isfinite(PKTLoss()(torch.zeros(4, 3), torch.randn(4, 3)).item())  # a dead feature stays finite


def test_pkt_is_registered_with_the_authors_defaults():
    record = get_method("pkt")
    assert record.family == "relation" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "pkt", **dict(weight=30000.0, teacher_layer=EMBEDDING, student_layer=EMBEDDING)}
