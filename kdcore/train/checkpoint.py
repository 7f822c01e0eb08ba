"""Checkpoints: plain dicts of tensors and primitives, so they load with torch.load(weights_only=True)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcore.errors import KDError

FORMAT = "kdstudio-checkpoint-v1"
CHECKPOINT_NAME = "checkpoint.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file, then rename: a killed process never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects. Bad files fail with one sentence."""
    path = Path(path)
    if not path.exists():
        raise KDError(f"checkpoint {path} does not exist")
    if not path.is_file():  # a folder, a device such as /dev/zero, a pipe: never read it
        raise KDError(f"checkpoint {path} is not a regular file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle with code, not a torch file
        raise KDError(f"{path.name} is not a loadable weights-only checkpoint ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise KDError(f"{path.name} does not hold a state dict")
    return data


def model_record(name: str, num_classes: int, in_channels: int, input_size: int) -> dict[str, Any]:
    return {"name": name, "num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}


def state_dict_of(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights in a KD Studio checkpoint, or the dict itself when it is a bare state dict."""
    if data.get("format") == FORMAT:
        return data["state_dict"]
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(data.get(key), dict) and all(isinstance(v, torch.Tensor) for v in data[key].values()):
            return data[key]
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    raise KDError("the checkpoint holds no model weights (expected a state dict)")


def load_model_from_checkpoint(path: str | Path, model_name: str | None = None, *,
                               num_classes: int | None = None, in_channels: int | None = None,
                               input_size: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the checkpoint's model and load its weights. A KD Studio checkpoint names its model;
    a bare state dict needs `model_name` and the dataset's shape."""
    from kdcore.models import build_model

    data = load_checkpoint(path)
    record = data.get("model") if data.get("format") == FORMAT else None
    if record is None:
        if model_name is None or num_classes is None:
            raise KDError(f"{Path(path).name} is a bare state dict: name its model (teacher.model)")
        record = model_record(model_name, num_classes, in_channels or 3, input_size or 32)
    elif model_name and model_name != record["name"]:
        raise KDError(f"the checkpoint holds a {record['name']}, not a {model_name}")
    model = build_model(record["name"], record["num_classes"], record["in_channels"], record["input_size"])
    try:
        model.load_state_dict(state_dict_of(data))
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise KDError(f"the checkpoint's weights do not fit {record['name']} ({first})") from None
    return model, record
