"""ReviewKD: HCL and the deep-to-shallow attention fusion against expressions written from Chen et al. (2021)."""
import pytest
import torch
import torch.nn.functional as F

from kdcore.errors import IncompatibleLayersError
from kdcore.methods import get_method
from kdcore.methods.reviewkd import (
    ReviewKDLoss,
    hierarchical_context_loss,
    warmup_factor,
)


def mse(a, b):
    return ((a - b) ** 2).sum() / a.numel()


def reference_hcl(o, t):
    """Levels smaller than the map apply, weights 1/2, 1/4, 1/8 in turn (8×8: all three, total 15/8)."""
    h = o.shape[2]
    terms, weights = [mse(o, t)], [1.0]
    for level in (4, 2, 1):
        if level < h:
            k = h // level  # these sizes divide evenly, so adaptive pooling is plain block averaging
            terms.append(mse(F.avg_pool2d(o, k), F.avg_pool2d(t, k)))
            weights.append(weights[-1] / 2)
    return sum(w * x for w, x in zip(weights, terms)) / sum(weights)


def test_hcl_weights_the_pyramid_levels_by_halves():
    o = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    small_o, small_t = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(2, 3, 2, 2, dtype=torch.float64)
    got = hierarchical_context_loss([o, small_o], [t, small_t])
    want = reference_hcl(o, t) + (mse(small_o, small_t) + 0.5 * mse(small_o.mean((2, 3)), small_t.mean((2, 3)))) / 1.5
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    (g1,) = torch.autograd.grad(got, o)
    (g2,) = torch.autograd.grad(want, o)
    assert torch.allclose(g1, g2, rtol=1e-10)


def reference_review(loss_fn, s_feats, t_feats):
    """The fusion spelled out for two stages, using the module's own convolutions as functions."""
    deep, shallow = loss_fn.abfs[1], loss_fn.abfs[0]
    x_deep = deep.reduce(s_feats[1])  # deepest: no fusion; teacher size equals the student's here
    out_deep = deep.out(x_deep)
    x = shallow.reduce(s_feats[0])
    r = x_deep.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest 2× upsampling
    a = shallow.attention(torch.cat([x, r], 1))
    fused = a[:, 0:1] * x + a[:, 1:2] * r
    out_shallow = shallow.out(fused)
    return reference_hcl(out_shallow, t_feats[0]) + reference_hcl(out_deep, t_feats[1])


def test_reviewkd_matches_the_spelled_out_fusion_values_and_gradients():
    torch.manual_seed(9)
    loss_fn = ReviewKDLoss(student_channels=[2, 3], teacher_channels=[4, 5]).double()
    s = [torch.randn(3, 2, 8, 8, dtype=torch.float64, requires_grad=True),
         torch.randn(3, 3, 4, 4, dtype=torch.float64, requires_grad=True)]
    t = [torch.randn(3, 4, 8, 8, dtype=torch.float64, requires_grad=True),
         torch.randn(3, 5, 4, 4, dtype=torch.float64, requires_grad=True)]
    loss = loss_fn(s, t)
    ref = reference_review(loss_fn, s, [f.detach() for f in t])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-9)
    params = s + [loss_fn.abfs[0].attention[0].weight, loss_fn.abfs[1].reduce[0].weight]
    grads = torch.autograd.grad(loss, params)
    ref_grads = torch.autograd.grad(ref, params)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-12)
        assert a.abs().sum() > 0  # the shallow stage's loss reaches the deep stage through the fusion


def test_reviewkd_no_gradient_to_teacher_pooled_vector_stage_and_warmup():
    loss_fn = ReviewKDLoss([2, 3, 6], [4, 4, 8])
    s = [torch.randn(2, 2, 8, 8, requires_grad=True), torch.randn(2, 3, 4, 4, requires_grad=True),
         torch.randn(2, 6, requires_grad=True)]  # the pooled penultimate vector as the deepest stage
    t = [torch.randn(2, 4, 4, 4, requires_grad=True), torch.randn(2, 4, 2, 2, requires_grad=True),
         torch.randn(2, 8, requires_grad=True)]
    loss_fn(s, t).backward()
    assert all(f.grad is None for f in t) and all(f.grad is not None for f in s)
    assert loss_fn.abfs[0].reduce[0].out_channels == 6  # mid channels = min(512, deepest student width)
    assert [warmup_factor(e, 20) for e in (0, 10, 20, 40)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(IncompatibleLayersError, match="one to one"):
        ReviewKDLoss([2, 3], [4])


def test_reviewkd_is_registered_with_the_authors_defaults():
    record = get_method("reviewkd")
    assert record.family == "feature" and record.paper and record.description
    defaults = record.params().model_dump()
    assert defaults == {"method": "reviewkd", **dict(weight=1.0, warmup_epochs=20, include_embedding=True,
                                                     teacher_layers=[], student_layers=[])}


def test_reviewkd_reads_the_teachers_pre_relu_stages_and_the_students_stage_outputs():
    from kdcore.methods import EMBEDDING, BuildContext, get_method
    from kdcore.models.registry import build_model

    teacher, student = build_model("cnn_small", 10, 1, 8), build_model("lenet5_half", 10, 1, 8)
    ctx = BuildContext(student, teacher, (1, 8, 8), 10, 100)
    loss = get_method("reviewkd").build(get_method("reviewkd").params(), ctx)
    assert loss.pairs == [("stage1.preact", "pool1"), ("stage2.preact", "pool"), (EMBEDDING, EMBEDDING)]
