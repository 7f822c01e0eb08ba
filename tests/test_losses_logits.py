"""Logit losses checked against reference expressions written here with plain torch ops."""

import math

import pytest
import torch

from kdcore.errors import KDError, UnknownNameError
from kdcore.losses import (
    DKD,
    LOGIT_METHODS,
    CrossEntropyOnly,
    HintonKD,
    LogitMatching,
    build_logit_loss,
    log_soft_labels,
    soft_labels,
)

N, C = 8, 7


def logits(seed: int, n: int = N, c: int = C, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * scale


def labels(seed: int, n: int = N, c: int = C) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, c, (n,), generator=g)


# ----------------------------------------------------------------- reference expressions (no library helpers)


def ref_softmax(z: torch.Tensor, t: float) -> torch.Tensor:
    e = torch.exp(z / t - (z / t).max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def ref_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) summed over classes, mean over the batch."""
    return (p * (torch.log(p) - torch.log(q))).sum(dim=1).mean()


def ref_hard(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over samples with y != -1, via explicit log of probabilities."""
    p = ref_softmax(z, 1.0)
    rows = [-torch.log(p[i, y[i]]) for i in range(len(y)) if y[i] != -1]
    return torch.stack(rows).mean()


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p)).sum(dim=1)


# ----------------------------------------------------------------- soft labels


def test_soft_labels_at_rho_one_is_the_plain_softmax():
    z = logits(0)
    torch.testing.assert_close(soft_labels(z, 1.0), ref_softmax(z, 1.0))
    torch.testing.assert_close(soft_labels(z, 1.0), torch.exp(z) / torch.exp(z).sum(1, keepdim=True))


@pytest.mark.parametrize("rho", [0.5, 2.0, 4.0, 20.0])
def test_soft_labels_match_reference_and_sum_to_one(rho):
    z = logits(1)
    p = soft_labels(z, rho)
    torch.testing.assert_close(p, ref_softmax(z, rho))
    torch.testing.assert_close(p.sum(dim=1), torch.ones(N, dtype=z.dtype))
    torch.testing.assert_close(log_soft_labels(z, rho), torch.log(ref_softmax(z, rho)))


def test_soft_labels_approach_uniform_for_large_rho():
    z = logits(2)
    far = (soft_labels(z, 1e4) - 1.0 / C).abs().max().item()
    near = (soft_labels(z, 1.0) - 1.0 / C).abs().max().item()
    assert far < 1e-3
    assert near > 0.1


def test_entropy_of_soft_labels_increases_with_rho():
    z = logits(3)
    entropies = torch.stack([entropy(soft_labels(z, rho)) for rho in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)])
    assert torch.all(entropies[1:] > entropies[:-1])
    assert torch.all(entropies[-1] < math.log(C) + 1e-9)


def test_soft_labels_keep_the_argmax():
    z = logits(4)
    for rho in (0.3, 1.0, 10.0):
        assert torch.equal(soft_labels(z, rho).argmax(1), z.argmax(1))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_rho_is_a_kd_error_naming_rho(bad):
    with pytest.raises(KDError, match="rho"):
        soft_labels(logits(0), bad)
    with pytest.raises(KDError, match="rho"):
        log_soft_labels(logits(0), bad)
    with pytest.raises(KDError, match="rho"):
        HintonKD(rho=bad)
    with pytest.raises(KDError, match="rho"):
        DKD(rho=bad)


def test_large_logits_stay_finite():
    z_s, z_t = logits(5, scale=1000.0), logits(6, scale=1000.0)
    y = labels(7)
    for loss in (HintonKD(), DKD(), LogitMatching(alpha=1.0), CrossEntropyOnly()):
        out = loss(z_s.float(), z_t.float(), y, epoch=30)
        assert all(torch.isfinite(v) for v in out.values()), type(loss).__name__


# ----------------------------------------------------------------- Hinton KD


