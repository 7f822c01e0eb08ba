"""`python -m kdcore layers MODEL --dataset NAME [--all]`: a model's candidate hint layers with their
output shapes, own parameter counts and pre-ReLU points, from one dry run (no data needed)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from kdcore.errors import KDError


def dataset_shape(name: str, num_classes: int | None = None) -> tuple[tuple[int, int, int], int]:
    """A dataset's (C, H, W) input shape and class count, without loading it; `num_classes`
    overrides the count (an image folder has none until one is chosen)."""
    from kdcore.data import dataset_info

    info = dataset_info(name)
    c, h, w = (int(v) for v in info.input_shape)
    if num_classes is not None and num_classes < 1:
        raise KDError(f"--num-classes must be at least 1, got {num_classes}.")
    classes = int(num_classes) if num_classes is not None else int(info.num_classes)
    if classes < 1:
        raise KDError(f"dataset '{name}' has no class count until a folder is chosen; pass --num-classes N.")
    return (c, h, w), classes


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape) if shape else "-"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; the columns in `right` are right-aligned (numbers)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model name from `python -m kdcore models`, e.g. resnet8x4")
    parser.add_argument("--dataset", required=True, help="gives the input shape and class count, e.g. cifar100")
    parser.add_argument("--num-classes", type=int, help="override the dataset's class count (needed for imagefolder)")
    parser.add_argument("--all", action="store_true", help="list every module, not only the candidate hint layers")


def run(args: argparse.Namespace) -> int:
    from kdcore.models import build_model, count_parameters
    from kdcore.models.layers import classifier_path, hint_candidates, list_layers, penultimate_path, pre_relu_points

    input_shape, num_classes = dataset_shape(args.dataset, args.num_classes)
    model = build_model(args.model, num_classes, in_channels=input_shape[0], input_size=input_shape[1])
    layers = list_layers(model, input_shape)
    shown = layers if args.all else hint_candidates(model, layers)

    notes: dict[str, list[str]] = {}
    for point in pre_relu_points(model):
        stage = ", stage end" if point.stage_end else ""
        notes.setdefault(point.path, []).append(f"pre-ReLU{stage} (margins: {point.bn_path})")
    for path, label in ((penultimate_path(model), "penultimate feature"), (classifier_path(model), "logits")):
        if path:
            notes.setdefault(path, []).append(label)
    for info in shown:
        if info.calls > 1:
            notes.setdefault(info.path, []).append(f"runs {info.calls}x per forward (hook keeps the last)")
        elif info.calls == 0:
            notes.setdefault(info.path, []).append("not called by forward")

    rows = [[i.path, i.type, format_shape(i.shape), f"{i.params:,}", "; ".join(notes.get(i.path, []))] for i in shown]
    print(
        f"{args.model} on {args.dataset}: input {format_shape(input_shape)}, {num_classes} classes, "
        f"{count_parameters(model):,} parameters"
    )
    print(format_table(["PATH", "TYPE", "OUTPUT", "PARAMS", "NOTE"], rows, right=[3]))
    if args.all:
        print(f"{len(layers)} modules; OUTPUT excludes the batch dimension.")
    else:
        print(f"{len(shown)} candidate hint layers of {len(layers)} modules (--all lists every one); "
              "OUTPUT excludes the batch dimension.")
    return 0
