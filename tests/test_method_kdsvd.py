"""KD-SVD against a reference that gets the singular vectors from an eigen-decomposition of XᵀX
(not an SVD) and does the matching and the RBF with explicit loops, float64, tiny maps."""
import math

import pytest
import torch

from kdcore.errors import IncompatibleLayersError
from kdcore.methods import get_method
from kdcore.methods.kdsvd import KDSVDLoss


def top_vectors(f, k):
    """Per sample: eigenvectors of XᵀX by decreasing eigenvalue (= right singular vectors) and σ = √λ."""
    out = []
    for x in f.flatten(2).transpose(1, 2):
        lam, vec = torch.linalg.eigh(x.t() @ x)
        order = torch.argsort(lam, descending=True)[:min(k, *x.shape)]  # beyond the rank there is no σ > 0
        out.append((vec[:, order], lam[order].clamp_min(0).sqrt()))
    return out


def reference(s_feats, t_feats, k=1):
    total = 0.0
    prev = None
    for f_s, f_t in zip(s_feats, t_feats):
        layer = []
        for (vs, _), (vt, sig) in zip(top_vectors(f_s, k + 3), top_vectors(f_t, k)):
            sig = sig / sig.norm()
            cols_t, cols_s = [], []
            for j in range(vt.shape[1]):
                t = vt[:, j]
                t = t if t[t.abs().argmax()] > 0 else -t  # largest entry positive
                cos = [vs[:, q] @ t for q in range(vs.shape[1])]
                q = max(range(len(cos)), key=lambda i: abs(cos[i].item()))
                cols_t.append(t * sig[j])
                cols_s.append(vs[:, q] * math.copysign(1.0, cos[q].item()) * sig[j])
            layer.append((torch.stack(cols_s, 1), torch.stack(cols_t, 1)))
        if prev is not None:
            for (s_b, t_b), (s_a, t_a) in zip(layer, prev):
                c_b, c_a, kk = s_b.shape[0], s_a.shape[0], s_b.shape[1]
                for i in range(c_b):
                    for j in range(c_a):
                        for q in range(kk):
                            rs = torch.exp(-(s_b[i, q] - s_a[j, q]) ** 2 / 8)
                            rt = torch.exp(-(t_b[i, q] - t_a[j, q]) ** 2 / 8)
                            total = total + (rs - rt) ** 2
        prev = layer
    return total / s_feats[0].shape[0]


@pytest.mark.parametrize("k", [1, 2])
def test_kdsvd_matches_reference_values_and_gradients(k):
    g = torch.Generator().manual_seed(10 + k)
    shapes = [(2, 5, 3, 3), (2, 6, 3, 3), (2, 6, 2, 2)]
    s = [torch.randn(*sh, generator=g, dtype=torch.float64, requires_grad=True) for sh in shapes]
    t = [torch.randn(*sh, generator=g, dtype=torch.float64, requires_grad=True) for sh in shapes]
    loss = KDSVDLoss(k)(s, t)
    ref = reference(s, [f.detach() for f in t], k)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-8)
    assert loss.item() > 0
    grads = torch.autograd.grad(loss, s)
    ref_grads = torch.autograd.grad(ref, s)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-10)
        assert a.abs().sum() > 0


def test_kdsvd_sends_no_gradient_to_the_teacher_and_vanishes_on_a_copy():
    t = [torch.randn(3, 4, 4, 4, dtype=torch.float64), torch.randn(3, 4, 2, 2, dtype=torch.float64)]
    assert KDSVDLoss()([f.clone() for f in t], t).item() == pytest.approx(0.0, abs=1e-12)
    s = [torch.randn(2, 4, 4, 4, requires_grad=True), torch.randn(2, 4, 2, 2, requires_grad=True)]
    t = [torch.randn(2, 4, 4, 4, requires_grad=True), torch.randn(2, 4, 2, 2, requires_grad=True)]
    KDSVDLoss()(s, t).backward()
    assert all(f.grad is None for f in t) and all(torch.isfinite(f.grad).all() for f in s)
    with pytest.raises(IncompatibleLayersError, match="equal width"):
        KDSVDLoss()([torch.randn(2, 3, 2, 2)] * 2, [torch.randn(2, 4, 2, 2)] * 2)


def test_kdsvd_is_registered_with_the_authors_defaults():
    record = get_method("kdsvd")
    assert record.family == "feature" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "kdsvd", **dict(weight=1.0, k=1, teacher_layers=[], student_layers=[])}