@pytest.mark.parametrize("alpha,beta,rho", [(0.1, 0.9, 4.0), (0.5, 0.5, 1.0), (0.0, 1.0, 20.0), (1.0, 2.0, 2.5)])
def test_hinton_kd_matches_reference(alpha, beta, rho):
    z_s, z_t, y = logits(10), logits(11), labels(12)
    out = HintonKD(alpha=alpha, beta=beta, rho=rho)(z_s, z_t, y)
    soft_ref = beta * rho**2 * ref_kl(ref_softmax(z_t, rho), ref_softmax(z_s, rho))
    hard_ref = alpha * ref_hard(z_s, y)
    torch.testing.assert_close(out["soft"], soft_ref)
    torch.testing.assert_close(out["hard"], hard_ref)
    torch.testing.assert_close(out["total"], hard_ref + soft_ref)
    assert set(out) == {"hard", "soft", "total"}


def test_hinton_terms_add_up_to_total_exactly():
    z_s, z_t, y = logits(13).float(), logits(14).float(), labels(15)
    for loss in (HintonKD(), HintonKD(alpha=0.3, beta=0.7, rho=3.0, soft_loss="ce", rho_squared=False)):
        out = loss(z_s, z_t, y)
        assert torch.equal(out["hard"] + out["soft"], out["total"])


def test_rho_squared_switch_changes_soft_term_by_exactly_rho_squared():
    z_s, z_t, y = logits(16), logits(17), labels(18)
    on = HintonKD(rho=4.0, rho_squared=True)(z_s, z_t, y)
    off = HintonKD(rho=4.0, rho_squared=False)(z_s, z_t, y)
    assert (on["soft"] / off["soft"]).item() == 16.0
    assert torch.equal(on["hard"], off["hard"])
    on3 = HintonKD(rho=3.0, rho_squared=True)(z_s, z_t, y)["soft"]
    off3 = HintonKD(rho=3.0, rho_squared=False)(z_s, z_t, y)["soft"]
    assert (on3 / off3).item() == pytest.approx(9.0, rel=1e-12)


def test_kl_and_ce_soft_losses_differ_by_teacher_entropy_and_share_gradient():
    rho, beta = 3.0, 0.9
    z_t, y = logits(20), labels(21)
    z_s_kl = logits(22).requires_grad_()
    z_s_ce = z_s_kl.detach().clone().requires_grad_()
    kl = HintonKD(alpha=0.0, beta=beta, rho=rho, soft_loss="kl")(z_s_kl, z_t, y)["soft"]
    ce = HintonKD(alpha=0.0, beta=beta, rho=rho, soft_loss="ce")(z_s_ce, z_t, y)["soft"]
    teacher_entropy = entropy(ref_softmax(z_t, rho)).mean()
    torch.testing.assert_close(ce - kl, beta * rho**2 * teacher_entropy)
    assert (ce - kl).item() > 0.1  # the constant really is there
    kl.backward()
    ce.backward()
    torch.testing.assert_close(z_s_kl.grad, z_s_ce.grad)
    assert z_s_kl.grad.abs().sum() > 0


def test_soft_loss_is_zero_when_student_equals_teacher():
    z = logits(23)
    out = HintonKD(alpha=0.0)(z.clone(), z, labels(24))
    assert abs(out["soft"].item()) < 1e-12


def test_unknown_soft_loss_is_a_kd_error():
    with pytest.raises(KDError, match="soft loss"):
        HintonKD(soft_loss="mse")
    with pytest.raises(KDError, match="alpha"):
        HintonKD(alpha=-0.1)


# ----------------------------------------------------------------- unlabelled samples


