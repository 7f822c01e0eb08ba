"""`python -m kdcore eval CHECKPOINT --dataset NAME`: test accuracy (and ECE) of a saved model."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint.pt written by KD Studio (or a bare state dict with --model)")
    p.add_argument("--dataset", required=True, help="dataset name, e.g. digits, fashion-mnist")
    p.add_argument("--model", help="model name, needed only for a bare state dict")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    from kdcore.data import load_dataset
    from kdcore.train.checkpoint import load_model_from_checkpoint
    from kdcore.train.fidelity import accuracy, expected_calibration_error
    from kdcore.train.trainer import SPLIT_SEED, check_model_fits, predict, resolve_device

    device = resolve_device(args.device)
    data = load_dataset(args.dataset, seed=SPLIT_SEED, device=device)
    c, h, _ = data.info.input_shape
    model, record = load_model_from_checkpoint(args.checkpoint, args.model, num_classes=data.info.num_classes,
                                               in_channels=c, input_size=h)
    check_model_fits(record, data.info.num_classes, c, h, who="model")
    split = getattr(data, args.split)
    logits = predict(model.to(device), split.x, 1024, device, "fp32")
    print(f"{record['name']} on {args.dataset}/{args.split} ({len(split)} samples): "
          f"accuracy {accuracy(logits, split.y):.4f}, ECE {expected_calibration_error(logits, split.y):.4f}")
    return 0
