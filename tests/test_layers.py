"""Layer tooling: listing with shapes, feature hooks, pre-ReLU points, pair checks and the
`layers` / `models` commands."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from kdcore.cli import main
from kdcore.errors import IncompatibleLayersError, KDError, UnknownNameError
from kdcore.models import build_model
from kdcore.models.layers import (
    FeatureHooks,
    LayerInfo,
    PreReluPoint,
    check_layer_pair,
    classifier_path,
    hint_candidates,
    list_layers,
    penultimate_path,
    pre_relu_points,
)

CIFAR = (3, 32, 32)


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_list_layers_on_a_zoo_model():
    model = build_model("resnet8x4", 100)
    model.train()
    model.layer2.eval()  # a submodule's own mode must survive the dry run
    layers = {info.path: info for info in list_layers(model, CIFAR)}
    assert "" not in layers
    assert layers["layer3"] == LayerInfo("layer3", "Sequential", (256, 8, 8), 0, 1)
    assert layers["conv1"].shape == (32, 32, 32) and layers["conv1"].params == 3 * 32 * 9
    assert layers["layer1.0.bn2"].params == 2 * 64 and layers["layer1.0.bn2"].type == "BatchNorm2d"
    assert layers["layer2"].shape == (128, 16, 16)
    assert layers["flatten"].shape == (256,)
    assert layers["fc"].shape == (100,) and layers["fc"].params == 256 * 100 + 100
    assert model.training and model.layer1.training and not model.layer2.training
    assert _no_hooks_left(model)


def test_list_layers_on_a_torchvision_model():
    model = build_model("tv_resnet18", 10)
    layers = {info.path: info for info in list_layers(model, CIFAR)}
    assert layers["conv1"].shape == (64, 16, 16)
    assert layers["maxpool"].shape == (64, 8, 8)
    assert layers["layer4"].shape == (512, 1, 1)
    assert layers["avgpool"].shape == (512, 1, 1)
    assert layers["fc"].shape == (10,)
    assert layers["layer1.0.relu"].calls == 2  # torchvision reuses one ReLU per block
    assert penultimate_path(model) == "avgpool" and classifier_path(model) == "fc"
    assert pre_relu_points(model) == []


class _TupleOut(nn.Module):
    def forward(self, x):
        return x, x.sum()


class _Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = _TupleOut()
        self.unused = nn.Linear(3, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        first, _ = self.pair(x)
        return self.fc(first)


def test_non_tensor_outputs_and_unused_modules():
    layers = {info.path: info for info in list_layers(_Odd(), (4,))}
    assert layers["pair"].shape == () and layers["pair"].calls == 1
    assert layers["unused"].shape == () and layers["unused"].calls == 0
    assert layers["fc"].shape == (2,)
    assert classifier_path(_Odd()) == "fc"  # no declaration: the last Linear


def test_hint_candidates_keep_features_and_drop_activations():
    model = build_model("resnet20", 10)
    kept = {info.path for info in hint_candidates(model, list_layers(model, CIFAR))}
    assert {"conv1", "bn1", "layer1", "layer2.1", "layer3.2.bn2", "layer3.2.preact", "flatten", "fc"} <= kept
    assert not {"relu", "layer1.0.relu1", "layer1.0.relu2", "pool"} & kept


def test_feature_hooks_collect_outputs_and_remove_cleanly():
    model = build_model("resnet8", 10)
    x = torch.randn(2, *CIFAR)
    with FeatureHooks(model, ["layer1.0.bn2", "fc", "fc"]) as hooks:
        logits = model(x)
        assert set(hooks.outputs) == {"layer1.0.bn2", "fc"}
        assert hooks.outputs["layer1.0.bn2"].shape == (2, 16, 32, 32)
        assert torch.equal(hooks.outputs["fc"], logits)
        assert hooks.outputs["fc"].requires_grad  # the student's features keep their graph
        hooks.clear()
        assert hooks.outputs == {}
    assert _no_hooks_left(model)
    model(x)  # nothing collected any more
    assert hooks.outputs == {}

    hooks = FeatureHooks(model, ["layer2"], detach=True)
    model(x)
    assert not hooks.outputs["layer2"].requires_grad
    hooks.remove()
    hooks.remove()  # twice is harmless
    assert _no_hooks_left(model)


def test_feature_hooks_see_bn_outputs_before_an_inplace_relu():
    """torchvision's ReLU(inplace=True) would overwrite a hooked BN output; hooks switch it off."""
    torch.manual_seed(0)
    model = build_model("tv_resnet18", 10)
    assert model.relu.inplace
    with FeatureHooks(model, ["bn1", "layer1.0.bn1"]) as hooks:
        assert not model.relu.inplace
        model(torch.randn(2, *CIFAR))
        assert (hooks.outputs["bn1"] < 0).any() and (hooks.outputs["layer1.0.bn1"] < 0).any()
        with FeatureHooks(model, ["fc"]):  # nested hooks on the same model share the switch
            pass
        assert not model.relu.inplace
    assert model.relu.inplace and model.layer1[0].relu.inplace