def test_hard_term_ignores_unlabelled_samples():
    z_s, z_t = logits(30), logits(31)
    y = torch.tensor([0, -1, 2, -1, 4, 5, -1, 1])
    out = CrossEntropyOnly()(z_s, None, y)
    torch.testing.assert_close(out["hard"], ref_hard(z_s, y))
    labelled = y != -1
    torch.testing.assert_close(out["hard"], torch.nn.functional.cross_entropy(z_s[labelled], y[labelled]))
    # changing what the student says about unlabelled samples leaves the hard term alone ...
    z_s2 = z_s.clone()
    z_s2[~labelled] = logits(32)[~labelled]
    assert torch.equal(CrossEntropyOnly()(z_s2, None, y)["hard"], out["hard"])
    # ... but the soft term of KD uses every sample
    kd = HintonKD()
    assert torch.equal(kd(z_s, z_t, y)["hard"], kd(z_s2, z_t, y)["hard"])
    assert not torch.equal(kd(z_s, z_t, y)["soft"], kd(z_s2, z_t, y)["soft"])


def test_batch_without_labels_gives_zero_hard_term_that_backpropagates():
    z_s = logits(33).requires_grad_()
    y = torch.full((N,), -1)
    for loss, z_t in ((CrossEntropyOnly(), None), (HintonKD(), logits(34)), (DKD(), logits(34))):
        out = loss(z_s, z_t, y, epoch=5)
        assert out["hard"].item() == 0.0
        assert out["hard"].requires_grad
        out["total"].backward()
        assert torch.isfinite(z_s.grad).all()
        z_s.grad = None
    # None labels mean the same thing
    out = HintonKD()(z_s, logits(34), None)
    assert out["hard"].item() == 0.0


def test_kd_soft_term_averages_over_all_samples_labelled_or_not():
    z_s, z_t = logits(35), logits(36)
    y = torch.tensor([0, -1, -1, -1, 1, -1, -1, -1])
    soft = HintonKD(rho=2.0)(z_s, z_t, y)["soft"]
    torch.testing.assert_close(soft, 0.9 * 4.0 * ref_kl(ref_softmax(z_t, 2.0), ref_softmax(z_s, 2.0)))


# ----------------------------------------------------------------- gradients


@pytest.mark.parametrize("method", ["kd", "logit_matching", "dkd"])
def test_no_gradient_reaches_the_teacher_logits(method):
    z_s = logits(40).float().requires_grad_()
    z_t = logits(41).float().requires_grad_()
    y = torch.tensor([0, -1, 2, 3, -1, 5, 6, 1])
    out = build_logit_loss(method, alpha=0.5) if method != "dkd" else build_logit_loss("dkd")
    terms = out(z_s, z_t, y, epoch=10)
    terms["total"].backward()
    assert z_t.grad is None or torch.count_nonzero(z_t.grad) == 0
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0


def test_kd_gradient_points_the_student_towards_the_teacher():
    z_t = logits(42)
    z_s = logits(43).requires_grad_()
    loss = HintonKD(alpha=0.0, beta=1.0, rho=2.0)
    before = loss(z_s, z_t, None)["total"]
    before.backward()
    with torch.no_grad():
        stepped = z_s - 0.1 * z_s.grad
    assert loss(stepped, z_t, None)["total"] < before


# ----------------------------------------------------------------- logit matching


def test_logit_matching_matches_reference():
    z_s, z_t, y = logits(50), logits(51), labels(52)
    out = LogitMatching(alpha=0.25, beta=2.0)(z_s, z_t, y)
    mse_ref = ((z_s - z_t) ** 2).sum() / z_s.numel()
    torch.testing.assert_close(out["logit_mse"], 2.0 * mse_ref)
    torch.testing.assert_close(out["hard"], 0.25 * ref_hard(z_s, y))
    assert torch.equal(out["hard"] + out["logit_mse"], out["total"])
    assert set(out) == {"hard", "logit_mse", "total"}
    assert LogitMatching()(z_s, z_t, y)["hard"].item() == 0.0  # alpha defaults to 0


