"""CRD against the NCE objective written from Tian et al. (2020) sample by sample, float64, tiny bank."""
import math

import pytest
import torch

from kdcore.errors import KDError
from kdcore.methods import EMBEDDING, get_method
from kdcore.methods.crd import CRDLoss

N_DATA, K, T = 12, 5, 0.07


def unit(v):
    return v / torch.sqrt((v * v).sum())


def reference_crd(f_s, f_t, memory_s, memory_t, contrast_index, embed_s, embed_t):
    """h = P/(P + K/N) with P = exp(v·m/τ)/Z and Z = N·mean of the first batch's exp scores."""
    n = len(f_s)
    v_s = [unit(embed_s(f_s[i])) for i in range(n)]
    v_t = [unit(embed_t(f_t[i])) for i in range(n)]

    def direction(anchors, bank):
        raw = [[torch.exp(anchors[i] @ bank[contrast_index[i, j]] / T) for j in range(K + 1)] for i in range(n)]
        z = sum(r.detach() for row in raw for r in row) / (n * (K + 1)) * N_DATA
        noise = K / N_DATA
        total = 0.0
        for i in range(n):
            p = [r / z for r in raw[i]]
            total = total - torch.log(p[0] / (p[0] + noise + 1e-7))
            total = total - sum(torch.log(noise / (p[j] + noise + 1e-7)) for j in range(1, K + 1))
        return total / n

    return direction(v_s, memory_t) + direction(v_t, memory_s)


def make(seed=0):
    torch.manual_seed(seed)
    return CRDLoss(student_dim=3, teacher_dim=4, num_data=N_DATA, feat_dim=6, nce_k=K).double()


def test_crd_matches_reference_values_and_gradients():
    loss_fn = make()
    g = torch.Generator().manual_seed(8)
    f_s = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    f_t = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([2, 7, 11])
    contrast = loss_fn.sample_negatives(index)
    assert contrast.shape == (3, K + 1) and torch.equal(contrast[:, 0], index)
    assert not (contrast[:, 1:] == index.unsqueeze(1)).any()  # a sample is never its own negative
    mem_s, mem_t = loss_fn.memory_s.clone(), loss_fn.memory_t.clone()
    loss = loss_fn(f_s, f_t, index, contrast)
    ref = reference_crd(f_s, f_t.detach(), mem_s, mem_t, contrast, loss_fn.embed_s, loss_fn.embed_t)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-9)
    params = [f_s, loss_fn.embed_s.weight, loss_fn.embed_t.weight]
    grads = torch.autograd.grad(loss, params)
    ref_grads = torch.autograd.grad(ref, params)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)
        assert a.abs().sum() > 0


def test_crd_updates_the_bank_with_momentum_and_sends_no_gradient_to_the_teacher():
    loss_fn = make(1)
    f_s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    f_t = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 5])
    old_s = loss_fn.memory_s.clone()
    untouched = [i for i in range(N_DATA) if i not in (0, 5)]
    loss_fn(f_s, f_t, index).backward()
    assert f_t.grad is None and f_s.grad is not None
    v_s = unit(loss_fn.embed_s(f_s[1]).detach())
    expected = unit(0.5 * old_s[5] + 0.5 * v_s)
    assert torch.allclose(loss_fn.memory_s[5], expected, rtol=1e-12)
    assert torch.equal(loss_fn.memory_s[untouched], old_s[untouched])
    eval_fn = make(1).eval()
    before = eval_fn.memory_t.clone()
    eval_fn(f_s.detach(), f_t.detach(), index)
    assert torch.equal(eval_fn.memory_t, before)  # evaluation does not write the bank


def test_crd_state_resumes_from_the_state_dict():
    loss_fn = make(2)
    f_s, f_t, index = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), torch.tensor([1, 4, 9])
    loss_fn(f_s, f_t, index)  # sets Z and writes the bank
    state = loss_fn.state_dict()
    assert {"memory_s", "memory_t", "normaliser"} <= set(state) and (state["normaliser"] > 0).all()
    restored = make(99)
    restored.load_state_dict(state)
    contrast = loss_fn.sample_negatives(index)
    loss_fn.eval(), restored.eval()
    assert loss_fn(f_s, f_t, index, contrast).item() == restored(f_s, f_t, index, contrast).item()


def test_crd_caps_negatives_at_the_data_set_and_refuses_bad_indices():
    loss_fn = CRDLoss(3, 3, num_data=4)  # the paper's 16,384 negatives cannot come from 4 samples
    assert loss_fn.k == 3
    with pytest.raises(KDError, match="outside the training set"):
        loss_fn(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 4]))
    assert math.isfinite(loss_fn(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 3])).item())


def test_crd_is_registered_with_the_authors_defaults():
    record = get_method("crd")
    assert record.family == "relation" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "crd", **dict(weight=0.8, feat_dim=128, nce_k=16384, nce_t=0.07, nce_m=0.5,
                                                teacher_layer=EMBEDDING, student_layer=EMBEDDING)}
