"""Feature losses, transforms, pair checks and presets against reference expressions written here."""

import math

import pytest
import torch
from torch import nn

from kdcore.errors import IncompatibleLayersError, KDError, UnknownNameError
from kdcore.losses import (
    DISTANCES,
    PRESETS,
    STUDENT_TRANSFORMS,
    TEACHER_TRANSFORMS,
    FeatureKD,
    FeaturePreset,
    attention_map,
    build_feature_kd,
    check_pair,
    get_preset,
    margins_from_bn,
)


def feats(seed: int, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


# ----------------------------------------------------------------- reference expressions


def ref_attention(f: torch.Tensor) -> torch.Tensor:
    a = (f * f).sum(dim=1) / f.shape[1]
    a = a.reshape(f.shape[0], -1)
    return a / torch.sqrt((a * a).sum(dim=1, keepdim=True))


def ref_block_mean(f: torch.Tensor, k: int) -> torch.Tensor:
    """Average-pool by an integer factor k with reshapes (what adaptive pooling does for exact multiples)."""
    n, c, h, w = f.shape
    return f.reshape(n, c, h // k, k, w // k, k).mean(dim=(3, 5))


def ref_nst(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Squared MMD with kernel (xᵀy)², written with explicit loops over channel pairs."""

    def unit_rows(f):
        rows = f.reshape(f.shape[0], f.shape[1], -1)
        return rows / torch.sqrt((rows * rows).sum(dim=2, keepdim=True))

    t, s = unit_rows(t), unit_rows(s)

    def mean_kernel(a, b):
        values = [
            (a[n, i] * b[n, j]).sum() ** 2
            for n in range(a.shape[0])
            for i in range(a.shape[1])
            for j in range(b.shape[1])
        ]
        return torch.stack(values).mean()

    return mean_kernel(t, t) + mean_kernel(s, s) - 2 * mean_kernel(s, t)


def ref_feature_kl(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    n = t.shape[0]
    pt = torch.exp(t.reshape(n, -1))
    pt = pt / pt.sum(dim=1, keepdim=True)
    ps = torch.exp(s.reshape(n, -1))
    ps = ps / ps.sum(dim=1, keepdim=True)
    return (pt * (torch.log(pt) - torch.log(ps))).sum() / n


def ref_partial_l2(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    total = torch.zeros((), dtype=s.dtype)
    for tv, sv in zip(t.flatten().tolist(), s.flatten().tolist()):
        if sv > tv or tv > 0:
            total = total + (sv - tv) ** 2
    return total / t.shape[0]


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def normal_pdf(x: float) -> float:
    return math.exp(-x * x / 2.0) / math.sqrt(2.0 * math.pi)


def ref_margin(gamma: float, beta: float) -> float:
    s, m = abs(gamma), beta
    if normal_cdf(-m / s) > 0.001:
        return m - s * normal_pdf(m / s) / normal_cdf(-m / s)
    return -3.0 * s


def teacher_bn(channels: int, seed: int = 0) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn


# ----------------------------------------------------------------- attention map and transforms


def test_attention_map_matches_reference_and_is_unit_norm():
    f = feats(0, 3, 5, 4, 6)
    a = attention_map(f)
    assert a.shape == (3, 24)
    torch.testing.assert_close(a, ref_attention(f))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))


def test_attention_map_power_p():
    f = feats(1, 2, 3, 4, 4)
    a4 = (f**4).mean(1).reshape(2, -1)
    torch.testing.assert_close(attention_map(f, p=4), a4 / a4.norm(dim=1, keepdim=True))


def test_margins_from_bn_match_the_normal_formula():
    bn = nn.BatchNorm2d(6)
    gammas = [1.0, -2.0, 0.5, 1.0, 3.0, 0.7]
    betas = [0.0, 1.0, -1.5, 4.0, 2.0, -0.2]  # channel 3 has Φ(−4) < 0.001: the −3s branch
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gammas))
        bn.bias.copy_(torch.tensor(betas))
    margins = margins_from_bn(bn)
    expected = torch.tensor([ref_margin(g, b) for g, b in zip(gammas, betas)])
    torch.testing.assert_close(margins, expected, rtol=1e-5, atol=1e-6)
    assert margins[3].item() == pytest.approx(-3.0)
    assert margins[0].item() == pytest.approx(-math.sqrt(2 / math.pi), rel=1e-6)  # E[x | x<0] of N(0,1)
    assert torch.all(margins < 0)  # an expectation of negative responses is negative
    assert not margins.requires_grad


def test_margins_from_bn_match_scipy_when_present():
    stats = pytest.importorskip("scipy.stats")
    bn = teacher_bn(16, seed=3)
    s, m = bn.weight.detach().abs().double(), bn.bias.detach().double()
    cdf = torch.tensor(stats.norm.cdf((-m / s).numpy()))
    pdf = torch.tensor(stats.norm.pdf((m / s).numpy()))
    expected = torch.where(cdf > 0.001, m - s * pdf / cdf, -3 * s).float()
    torch.testing.assert_close(margins_from_bn(bn), expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- each distance through FeatureKD


def test_l2_identity_is_mean_squared_error():
    t, s = feats(10, 4, 8, 5, 5), feats(11, 4, 8, 5, 5)
    loss = FeatureKD((8, 5, 5), (8, 5, 5), distance="l2", weight=3.0)
    torch.testing.assert_close(loss(t, s), 3.0 * ((s - t) ** 2).sum() / s.numel())
    assert loss.check.transform == "identity"


def test_l1_identity_is_mean_absolute_error():
    t, s = feats(12, 4, 8, 5, 5), feats(13, 4, 8, 5, 5)
    loss = FeatureKD((8, 5, 5), (8, 5, 5), distance="l1")
    torch.testing.assert_close(loss(t, s), (s - t).abs().sum() / s.numel())


def test_l2_on_vectors():
    t, s = feats(14, 6, 20), feats(15, 6, 20)
    torch.testing.assert_close(FeatureKD((20,), (20,))(t, s), ((s - t) ** 2).mean())


def test_kl_distance_matches_reference():
    t, s = feats(16, 3, 4, 3, 3), feats(17, 3, 4, 3, 3)
    loss = FeatureKD((4, 3, 3), (4, 3, 3), distance="kl", weight=2.0)
    torch.testing.assert_close(loss(t, s), 2.0 * ref_feature_kl(t, s))
    assert loss(t, t.clone()).abs().item() < 1e-6


def test_mmd_matches_loop_reference_with_different_channel_counts():
    t, s = feats(18, 2, 5, 3, 3), feats(19, 2, 3, 3, 3)
    loss = FeatureKD((5, 3, 3), (3, 3, 3), distance="mmd")
    assert loss.check.ok and loss.check.transform == "identity"
    torch.testing.assert_close(loss(t, s), ref_nst(t, s))


def test_mmd_properties():
    t = feats(20, 2, 4, 3, 3)
    loss = FeatureKD((4, 3, 3), (4, 3, 3), distance="mmd")
    assert abs(loss(t, t.clone()).item()) < 1e-6
    # channels are a set of samples, each normalised: reordering and rescaling channels changes nothing
    shuffled = t[:, [2, 0, 3, 1]] * torch.tensor([0.5, 3.0, 1.0, 7.0]).view(1, 4, 1, 1)
    assert abs(loss(t, shuffled).item()) < 1e-5
    assert loss(t, feats(21, 2, 4, 3, 3)).item() > 1e-3


def test_mmd_pools_the_larger_map_to_the_smaller():
    t, s = feats(22, 2, 3, 4, 4), feats(23, 2, 2, 8, 8)
    loss = FeatureKD((3, 4, 4), (2, 8, 8), distance="mmd")
    assert loss.check.transform == "pool"
    torch.testing.assert_close(loss(t, s), ref_nst(t, ref_block_mean(s, 2)))
    # and the other way round: the teacher map is the larger one
    loss2 = FeatureKD((2, 8, 8), (3, 4, 4), distance="mmd")
    torch.testing.assert_close(loss2(s, t), ref_nst(ref_block_mean(s, 2), t))


def test_partial_l2_mask_on_handmade_values():
    # pairs (t, s): counted when s > t or t > 0
    t = torch.tensor([[-1.0, -1.0, 0.5, 0.5, -2.0, 0.0]])
    s = torch.tensor([[-3.0, 0.0, 0.0, 1.0, -2.0, -1.0]])
    # -1,-3: skip | -1,0: 1 | .5,0: .25 | .5,1: .25 | -2,-2: skip (equal, t<=0) | 0,-1: skip (t not > 0)
    loss = FeatureKD((6,), (6,), distance="partial_l2")
    assert loss(t, s).item() == pytest.approx(1.5)
    batch = torch.cat([t, t]), torch.cat([s, s])
    assert loss(*batch).item() == pytest.approx(1.5)  # summed, then divided by the batch size


def test_partial_l2_matches_loop_reference():
    t, s = feats(24, 3, 4, 3, 3), feats(25, 3, 4, 3, 3)
    loss = FeatureKD((4, 3, 3), (4, 3, 3), distance="partial_l2")
    torch.testing.assert_close(loss(t, s), ref_partial_l2(t, s))


def test_every_distance_is_covered():
    assert set(DISTANCES) == {"l1", "l2", "mmd", "kl", "partial_l2"}
    assert set(TEACHER_TRANSFORMS) == {"identity", "attention", "margin_relu"}
    assert set(STUDENT_TRANSFORMS) == {"identity", "regressor", "attention"}


def test_weight_scales_the_loss_linearly():
    t, s = feats(26, 2, 4, 3, 3), feats(27, 2, 4, 3, 3)
    for distance in DISTANCES:
        one = FeatureKD((4, 3, 3), (4, 3, 3), distance=distance)(t, s)
        seven = FeatureKD((4, 3, 3), (4, 3, 3), distance=distance, weight=7.0)(t, s)
        torch.testing.assert_close(seven, 7.0 * one)


# ----------------------------------------------------------------- each transform through FeatureKD


def test_attention_transfer_same_size():
    t, s = feats(30, 2, 16, 4, 4), feats(31, 2, 8, 4, 4)
    loss = FeatureKD((16, 4, 4), (8, 4, 4), "attention", "attention", "l2", weight=1000.0)
    assert loss.check.transform == "attention"
    torch.testing.assert_close(loss(t, s), 1000.0 * (ref_attention(s) - ref_attention(t)).pow(2).mean())


def test_attention_transfer_pools_the_larger_map():
    t, s = feats(32, 2, 16, 4, 4), feats(33, 2, 8, 8, 8)
    loss = FeatureKD((16, 4, 4), (8, 8, 8), "attention", "attention", "l2")
    assert loss.check.transform == "attention+pool"
    expected = (ref_attention(ref_block_mean(s, 2)) - ref_attention(t)).pow(2).mean()
    torch.testing.assert_close(loss(t, s), expected)
    swapped = FeatureKD((8, 8, 8), (16, 4, 4), "attention", "attention", "l2")
    torch.testing.assert_close(swapped(s, t), (ref_attention(t) - ref_attention(ref_block_mean(s, 2))).pow(2).mean())


def test_margin_relu_and_partial_l2_follow_ofd():
    bn = teacher_bn(4, seed=5)
    t, s = feats(34, 3, 4, 3, 3), feats(35, 3, 2, 3, 3)
    loss = FeatureKD((4, 3, 3), (2, 3, 3), "margin_relu", "regressor", "partial_l2", weight=1e-3, teacher_bn=bn)
    margin = torch.tensor([ref_margin(g, b) for g, b in zip(bn.weight.tolist(), bn.bias.tolist())])
    target = torch.maximum(t, margin.view(1, 4, 1, 1))
    guided = loss.student_transform(s)
    torch.testing.assert_close(loss(t, s), 1e-3 * ref_partial_l2(target, guided.detach()))
    # the teacher transform really clips at the margins
    clipped = loss.teacher_transform(t)
    assert torch.all(clipped >= margin.view(1, 4, 1, 1) - 1e-6)
    assert torch.equal(clipped > margin.view(1, 4, 1, 1), t > margin.view(1, 4, 1, 1))


def test_margin_relu_requires_a_matching_teacher_bn():
    with pytest.raises(IncompatibleLayersError, match="BatchNorm"):
        FeatureKD((4, 3, 3), (4, 3, 3), "margin_relu", "identity", "partial_l2")
    with pytest.raises(IncompatibleLayersError, match="8 channels"):
        FeatureKD((4, 3, 3), (4, 3, 3), "margin_relu", "identity", "partial_l2", teacher_bn=teacher_bn(8))


def test_regressor_maps_student_channels_to_teacher_and_is_trainable():
    loss = FeatureKD((8, 4, 4), (3, 4, 4), phi_s="regressor", regressor_relu=True)
    assert loss.check.transform == "regressor"
    kinds = [type(m) for m in loss.student_transform.modules()]
    assert nn.Conv2d in kinds and nn.BatchNorm2d in kinds and nn.ReLU in kinds
    conv = next(m for m in loss.student_transform.modules() if isinstance(m, nn.Conv2d))
    assert conv.kernel_size == (1, 1) and (conv.in_channels, conv.out_channels) == (3, 8)
    assert loss.student_transform(feats(36, 2, 3, 4, 4)).shape == (2, 8, 4, 4)
    assert all(p.requires_grad for p in loss.parameters()) and len(list(loss.parameters())) > 0
    # explicit regressor even when channels already match (FitNets always has one)
    same = FeatureKD((8, 4, 4), (8, 4, 4), phi_s="regressor")
    assert same.check.transform == "regressor" and len(list(same.parameters())) > 0


def test_vector_regressor_is_linear_plus_batchnorm():
    loss = FeatureKD((20,), (12,), phi_s="regressor")
    kinds = [type(m) for m in loss.student_transform.modules()]
    assert nn.Linear in kinds and nn.BatchNorm1d in kinds
    t, s = feats(37, 5, 20), feats(38, 5, 12)
    guided = loss.student_transform(s)
    assert guided.shape == (5, 20)
    torch.testing.assert_close(loss(t, s), ((guided - t) ** 2).mean())


def test_resize_pools_a_larger_student_and_upsamples_a_smaller_one():
    t = feats(39, 2, 4, 4, 4)
    s_big = feats(40, 2, 4, 8, 8)
    down = FeatureKD((4, 4, 4), (4, 8, 8))
    assert down.check.transform == "resize"
    torch.testing.assert_close(down(t, s_big), ((ref_block_mean(s_big, 2) - t) ** 2).mean())
    s_small = feats(41, 2, 4, 2, 2)
    up = FeatureKD((4, 4, 4), (4, 2, 2))
    assert up.student_transform(s_small).shape == (2, 4, 4, 4)
    assert torch.isfinite(up(t, s_small))
    both = FeatureKD((8, 4, 4), (4, 8, 8), phi_s="regressor")
    assert both.check.transform == "regressor+resize"
    assert both.student_transform(s_big).shape == (2, 8, 4, 4)


# ----------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "phi_t,phi_s,distance,t_shape,s_shape",
    [
        ("identity", "regressor", "l2", (8, 4, 4), (4, 8, 8)),
        ("identity", "identity", "l1", (4, 4, 4), (4, 4, 4)),
        ("attention", "attention", "l2", (8, 4, 4), (4, 8, 8)),
        ("identity", "identity", "mmd", (6, 4, 4), (3, 4, 4)),
        ("identity", "regressor", "kl", (8,), (5,)),
        ("margin_relu", "regressor", "partial_l2", (8, 4, 4), (4, 4, 4)),
    ],
)
def test_gradients_reach_student_and_regressor_but_never_the_teacher(phi_t, phi_s, distance, t_shape, s_shape):
    bn = teacher_bn(t_shape[0], seed=7) if phi_t == "margin_relu" else None
    loss = FeatureKD(t_shape, s_shape, phi_t, phi_s, distance, teacher_bn=bn)
    f_t = feats(42, 3, *t_shape).requires_grad_()
    f_s = feats(43, 3, *s_shape).requires_grad_()
    out = loss(f_t, f_s)
    assert out.dim() == 0
    out.backward()
    assert f_t.grad is None or torch.count_nonzero(f_t.grad) == 0
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    for name, p in loss.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # nothing trainable on the teacher side
    assert list(loss.teacher_transform.parameters()) == []


def test_margins_are_a_buffer_not_a_parameter():
    loss = FeatureKD((4, 3, 3), (4, 3, 3), "margin_relu", "identity", "partial_l2", teacher_bn=teacher_bn(4))
    assert list(loss.parameters()) == []
    assert any(name.endswith("margin") for name in loss.state_dict())


# ----------------------------------------------------------------- check_pair


def test_flat_vector_against_map_is_not_ok():
    check = check_pair((512,), (64, 8, 8))
    assert not check.ok
    assert "vector (512)" in check.reason and "map (64×8×8)" in check.reason
    assert check.reason.count(".") == 1  # one sentence
    with pytest.raises(IncompatibleLayersError) as err:
        FeatureKD((512,), (64, 8, 8), phi_s="regressor")
    assert str(err.value) == check_pair((512,), (64, 8, 8), phi_s="regressor").reason


def test_channel_mismatch_needs_a_regressor():
    check = check_pair((64, 8, 8), (32, 8, 8), phi_s="regressor")
    assert check.ok and check.transform == "regressor"
    plain = check_pair((64, 8, 8), (32, 8, 8))
    assert not plain.ok and plain.transform == "regressor"
    assert "64" in plain.reason and "32" in plain.reason and "regressor" in plain.reason
    with pytest.raises(IncompatibleLayersError, match="regressor"):
        FeatureKD((64, 8, 8), (32, 8, 8))


def test_vector_width_mismatch_needs_a_regressor():
    assert not check_pair((512,), (256,)).ok
    check = check_pair((512,), (256,), phi_s="regressor")
    assert check.ok and check.transform == "regressor" and "Linear" in check.reason


def test_spatial_mismatch_needs_a_resize():
    check = check_pair((64, 8, 8), (64, 16, 16))
    assert check.ok and check.transform == "resize" and "16×16" in check.reason
    both = check_pair((64, 8, 8), (32, 16, 16), phi_s="regressor")
    assert both.ok and both.transform == "regressor+resize"
    assert not check_pair((64, 8, 8), (32, 16, 16)).ok


def test_same_shape_is_identity():
    check = check_pair((64, 8, 8), (64, 8, 8))
    assert check.ok and check.transform == "identity"


def test_attention_ignores_channels_and_needs_both_sides():
    check = check_pair((256, 8, 8), (64, 16, 16), "attention", "attention")
    assert check.ok and check.transform == "attention+pool"
    assert check_pair((256, 8, 8), (64, 8, 8), "attention", "attention").transform == "attention"
    one_sided = check_pair((64, 8, 8), (64, 8, 8), "attention", "identity")
    assert not one_sided.ok and "both" in one_sided.reason
    assert not check_pair((64,), (64,), "attention", "attention").ok
    assert not check_pair((64, 8, 8), (64, 8, 8), "attention", "attention", "partial_l2").ok


def test_mmd_accepts_any_channels_but_needs_maps():
    assert check_pair((256, 8, 8), (64, 8, 8), distance="mmd").ok
    assert check_pair((256, 8, 8), (64, 4, 4), distance="mmd").transform == "pool"
    vectors = check_pair((256,), (256,), distance="mmd")
    assert not vectors.ok and "feature maps" in vectors.reason


def test_unsupported_ranks_are_not_ok():
    check = check_pair((8, 16), (8, 16))
    assert not check.ok and "neither" in check.reason


def test_unknown_names_raise_unknown_name_error():
    with pytest.raises(UnknownNameError, match="attention"):
        check_pair((8, 4, 4), (8, 4, 4), phi_t="gram")
    with pytest.raises(UnknownNameError, match="regressor"):
        check_pair((8, 4, 4), (8, 4, 4), phi_s="margin_relu")
    with pytest.raises(UnknownNameError, match="partial_l2"):
        FeatureKD((8, 4, 4), (8, 4, 4), distance="cosine")


def test_forward_rejects_features_of_the_wrong_shape():
    loss = FeatureKD((8, 4, 4), (8, 4, 4))
    with pytest.raises(KDError, match="teacher"):
        loss(feats(50, 2, 8, 5, 5), feats(51, 2, 8, 4, 4))
    with pytest.raises(KDError, match="batch"):
        loss(feats(50, 3, 8, 4, 4), feats(51, 2, 8, 4, 4))


# ----------------------------------------------------------------- presets


def test_preset_definitions_match_references():
    assert set(PRESETS) == {"fitnets", "at", "nst", "ofd", "internal_kl"}
    combos = {name: (p.phi_t, p.phi_s, p.distance, p.weight) for name, p in PRESETS.items()}
    assert combos["fitnets"] == ("identity", "regressor", "l2", 100.0) and PRESETS["fitnets"].regressor_relu
    assert combos["at"] == ("attention", "attention", "l2", 1000.0)
    assert combos["nst"] == ("identity", "identity", "mmd", 50.0)
    assert combos["ofd"] == ("margin_relu", "regressor", "partial_l2", 1e-3)
    assert PRESETS["ofd"].teacher_point == "pre_relu"
    assert combos["internal_kl"][2:] == ("kl", 1.0)
    for name, preset in PRESETS.items():
        assert isinstance(preset, FeaturePreset) and preset.name == name
        assert preset.title and preset.description and preset.reference


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("t_shape,s_shape", [((16, 4, 4), (8, 8, 8)), ((8, 4, 4), (8, 4, 4))])
def test_every_preset_builds_and_runs(name, t_shape, s_shape):
    bn = teacher_bn(t_shape[0]) if PRESETS[name].phi_t == "margin_relu" else None
    loss = build_feature_kd(name, t_shape, s_shape, teacher_bn=bn)
    f_s = feats(60, 4, *s_shape).requires_grad_()
    out = loss(feats(61, 4, *t_shape), f_s)
    assert out.dim() == 0 and torch.isfinite(out)
    out.backward()
    assert f_s.grad.abs().sum() > 0


def test_at_preset_equals_the_published_expression():
    t, s = feats(62, 2, 16, 4, 4), feats(63, 2, 8, 4, 4)
    loss = build_feature_kd("at", (16, 4, 4), (8, 4, 4))
    torch.testing.assert_close(loss(t, s), 1000.0 * (ref_attention(s) - ref_attention(t)).pow(2).mean())


def test_internal_kl_adds_a_regressor_only_when_widths_differ():
    assert list(build_feature_kd("internal_kl", (32,), (32,)).parameters()) == []
    wide = build_feature_kd("internal_kl", (32,), (16,))
    assert wide.phi_s == "regressor" and len(list(wide.parameters())) > 0
    # a preset that does not allow the fallback still fails loudly
    with pytest.raises(IncompatibleLayersError):
        build_feature_kd("nst", (32,), (16,))


def test_preset_weight_override():
    t, s = feats(64, 2, 8, 4, 4), feats(65, 2, 4, 4, 4)
    default = build_feature_kd("nst", (8, 4, 4), (4, 4, 4))(t, s)
    override = build_feature_kd(get_preset("nst"), (8, 4, 4), (4, 4, 4), weight=1.0)(t, s)
    torch.testing.assert_close(default, 50.0 * override)


def test_get_preset_unknown_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        get_preset("crd")
    for name in PRESETS:
        assert name in str(err.value)
    assert get_preset("fitnets") is PRESETS["fitnets"]


def test_half_precision_features_are_compared_in_float32():
    t, s = feats(70, 2, 6, 4, 4), feats(71, 2, 3, 4, 4)
    loss = FeatureKD((6, 4, 4), (3, 4, 4), distance="mmd")
    full = loss(t, s)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = loss(t.bfloat16(), s.bfloat16())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=5e-2, atol=1e-3)
