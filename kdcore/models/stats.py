"""Parameter and FLOP counts."""
from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelStats:
    params: int
    flops: int  # per image, 2 per multiply-accumulate (conv, matmul); elementwise ops not counted


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration; each module's own train/eval flag is restored afterwards
    (a frozen submodule kept in eval stays in eval)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def dry_input(model: nn.Module, input_shape: tuple[int, ...], batch: int) -> torch.Tensor:
    """Zeros on the model's device, in its floating dtype."""
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.get_default_dtype()
    return torch.zeros(batch, *input_shape, device=device, dtype=dtype)


_FLOP_COUNT_LOCK = threading.Lock()


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """FLOPs of one forward pass for one image (FlopCounterMode: 2·MACs of convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = dry_input(model, tuple(input_shape), batch=1)
    # FlopCounterMode hooks every module globally: two counts at once (dashboard threads) would mix.
    with _FLOP_COUNT_LOCK, eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def model_stats(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> ModelStats:
    """Parameters and per-image FLOPs of a registry model (cached: building big models is slow)."""
    c, h, w = (int(v) for v in input_shape)
    return _model_stats(name, int(num_classes), (c, h, w))


@functools.lru_cache(maxsize=256)
def _model_stats(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> ModelStats:
    from kdcore.models.registry import build_model

    model = build_model(name, num_classes, in_channels=input_shape[0], input_size=input_shape[1])
    return ModelStats(params=count_parameters(model), flops=count_flops(model, input_shape))
