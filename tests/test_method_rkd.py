"""RKD against a loop-by-loop reference written from Park et al. (2019), in float64 on tiny random tensors."""
import itertools
import math

import pytest
import torch

from kdcore.errors import KDError
from kdcore.methods import EMBEDDING, get_method
from kdcore.methods.rkd import RKDLoss


def huber(x):
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def reference_rkd(e_s, e_t, w_d=25.0, w_a=50.0):
    """Plain Python sums over pairs and triplets, every term spelled out."""
    n = len(e_s)

    def psi_d(e):
        dist = [[(e[i] - e[j]).norm() if i != j else torch.zeros((), dtype=e.dtype) for j in range(n)] for i in range(n)]
        mu = sum(dist[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [[dist[i][j] / mu for j in range(n)] for i in range(n)]

    def cos(e, i, j, k):
        if i == j or k == j:  # a degenerate triplet has no angle; counted as cosine 0 on both sides
            return torch.zeros((), dtype=e.dtype)
        u, v = e[i] - e[j], e[k] - e[j]
        return (u @ v) / (u.norm() * v.norm())

    ds, dt = psi_d(e_s), psi_d(e_t)
    loss_d = sum(huber(ds[i][j] - dt[i][j]) for i in range(n) for j in range(n)) / n**2
    loss_a = sum(huber(cos(e_s, i, j, k) - cos(e_t, i, j, k))
                 for i, j, k in itertools.product(range(n), repeat=3)) / n**3
    return w_d * loss_d, w_a * loss_a


def test_rkd_matches_reference_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    e_s = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    e_t = (3 * torch.randn(5, 4, generator=g, dtype=torch.float64)).requires_grad_(True)  # other width, other scale
    loss_fn = RKDLoss()
    terms = loss_fn.terms(e_s, e_t)
    ref_d, ref_a = reference_rkd(e_s, e_t.detach())
    assert terms["distance"].item() == pytest.approx(ref_d.item(), rel=1e-9)
    assert terms["angle"].item() == pytest.approx(ref_a.item(), rel=1e-9)
    assert terms["distance"].item() > 0 and terms["angle"].item() > 0

    (grad,) = torch.autograd.grad(loss_fn(e_s, e_t), e_s)
    (ref_grad,) = torch.autograd.grad(ref_d + ref_a, e_s)
    assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-10)
    assert grad.abs().sum() > 0


def test_rkd_sends_no_gradient_to_the_teacher():
    e_s = torch.randn(6, 8, requires_grad=True)
    e_t = torch.randn(6, 8, requires_grad=True)
    RKDLoss()(e_s, e_t).backward()
    assert e_t.grad is None and e_s.grad is not None


def test_rkd_is_zero_for_a_scaled_copy_and_its_weights_scale_the_terms():
    e_t = torch.randn(6, 4, dtype=torch.float64)
    # distances are normalised by their mean and angles are scale-free: a scaled copy has identical relations
    assert RKDLoss()(7.0 * e_t, e_t).item() == pytest.approx(0.0, abs=1e-12)
    e_s = torch.randn(6, 4, dtype=torch.float64)
    a = RKDLoss(distance_weight=1.0, angle_weight=0.0)(e_s, e_t)
    b = RKDLoss(distance_weight=0.0, angle_weight=1.0)(e_s, e_t)
    assert RKDLoss(2.0, 3.0)(e_s, e_t).item() == pytest.approx(2 * a.item() + 3 * b.item(), rel=1e-12)
    assert math.isfinite(a.item()) and a.item() > 0


def test_rkd_refuses_a_single_sample():
    with pytest.raises(KDError, match="at least 2"):
        RKDLoss()(torch.randn(1, 3), torch.randn(1, 3))


def test_rkd_is_registered_with_the_authors_defaults():
    record = get_method("rkd")
    assert record.family == "relation" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "rkd", **dict(distance_weight=25.0, angle_weight=50.0, teacher_layer=EMBEDDING,
                                                student_layer=EMBEDDING)}