def test_unknown_path_names_close_valid_paths():
    model = build_model("resnet8", 10)
    with pytest.raises(UnknownNameError) as info:
        FeatureHooks(model, ["layer1.0.bn2", "layer1.0.bn3"])
    message = str(info.value)
    assert "'layer1.0.bn3'" in message and "layer1.0.bn2" in message and "\n" not in message
    assert _no_hooks_left(model) and model.relu.inplace is False  # zoo ReLUs are never in place
    with pytest.raises(UnknownNameError, match="--all"):
        FeatureHooks(model, ["qqqqqq"])


def test_pre_relu_points_are_pre_relu():
    torch.manual_seed(0)
    model = build_model("resnet20", 10)
    points = pre_relu_points(model)
    assert len(points) == 9 and sum(p.stage_end for p in points) == 3
    assert PreReluPoint("layer3.2.preact", "layer3.2.bn2", True) in points
    modules = dict(model.named_modules())
    assert all(isinstance(modules[p.bn_path], nn.BatchNorm2d) for p in points)
    relus = [p.path.replace("preact", "relu2") for p in points]
    with FeatureHooks(model, [p.path for p in points] + relus) as hooks:
        model(torch.randn(4, *CIFAR))
    for point, relu in zip(points, relus):
        assert (hooks.outputs[point.path] < 0).any(), point.path
        assert (hooks.outputs[relu] >= 0).all()
        assert torch.equal(hooks.outputs[relu], hooks.outputs[point.path].clamp_min(0))


@pytest.mark.parametrize(
    "name,expected",
    [
        ("wrn_16_2", [("block2.layer.0.preact", "block2.layer.0.bn1"), ("block3.layer.0.preact", "block3.layer.0.bn1"),
                      ("preact", "bn1")]),
        ("vgg8", [(f"block{i}.2", f"block{i}.1") for i in range(5)]),
        ("mobilenetv2", [(f"blocks.{i}.{j}.preact", f"blocks.{i}.{j}.conv.7") for i, j in ((1, 1), (2, 2), (4, 2), (6, 0))]),
        ("cnn_small", [("stage1.preact", "stage1.bn2"), ("stage2.preact", "stage2.bn2")]),
    ],
)
def test_pre_relu_stage_ends_of_each_family(name, expected):
    model = build_model(name, 10)
    modules = dict(model.named_modules())
    stage_ends = [(p.path, p.bn_path) for p in pre_relu_points(model) if p.stage_end]
    assert stage_ends == expected
    assert all(isinstance(modules[bn], nn.BatchNorm2d) for _, bn in stage_ends)


def test_models_without_bn_have_no_pre_relu_points():
    assert pre_relu_points(build_model("mlp_800_800", 10, 1, 28)) == []
    assert pre_relu_points(build_model("lenet5", 10, 1, 28)) == []


