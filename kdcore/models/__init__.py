"""The model zoo (CIFAR ResNets, WRNs, VGGs, MobileNetV2, LeNet-5, MLPs, a small CNN, torchvision
classifiers), parameter/FLOP counts, layer tooling (listing, hooks, pre-ReLU points, stages) in
`kdcore.models.layers`, and each model listed at its own input shape (a student's view) in
`kdcore.models.listing`."""
from kdcore.models.registry import ModelEntry, build_model, list_models, model_entry
from kdcore.models.stats import ModelStats, count_flops, count_parameters, model_stats

__all__ = [
    "ModelEntry",
    "ModelStats",
    "build_model",
    "count_flops",
    "count_parameters",
    "list_models",
    "model_entry",
    "model_stats",
]
