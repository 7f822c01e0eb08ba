"""FSP against the matrix written from Yim et al. (2017) with explicit sums over positions, float64."""
import pytest
import torch
import torch.nn.functional as F

from kdcore.errors import IncompatibleLayersError
from kdcore.methods import get_method
from kdcore.methods.fsp import FSPLoss, fsp_matrix


def reference_fsp_matrix(f1, f2):
    n, c1, h, w = f1.shape
    c2 = f2.shape[1]
    g = [[[sum(f1[b, i, y, x] * f2[b, j, y, x] for y in range(h) for x in range(w)) / (h * w)
           for j in range(c2)] for i in range(c1)] for b in range(n)]
    return g


def reference_loss(s_feats, t_feats):
    total = 0.0
    for k in range(len(s_feats) - 1):
        a1, a2 = s_feats[k], s_feats[k + 1]
        b1, b2 = t_feats[k], t_feats[k + 1]
        if a1.shape[2] > a2.shape[2]:  # pool the larger map of each pair to the smaller
            a1, b1 = F.adaptive_avg_pool2d(a1, a2.shape[2:]), F.adaptive_avg_pool2d(b1, b2.shape[2:])
        gs, gt = reference_fsp_matrix(a1, a2), reference_fsp_matrix(b1, b2)
        diffs = [(gs[b][i][j] - gt[b][i][j]) ** 2
                 for b in range(len(gs)) for i in range(len(gs[0])) for j in range(len(gs[0][0]))]
        total = total + sum(diffs) / len(diffs)
    return total


def test_fsp_matrix_is_the_mean_over_positions_of_outer_products():
    f1 = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    f2 = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    ref = torch.tensor([[[v.item() for v in row] for row in b] for b in reference_fsp_matrix(f1, f2)], dtype=torch.float64)
    assert torch.allclose(fsp_matrix(f1, f2), ref, rtol=1e-12)


def test_fsp_loss_matches_reference_values_and_gradients_over_three_layers():
    g = torch.Generator().manual_seed(7)
    shapes = [(2, 2, 4, 4), (2, 3, 4, 4), (2, 3, 2, 2)]  # the last pair is pooled to 2×2
    s = [torch.randn(*sh, generator=g, dtype=torch.float64, requires_grad=True) for sh in shapes]
    t = [torch.randn(*sh, generator=g, dtype=torch.float64, requires_grad=True) for sh in shapes]
    loss = FSPLoss()(s, t)
    ref = reference_loss(s, [f.detach() for f in t])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-9)
    grads = torch.autograd.grad(loss, s)
    ref_grads = torch.autograd.grad(ref, s)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)
        assert a.abs().sum() > 0


def test_fsp_sends_no_gradient_to_the_teacher_and_refuses_unequal_widths():
    s = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 5, 4, 4, requires_grad=True)]
    t = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 5, 4, 4, requires_grad=True)]
    FSPLoss()(s, t).backward()
    assert all(f.grad is None for f in t) and all(f.grad is not None for f in s)
    with pytest.raises(IncompatibleLayersError, match="equal channel counts"):
        FSPLoss()([torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 4)], [torch.randn(2, 3, 4, 4), torch.randn(2, 8, 4, 4)])


def test_fsp_is_registered_with_the_authors_defaults():
    record = get_method("fsp")
    assert record.family == "feature" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "fsp", **dict(weight=1.0, teacher_layers=[], student_layers=[])}
