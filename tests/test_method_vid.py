"""VID against the Gaussian negative log-likelihood written from Ahn et al. (2019), float64, tiny tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdcore.methods import get_method
from kdcore.methods.vid import VIDLoss


def reference_vid(mean, f_t, log_scale, eps=1e-5):
    n, c, h, w = f_t.shape
    total = 0.0
    for ch in range(c):
        var = math.log(1 + math.exp(log_scale[ch].item())) + eps  # softplus
        for i in range(n):
            for y in range(h):
                for x in range(w):
                    total += 0.5 * ((f_t[i, ch, y, x] - mean[i, ch, y, x]) ** 2 / var + math.log(var))
    return float(total) / (n * c * h * w)


def test_vid_matches_the_gaussian_nll_and_starts_at_the_authors_variance():
    torch.manual_seed(3)
    loss_fn = VIDLoss(student_channels=2, teacher_channels=3).double()
    assert torch.allclose(loss_fn.variance(), torch.full((3,), 5.0, dtype=torch.float64))
    with torch.no_grad():
        loss_fn.log_scale.add_(torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64))  # channels differ
    f_s = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    f_t = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)  # smaller: the student is pooled
    loss = loss_fn(f_s, f_t)
    mean = loss_fn.regressor(F.adaptive_avg_pool2d(f_s, 2)).detach()
    assert loss.item() == pytest.approx(reference_vid(mean, f_t.detach(), loss_fn.log_scale.detach()), rel=1e-9)


def test_vid_gradients_match_autograd_of_the_reference_expression():
    torch.manual_seed(4)
    loss_fn = VIDLoss(3, 3).double()
    f_s = torch.randn(3, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    f_t = torch.randn(3, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(f_s, f_t)
    grads = torch.autograd.grad(loss, [f_s, loss_fn.log_scale])
    var = torch.log1p(torch.exp(loss_fn.log_scale)).view(1, -1, 1, 1) + 1e-5
    ref = (0.5 * ((f_t.detach() - loss_fn.regressor(f_s)) ** 2 / var + torch.log(var))).mean()
    ref_grads = torch.autograd.grad(ref, [f_s, loss_fn.log_scale])
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-9, atol=1e-12)
        assert g.abs().sum() > 0


def test_vid_sends_no_gradient_to_the_teacher_and_takes_flat_vectors():
    loss_fn = VIDLoss(4, 6)
    f_s = torch.randn(5, 4, requires_grad=True)
    f_t = torch.randn(5, 6, requires_grad=True)
    loss_fn(f_s, f_t).backward()
    assert f_t.grad is None and f_s.grad is not None
    assert loss_fn.log_scale.grad is not None  # the variance is learned


def test_vid_is_registered_with_the_authors_defaults():
    record = get_method("vid")
    assert record.family == "feature" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "vid", **dict(weight=1.0, init_pred_var=5.0, eps=1e-5, teacher_layers=[], student_layers=[])}
