"""`python -m kdcore layers MODEL --dataset NAME [--view VIEW] [--all]`: a model's candidate hint layers with
their output shapes, own parameter counts, pre-ReLU points and stages, from one dry run (no data needed).
`--view` lists the model as a student that sees a view of the input (`14`: downscaled to 14×14;
`size=14,grey,crop=24`), at the shape it sees."""
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
    parser.add_argument("--view", help="list it at the input shape of a student's view of the dataset: 14 (14×14) or "
                                       "size=14,grey,crop=24,noise_std=0.1 (the spec's student_input fields)")
    parser.add_argument("--all", action="store_true", help="list every module, not only the candidate hint layers")


def parse_view(text: str) -> dict:
    """`14`, `14x14` or `size=14,grey,crop=24` as a student_input mapping (validated by the spec's model)."""
    text = text.strip()
    square = text.lower().replace("×", "x").split("x")
    if all(part.strip().isdigit() for part in square) and len(square) <= 2:
        if len(set(square)) != 1:
            raise KDError(f"--view {text}: a view is square; write one size, e.g. --view 14.")
        return {"size": int(square[0])}
    view: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        view[key.strip()] = value.strip() if sep else True
    return view


def run(args: argparse.Namespace) -> int:
    from kdcore.models import build_model
    from kdcore.models.layers import classifier_path, penultimate_path, pre_relu_points
    from kdcore.models.listing import model_layers, student_input_shape

    dataset_input, num_classes = dataset_shape(args.dataset, args.num_classes)
    input_shape = student_input_shape(dataset_input, parse_view(args.view)) if args.view else dataset_input
    model = build_model(args.model, num_classes, in_channels=input_shape[0], input_size=input_shape[1])
    listing = model_layers(model, num_classes, input_shape)
    layers = listing.layers
    shown = layers if args.all else listing.candidates

    notes: dict[str, list[str]] = {}
    for k, path in enumerate(listing.stages, start=1):
        notes.setdefault(path, []).append(f"stage {k} of {len(listing.stages)}")
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
    seen = f"input {format_shape(input_shape)}"
    if args.view:
        seen += f" (a student's view '{args.view}' of the dataset's {format_shape(dataset_input)})"
    print(f"{args.model} on {args.dataset}: {seen}, {num_classes} classes, {listing.parameters:,} parameters")
    print(format_table(["PATH", "TYPE", "OUTPUT", "PARAMS", "NOTE"], rows, right=[3]))
    if args.all:
        print(f"{len(layers)} modules; OUTPUT excludes the batch dimension.")
    else:
        print(f"{len(shown)} candidate hint layers of {len(layers)} modules (--all lists every one); "
              "OUTPUT excludes the batch dimension.")
    if not listing.stages:
        print("No stage with a feature map: multi-stage methods (FSP, VID, ReviewKD, ...) need layers named.")
    return 0
