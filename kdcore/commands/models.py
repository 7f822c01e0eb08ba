"""`python -m kdcore models [--dataset NAME] [--family NAME]`: the model zoo with parameter counts
and per-image FLOPs for the dataset's input shape and class count."""
from __future__ import annotations

import argparse


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="cifar100",
                        help="input shape and class count to size the models for (default cifar100)")
    parser.add_argument("--num-classes", type=int, help="override the dataset's class count (needed for imagefolder)")
    parser.add_argument("--family", help="only this family, e.g. cifar-resnet, wrn, vgg, mlp, torchvision")


def run(args: argparse.Namespace) -> int:
    from kdcore.commands.layers import dataset_shape, format_table
    from kdcore.errors import UnknownNameError
    from kdcore.models import list_models, model_stats

    input_shape, num_classes = dataset_shape(args.dataset, args.num_classes)
    entries = list_models()
    if args.family:
        families = sorted({e.family for e in entries})
        entries = [e for e in entries if e.family == args.family.strip().lower()]
        if not entries:
            raise UnknownNameError(f"unknown model family '{args.family}'; choose one of {', '.join(families)}.")
    rows = []
    for entry in entries:
        try:
            stats = model_stats(entry.name, num_classes, input_shape)
            params, flops = human(stats.params), human(stats.flops)
        except RuntimeError:  # e.g. an input too small for the architecture
            params, flops = "-", "cannot run"
        rows.append([entry.name, entry.family, params, flops, entry.description])
    shape = "x".join(map(str, input_shape))
    print(f"models sized for {args.dataset} (input {shape}, {num_classes} classes); FLOPs per image, 2 per multiply-add")
    print(format_table(["NAME", "FAMILY", "PARAMS", "FLOPS", "DESCRIPTION"], rows, right=[2, 3]))
    print("Also accepted: wrn_D_K (depth D = 6n+4, width K) and mlp_W1_W2_... (hidden widths).")
    return 0