def test_check_layer_pair_uses_the_dry_run_shapes():
    teacher, student = build_model("resnet32x4", 100), build_model("resnet8x4", 100)
    same = check_layer_pair(teacher, "layer3", student, "layer3", CIFAR)
    assert same.ok and same.transform == "identity"
    small = build_model("resnet8", 100)
    mismatch = check_layer_pair(teacher, "layer3", small, "layer3", CIFAR)
    assert not mismatch.ok  # 256 vs 64 channels needs a regressor
    fixed = check_layer_pair(teacher, "layer3", small, "layer3", CIFAR, phi_s="regressor")
    assert fixed.ok and "regressor" in fixed.transform
    attention = check_layer_pair(teacher, "layer2", small, "layer3", CIFAR, "attention", "attention")
    assert attention.ok and attention.transform == "attention+pool"
    with pytest.raises(UnknownNameError, match="layer4"):
        check_layer_pair(teacher, "layer4", small, "layer3", CIFAR)
    with pytest.raises(IncompatibleLayersError, match="single tensor"):
        check_layer_pair(_Odd(), "pair", _Odd(), "fc", (4,))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdcore", *args], capture_output=True, text=True, timeout=120)


def test_layers_command_prints_the_hint_table():
    result = _cli("layers", "resnet8x4", "--dataset", "cifar100")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    layer3 = next(line for line in lines if line.split()[0] == "layer3")
    assert "256x8x8" in layer3.split()
    assert any(line.startswith("layer3.0.preact") and "pre-ReLU" in line for line in lines)
    assert not any(line.split()[0] == "layer1.0.relu1" for line in lines[2:-1])
    header = lines[1]
    assert header.split() == ["PATH", "TYPE", "OUTPUT", "PARAMS", "NOTE"]
    # aligned: every row's TYPE column starts where the header's does
    type_col = header.index("TYPE")
    assert all(line[type_col - 2 : type_col] == "  " for line in lines[3:-1])


@pytest.mark.parametrize(
    "args,expected",
    [
        (["layers", "resnet9", "--dataset", "cifar100"], "error: unknown model 'resnet9'; did you mean resnet8"),
        (["layers", "resnet8", "--dataset", "cifar1000"], "error: "),
    ],
)
def test_wrong_names_exit_non_zero_with_one_line(args, expected):
    result = _cli(*args)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(expected)
    assert "cifar1000" in result.stderr or "resnet9" in result.stderr