def test_high_temperature_kd_gradient_approaches_logit_matching():
    """Hinton's limit: with zero-mean logits, KD's gradient at large ρ (ρ² on) is (z_s − z_t)/(N·C),
    half the gradient of the mean squared error."""
    z_t = logits(53)
    z_t = z_t - z_t.mean(1, keepdim=True)
    z_s = logits(54)
    z_s = (z_s - z_s.mean(1, keepdim=True)).requires_grad_()
    HintonKD(alpha=0.0, beta=1.0, rho=2000.0)(z_s, z_t, None)["total"].backward()
    kd_grad = z_s.grad.clone()
    z_s.grad = None
    LogitMatching(alpha=0.0, beta=1.0)(z_s, z_t, None)["total"].backward()
    mse_grad = z_s.grad
    # KD: (z_s - z_t) / (N*C) ; MSE mean: 2 (z_s - z_t) / (N*C)
    torch.testing.assert_close(kd_grad, mse_grad / 2, rtol=1e-2, atol=1e-3 * mse_grad.abs().max().item())


# ----------------------------------------------------------------- DKD


def ref_dkd(z_s, z_t, target, alpha, beta, t):
    """mdistiller's formulation: probabilities, a 0/1 mask, −1000 on the target logit for NCKD."""
    gt = torch.zeros_like(z_s).scatter_(1, target.unsqueeze(1), 1.0)
    other = 1.0 - gt
    p_s, p_t = ref_softmax(z_s, t), ref_softmax(z_t, t)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * other).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * other).sum(1)], dim=1)
    tckd = (b_t * (torch.log(b_t) - torch.log(b_s))).sum() / z_s.shape[0] * t**2
    q_t = ref_softmax(z_t / t - 1000.0 * gt, 1.0)
    q_s = ref_softmax(z_s / t - 1000.0 * gt, 1.0)
    keep = other.bool()
    nckd = (q_t[keep] * (torch.log(q_t[keep]) - torch.log(q_s[keep]))).sum() / z_s.shape[0] * t**2
    return alpha * tckd, beta * nckd


@pytest.mark.parametrize("epoch,factor", [(0, 0.0), (5, 0.25), (20, 1.0), (100, 1.0)])
def test_dkd_matches_reference_with_linear_warmup(epoch, factor):
    z_s, z_t, y = logits(60), logits(61), labels(62)
    out = DKD(alpha=1.0, beta=8.0, rho=4.0, ce_weight=1.0, warmup_epochs=20)(z_s, z_t, y, epoch=epoch)
    tckd, nckd = ref_dkd(z_s, z_t, y, 1.0, 8.0, 4.0)
    torch.testing.assert_close(out["tckd"], factor * tckd)
    torch.testing.assert_close(out["nckd"], factor * nckd)
    torch.testing.assert_close(out["hard"], ref_hard(z_s, y))
    assert torch.equal(out["hard"] + out["tckd"] + out["nckd"], out["total"])
    assert set(out) == {"hard", "tckd", "nckd", "total"}
    if factor:
        assert tckd.item() > 0 and nckd.item() > 0


def test_dkd_other_weights_and_no_warmup():
    z_s, z_t, y = logits(63), logits(64), labels(65)
    out = DKD(alpha=0.5, beta=2.0, rho=2.0, ce_weight=0.3, warmup_epochs=0)(z_s, z_t, y, epoch=0)
    tckd, nckd = ref_dkd(z_s, z_t, y, 0.5, 2.0, 2.0)
    torch.testing.assert_close(out["tckd"], tckd)
    torch.testing.assert_close(out["nckd"], nckd)
    torch.testing.assert_close(out["hard"], 0.3 * ref_hard(z_s, y))


def test_dkd_uses_teacher_argmax_for_unlabelled_samples():
    z_s, z_t = logits(66), logits(67)
    y = labels(68)
    y[[1, 4, 6]] = -1
    out = DKD(warmup_epochs=1)(z_s, z_t, y, epoch=1)
    filled = torch.where(y == -1, z_t.argmax(1), y)
    tckd, nckd = ref_dkd(z_s, z_t, filled, 1.0, 8.0, 4.0)
    torch.testing.assert_close(out["tckd"], tckd)
    torch.testing.assert_close(out["nckd"], nckd)
    torch.testing.assert_close(out["hard"], ref_hard(z_s, y))


