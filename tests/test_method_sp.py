"""SP against a reference written from Tung & Mori (2019), float64, tiny tensors."""
import pytest
import torch

from kdcore.methods import get_method
from kdcore.methods.sp import SPLoss


def reference_sp(f_s, f_t):
    n = len(f_s)

    def g(f):
        f = f.reshape(n, -1)
        rows = [[f[i] @ f[j] for j in range(n)] for i in range(n)]
        return [[rows[i][j] / torch.sqrt(sum(v * v for v in rows[i])) for j in range(n)] for i in range(n)]

    gs, gt = g(f_s), g(f_t)
    return sum((gs[i][j] - gt[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2


def test_sp_matches_reference_values_and_gradients_on_maps_of_other_shapes():
    g = torch.Generator().manual_seed(2)
    f_s = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    f_t = torch.randn(4, 5, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    loss = SPLoss()(f_s, f_t)
    ref = reference_sp(f_s, f_t.detach())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-9)
    assert loss.item() > 0
    (grad,) = torch.autograd.grad(loss, f_s)
    (ref_grad,) = torch.autograd.grad(ref, f_s)
    assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-12)


def test_sp_sends_no_gradient_to_the_teacher_and_vanishes_on_a_copy():
    f_s = torch.randn(5, 7, requires_grad=True)
    f_t = torch.randn(5, 7, requires_grad=True)
    SPLoss()(f_s, f_t).backward()
    assert f_t.grad is None and f_s.grad.abs().sum() > 0
    t = torch.randn(5, 7, dtype=torch.float64)
    assert SPLoss()(3.0 * t, t).item() == pytest.approx(0.0, abs=1e-12)


def test_sp_is_registered_with_the_authors_defaults():
    record = get_method("sp")
    assert record.family == "relation" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "sp", **dict(weight=3000.0, teacher_layers=[], student_layers=[])}