def test_layers_all_and_models_commands(capsys):
    assert main(["layers", "mlp_64", "--dataset", "digits", "--all"]) == 0
    out = capsys.readouterr().out
    assert "relu1" in out and "penultimate feature" in out and "64" in out
    assert main(["models", "--dataset", "digits", "--family", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "mlp_800_800" in out and "resnet8" not in out
    row = next(line for line in out.splitlines() if line.startswith("mlp_64 "))
    assert "4.81K" in row  # 64·64+64 + 64·10+10 = 4,810 parameters on 8x8 digits
    assert main(["models", "--family", "nope"]) == 2
    assert "unknown model family 'nope'" in capsys.readouterr().err


def test_stage_paths_pick_the_last_layer_of_each_width_and_pair_the_deepest():
    from kdcore.errors import KDError
    from kdcore.models.layers import paired_stages, stage_paths
    from kdcore.models.registry import build_model

    cnn = build_model("cnn_small", 10, 1, 28)
    assert stage_paths(cnn, (1, 28, 28)) == ["stage1", "stage2"]  # the 1×1 pooled output is not a stage
    resnet = build_model("resnet8", 10, 1, 28)
    assert stage_paths(resnet, (1, 28, 28)) == ["layer1", "layer2", "layer3"]
    assert stage_paths(build_model("lenet5", 10, 1, 28), (1, 28, 28)) == ["pool1", "pool"]
    # three teacher stages against two student ones: the deepest two are paired
    assert paired_stages(resnet, cnn, (1, 28, 28)) == (["layer2", "layer3"], ["stage1", "stage2"])
    assert paired_stages(resnet, cnn, (1, 28, 28), ["layer3"], ["stage2"]) == (["layer3"], ["stage2"])
    with pytest.raises(KDError, match="as many teacher stages"):
        paired_stages(resnet, cnn, (1, 28, 28), ["layer2", "layer3"], ["stage2"])
    with pytest.raises(KDError, match=r"the teacher \(MLP\) has no stage with a feature map"):
        paired_stages(build_model("mlp_64", 10, 1, 8), cnn, (1, 8, 8))


# ---- each model at its own input shape (a student may see a downscaled view) --------------------------

def test_pair_layers_list_each_model_at_its_own_input_shape():
    from kdcore.models.listing import input_shapes, pair_layers, student_input_shape

    assert input_shapes((1, 28, 28), {"size": 7}) == {"teacher": (1, 28, 28), "student": (1, 7, 7)}
    assert student_input_shape((3, 32, 32), {"grey": True, "crop": 24}) == (1, 24, 24)
    assert student_input_shape((3, 32, 32)) == (3, 32, 32)
    pair = pair_layers("cnn_small", "cnn_small", 10, (1, 28, 28), {"size": 7})
    teacher = {info.path: info.shape for info in pair.teacher.layers}
    student = {info.path: info.shape for info in pair.student.layers}
    assert pair.teacher.input_shape == (1, 28, 28) and pair.student.input_shape == (1, 7, 7)
    assert teacher["stage1.conv1"] == (32, 28, 28) and student["stage1.conv1"] == (32, 7, 7)
    assert teacher["stage2"] == (64, 7, 7) and student["stage2"] == (64, 1, 1)
    # on its 7×7 view the student's second stage is pooled to 1×1, so only its first one is a stage,
    # and it is paired with the teacher's deepest
    assert pair.teacher.stages == ["stage1", "stage2"] and pair.student.stages == ["stage1"]
    assert pair.stage_pairs == [("stage2", "stage1")]
    assert "stage2.conv1" in {info.path for info in pair.student.candidates}
    same = pair_layers("cnn_small", "cnn_small", 10, (1, 28, 28))
    assert same.stage_pairs == [("stage1", "stage1"), ("stage2", "stage2")]
    assert pair_layers("lenet5", "mlp_64", 10, (1, 28, 28), {"size": 14}).stage_pairs == []
    with pytest.raises(KDError, match="the student's view: size: .*greater than or equal to 1"):
        pair_layers("lenet5", "mlp_64", 10, (1, 28, 28), {"size": 0})


@pytest.mark.parametrize("method", ["vid", "fsp", "sp", "kdsvd", "reviewkd"])
def test_multi_stage_methods_pair_the_students_stages_at_its_view(method):
    from kdcore.methods import BuildContext, build_loss, parse_params

    teacher, student = build_model("cnn_small", 10, 1, 28), build_model("cnn_small", 10, 1, 7)
    ctx = BuildContext(student, teacher, (1, 28, 28), 10, 64, student_input_shape=(1, 7, 7))
    params = parse_params({"method": method}, slot="losses", where="a test")
    if method in ("fsp", "kdsvd"):  # they relate consecutive stages of equal width: the one pair is refused
        with pytest.raises(KDError, match=r"at least 2|stage2 has 64 teacher and stage1 32 student"):
            build_loss(params, ctx)
        return
    loss = build_loss(params, ctx)
    pairs = [(t, s) for t, s in loss.pairs if t != "@embedding"]
    assert [s for _, s in pairs] == ["stage1"]
    assert all(ctx.shape(tap) for tap in loss.taps)


def test_layers_command_lists_a_model_at_a_views_input_shape(capsys):
    assert main(["layers", "cnn_small", "--dataset", "fashion-mnist", "--view", "7"]) == 0
    out = capsys.readouterr().out
    assert "input 1x7x7 (a student's view '7' of the dataset's 1x28x28)" in out.splitlines()[0]
    rows = {line.split()[0]: line for line in out.splitlines()[3:] if line.strip()}
    assert "32x3x3" in rows["stage1"].split() and "stage 1 of 1" in rows["stage1"]
    assert "64x1x1" in rows["stage2"].split() and "stage" not in rows["stage2"].split("64x1x1")[1]
    assert main(["layers", "cnn_small", "--dataset", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "input 1x28x28," in out and "stage 2 of 2" in out
    assert main(["layers", "mlp_64", "--dataset", "fashion-mnist", "--view", "size=14,grey"]) == 0
    out = capsys.readouterr().out
    assert "input 1x14x14" in out and "12,608" in out  # fc1 reads the 196 pixels of the 14×14 view
    for view, expected in (("14x12", "a view is square"), ("sise=3", "sise: is not a known field")):
        assert main(["layers", "mlp_64", "--dataset", "fashion-mnist", "--view", view]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err