def test_dkd_decomposes_classical_kd():
    """The DKD paper's identity per sample: KL(p_t‖p_s) = TCKD + (1 − p_t[target])·NCKD."""
    z_s, z_t, y = logits(69, n=1), logits(70, n=1), labels(71, n=1)
    rho = 2.0
    out = DKD(alpha=1.0, beta=1.0, rho=rho, warmup_epochs=0)(z_s, z_t, y)
    p_t = ref_softmax(z_t, rho)
    kd = ref_kl(p_t, ref_softmax(z_s, rho)) * rho**2
    torch.testing.assert_close(out["tckd"] + (1.0 - p_t[0, y[0]]) * out["nckd"], kd)


def test_dkd_handles_targets_at_both_ends_of_the_class_range():
    z_s, z_t = logits(72, n=4), logits(73, n=4)
    y = torch.tensor([0, C - 1, 0, C - 1])
    out = DKD(warmup_epochs=0)(z_s, z_t, y)
    tckd, nckd = ref_dkd(z_s, z_t, y, 1.0, 8.0, 4.0)
    torch.testing.assert_close(out["tckd"], tckd)
    torch.testing.assert_close(out["nckd"], nckd)


# ----------------------------------------------------------------- registry and errors


def test_build_logit_loss_builds_each_method_with_params():
    assert {"none", "kd", "logit_matching", "dkd"} <= set(LOGIT_METHODS)  # installed methods may add more
    assert all(isinstance(text, str) and text for text in LOGIT_METHODS.values())
    assert type(build_logit_loss("none")) is CrossEntropyOnly
    kd = build_logit_loss("kd", alpha=0.2, beta=0.8, rho=3.0, soft_loss="ce", rho_squared=False)
    assert isinstance(kd, HintonKD)
    assert (kd.alpha, kd.beta, kd.rho, kd.soft_loss, kd.rho_squared) == (0.2, 0.8, 3.0, "ce", False)
    assert isinstance(build_logit_loss("logit_matching", beta=2.0), LogitMatching)
    dkd = build_logit_loss("dkd", warmup_epochs=5)
    assert isinstance(dkd, DKD) and dkd.warmup_epochs == 5


def test_build_logit_loss_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        build_logit_loss("fitnets")
    message = str(err.value)
    assert "fitnets" in message
    for name in LOGIT_METHODS:
        assert name in message
    assert isinstance(err.value, KDError)


def test_build_logit_loss_unknown_parameter_is_a_kd_error():
    with pytest.raises(KDError, match="temperature"):
        build_logit_loss("kd", temperature=4.0)


def test_teacher_is_required_except_for_cross_entropy_only():
    z_s, y = logits(80), labels(81)
    assert set(CrossEntropyOnly()(z_s, None, y)) == {"hard", "total"}
    for loss in (HintonKD(), LogitMatching(), DKD()):
        with pytest.raises(KDError, match="teacher"):
            loss(z_s, None, y)


def test_mismatched_shapes_are_kd_errors():
    with pytest.raises(KDError, match="same shape"):
        HintonKD()(logits(82), logits(83, c=C + 1), labels(84))
    with pytest.raises(KDError, match="Labels"):
        HintonKD()(logits(82), logits(83), labels(84, n=N - 1))


def test_half_precision_logits_give_float32_terms():
    z_s, z_t, y = logits(90).float(), logits(91).float(), labels(92)
    full = HintonKD()(z_s, z_t, y)
    half = HintonKD()(z_s.bfloat16(), z_t.bfloat16(), y)
    assert all(v.dtype == torch.float32 for v in half.values())
    torch.testing.assert_close(half["total"], full["total"], rtol=5e-2, atol=1e-2)
