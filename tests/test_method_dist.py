"""DIST against Pearson correlations computed the textbook way (means, covariances), float64."""
import pytest
import torch

from kdcore.methods import get_method
from kdcore.methods.dist import DISTLoss


def pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sx = sum((a - mx) ** 2 for a in x) ** 0.5
    sy = sum((b - my) ** 2 for b in y) ** 0.5
    return cov / (sx * sy)


def reference_dist(z_s, z_t, beta, gamma, tau):
    p_s = torch.softmax(z_s / tau, dim=1)
    p_t = torch.softmax(z_t / tau, dim=1)
    n, c = p_s.shape
    inter = 1 - sum(pearson(list(p_s[i]), list(p_t[i])) for i in range(n)) / n
    intra = 1 - sum(pearson(list(p_s[:, k]), list(p_t[:, k])) for k in range(c)) / c
    return tau**2 * beta * inter, tau**2 * gamma * intra


@pytest.mark.parametrize("beta,gamma,tau", [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)])
def test_dist_matches_reference_values_and_gradients(beta, gamma, tau):
    g = torch.Generator().manual_seed(5)
    z_s = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z_t = (2 * torch.randn(6, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    loss_fn = DISTLoss(beta, gamma, tau)
    terms = loss_fn.terms(z_s, z_t)
    ref_inter, ref_intra = reference_dist(z_s, z_t.detach(), beta, gamma, tau)
    # the authors' ε = 1e-8 in the denominator is the only difference from the textbook form
    assert terms["inter"].item() == pytest.approx(ref_inter.item(), rel=1e-6)
    assert terms["intra"].item() == pytest.approx(ref_intra.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(loss_fn(z_s, z_t), z_s)
    (ref_grad,) = torch.autograd.grad(ref_inter + ref_intra, z_s)
    assert torch.allclose(grad, ref_grad, rtol=1e-5, atol=1e-9)
    assert grad.abs().sum() > 0


def test_dist_sends_no_gradient_to_the_teacher_and_vanishes_on_identical_logits():
    z_s = torch.randn(5, 3, requires_grad=True)
    z_t = torch.randn(5, 3, requires_grad=True)
    DISTLoss()(z_s, z_t).backward()
    assert z_t.grad is None and z_s.grad is not None
    z = torch.randn(8, 5, dtype=torch.float64)
    assert DISTLoss()(z, z).item() == pytest.approx(0.0, abs=1e-5)  # ε in the denominator leaves ~1e-7
    assert DISTLoss()(z, -z).item() > 1.0  # reversed rankings correlate negatively


def test_dist_is_registered_with_the_authors_defaults():
    record = get_method("dist")
    assert record.family == "logit" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "dist", **dict(beta=1.0, gamma=1.0, tau=1.0, ce_weight=1.0)}
