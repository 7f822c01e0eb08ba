"""The model registry: every zoo model builds and runs for every input size we serve, parameter
counts match RepDistiller's, names resolve (or fail with one clear sentence), FLOPs are right."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kdcore.errors import KDError, UnknownNameError
from kdcore.models import (
    ModelEntry,
    ModelStats,
    build_model,
    count_flops,
    count_parameters,
    list_models,
    model_stats,
)

ZOO = [e.name for e in list_models()]
INPUTS = {"digits": ((1, 8, 8), 10), "fashion-mnist": ((1, 28, 28), 10), "cifar100": ((3, 32, 32), 100)}


def test_registry_lists_the_required_models_once():
    names = [e.name for e in list_models()]
    assert len(names) == len(set(names))
    required = {
        "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4",
        "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "mobilenetv2",
        "lenet5", "lenet5_half", "mlp_1200_1200", "mlp_800_800", "mlp_64", "cnn_small",
        "tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v3_small", "tv_efficientnet_b0",
    }
    assert required <= set(names)
    families = {e.family for e in list_models()}
    assert families <= {"cifar-resnet", "wrn", "vgg", "mobilenet", "lenet", "mlp", "cnn", "torchvision"}
    assert all(isinstance(e, ModelEntry) and e.description for e in list_models())


@pytest.mark.parametrize("dataset", list(INPUTS))
@pytest.mark.parametrize("name", ZOO)
def test_every_model_builds_and_runs(name, dataset):
    (c, h, w), classes = INPUTS[dataset]
    torch.manual_seed(0)
    model = build_model(name, classes, in_channels=c, input_size=h)
    with torch.no_grad():
        logits = model(torch.randn(2, c, h, w))
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()


# RepDistiller / CRD (Tian et al. 2020) figures for 100 classes, in millions.
REPDISTILLER_PARAMS = {
    "resnet8x4": 1.23, "resnet32x4": 7.43, "resnet56": 0.86, "resnet20": 0.28, "resnet110": 1.74,
    "wrn_40_2": 2.26, "wrn_16_2": 0.70, "wrn_40_1": 0.57, "vgg13": 9.46, "vgg8": 3.96, "mobilenetv2": 0.81,
}


@pytest.mark.parametrize("name,millions", REPDISTILLER_PARAMS.items())
def test_parameter_counts_match_repdistiller(name, millions):
    params = count_parameters(build_model(name, 100))
    assert abs(params / 1e6 - millions) / millions < 0.02, f"{name}: {params:,}"


def test_small_model_parameter_counts():
    assert count_parameters(build_model("lenet5", 10, 1, 28)) == 61_706  # the classic LeNet-5 figure
    # 784·1200+1200 + 1200·1200+1200 + 1200·10+10
    assert count_parameters(build_model("mlp_1200_1200", 10, 1, 28)) == 2_395_210
    assert count_parameters(build_model("mlp_800_800", 10, 1, 28)) == 784 * 800 + 800 + 800 * 800 + 800 + 8010
    assert count_parameters(build_model("cnn_small", 10, 1, 28)) < 100_000
    assert count_parameters(build_model("lenet5_half", 10, 1, 28)) < count_parameters(build_model("lenet5", 10, 1, 28)) / 3


def test_count_parameters_includes_frozen_parameters_but_not_buffers():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 4 * 3 + 3 + 3 + 3


def test_models_adapt_to_channels_and_classes():
    tv = build_model("tv_resnet18", 7, in_channels=1)
    assert tv.conv1.weight.shape == (64, 1, 7, 7) and tv.fc.out_features == 7
    eff = build_model("tv_efficientnet_b0", 5, in_channels=2)
    assert eff.features[0][0].in_channels == 2
    assert build_model("resnet20", 3, in_channels=4).conv1.in_channels == 4
    assert build_model("mlp_64", 10, in_channels=3, input_size=5).fc1.in_features == 75


def test_parsed_names():
    wrn = build_model("WRN-10-3", 10)  # case and dashes are forgiven
    assert wrn.fc.in_features == 64 * 3
    assert len(wrn.block1.layer) == 1
    mlp = build_model("mlp_30_20_10", 4, in_channels=1, input_size=8)
    assert [mlp.fc1.out_features, mlp.fc2.out_features, mlp.fc3.out_features] == [30, 20, 10]
    with pytest.raises(UnknownNameError, match="6n\\+4"):
        build_model("wrn_41_2", 10)


def test_unknown_model_is_one_clear_sentence():
    with pytest.raises(UnknownNameError) as info:
        build_model("resnet9", 10)
    message = str(info.value)
    assert message.startswith("unknown model 'resnet9'; did you mean resnet8, resnet14")
    assert "python -m kdcore models" in message and "\n" not in message
    assert isinstance(info.value, KDError)
    with pytest.raises(UnknownNameError, match="unknown model 'zzz'\\. Run"):
        build_model("zzz", 10)


def test_bad_sizes_are_user_errors():
    with pytest.raises(KDError, match="num_classes"):
        build_model("resnet8", 0)


def test_state_dict_keys_follow_repdistiller():
    """Parameter names match RepDistiller's so its published teachers load."""
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer3.0.bn2.running_mean", "fc.weight"} <= set(
        build_model("resnet8x4", 100).state_dict()
    )
    assert {"block1.layer.0.convShortcut.weight", "block3.layer.5.conv2.weight", "bn1.weight"} <= set(
        build_model("wrn_40_2", 100).state_dict()
    )
    assert {"block0.0.weight", "block4.1.running_var", "classifier.weight"} <= set(build_model("vgg8", 100).state_dict())


def test_count_flops_of_linear_and_conv():
    assert count_flops(nn.Linear(10, 5), (10,)) == 2 * 10 * 5
    conv = nn.Conv2d(1, 2, kernel_size=3, padding=1, bias=False)
    assert count_flops(conv, (1, 4, 4)) == 2 * 9 * 2 * 16


def test_count_flops_leaves_model_state_unchanged():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.train()
    model[2].eval()  # a submodule deliberately in eval mode stays there
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops = count_flops(model, (1, 8, 8))
    assert flops == 2 * 9 * 4 * 36 + 2 * 144 * 3
    assert model.training and model[1].training and not model[2].training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_flops_scale_plausibly():
    resnet20 = count_flops(build_model("resnet20", 100), (3, 32, 32))
    assert 78e6 < resnet20 < 86e6  # the usual figure: about 41M multiply-adds per 32x32 image
    assert count_flops(build_model("resnet56", 100), (3, 32, 32)) > 2.5 * resnet20


def test_model_stats_is_cached():
    first = model_stats("mlp_64", 10, (1, 8, 8))
    assert first == ModelStats(params=64 * 64 + 64 + 64 * 10 + 10, flops=2 * (64 * 64 + 64 * 10))
    assert model_stats("mlp_64", 10, [1, 8, 8]) is first
