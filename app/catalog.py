"""The model zoo and datasets as tables: parameters, FLOPs, latency and layers (no Streamlit here)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import pandas as pd


def dataset_choices() -> dict[str, str]:
    """Dataset name -> title, in registry order."""
    from kdcore.data import list_datasets

    return {d.name: d.title for d in list_datasets()}


def zoo_names(include_torchvision: bool = True) -> list[str]:
    from kdcore.models import list_models

    return [m.name for m in list_models() if include_torchvision or m.family != "torchvision"]


def zoo_frame(stats: Callable[[str], tuple[int, int] | str], names: Iterable[str] | None = None) -> pd.DataFrame:
    """The zoo as a table: model, family, description, params, flops, note (why a model has no numbers).
    `stats(name)` returns (params, FLOPs) or a sentence (the page passes a cached function)."""
    from kdcore.models import list_models

    wanted = set(names) if names is not None else None
    rows = []
    for entry in list_models():
        if wanted is not None and entry.name not in wanted:
            continue
        result = stats(entry.name)
        params, flops, note = (result[0], result[1], "") if isinstance(result, tuple) else (None, None, result)
        rows.append({"model": entry.name, "family": entry.family, "description": entry.description,
                     "params": params, "flops": flops, "note": note})
    frame = pd.DataFrame(rows, columns=["model", "family", "description", "params", "flops", "note"])
    return frame.astype({"params": "Int64", "flops": "Int64"})


def format_count(n: float | int | None) -> str:
    """1234567 -> '1.23M' (parameters, FLOPs)."""
    if n is None or n != n:
        return "—"
    n = float(n)
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def ratio_text(x: float) -> str:
    """A ratio to three significant figures, thousands grouped: 12.3, 100, 6,430 (never 6.43e+03)."""
    r = float(f"{x:.3g}")
    return f"{r:,.0f}" if r >= 1000 else f"{r:g}"


def compression_text(teacher: tuple[int, int] | str | None, student: tuple[int, int] | str | None) -> str | None:
    """'12.3× fewer parameters, 4.5× fewer FLOPs' for the student against the teacher (None if unknown)."""
    if not isinstance(teacher, tuple) or not isinstance(student, tuple):
        return None
    p = teacher[0] / max(student[0], 1)
    f = teacher[1] / max(student[1], 1)

    def ratio(x: float, what: str) -> str:
        if 0.95 <= x <= 1.05:
            return f"about as many {what}"
        return f"{ratio_text(x)}× fewer {what}" if x >= 1 else f"{ratio_text(1 / x)}× more {what}"

    return f"{ratio(p, 'parameters')}, {ratio(f, 'FLOPs')} than the teacher"


def layers_frame(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> pd.DataFrame:
    """Every layer of a zoo model with its output shape from one dry run (candidate = worth distilling)."""
    from kdcore.models import build_model
    from kdcore.models.layers import hint_candidates, list_layers

    c, h, _ = input_shape
    model = build_model(name, num_classes, c, h)
    layers = list_layers(model, tuple(input_shape))
    candidates = {info.path for info in hint_candidates(model, layers)}
    rows = [{"path": info.path, "type": info.type,
             "shape": "×".join(map(str, info.shape)) if info.shape else "—",
             "params": info.params, "candidate": info.path in candidates}
            for info in layers if info.calls > 0]
    return pd.DataFrame(rows, columns=["path", "type", "shape", "params", "candidate"])


def layer_label(row: pd.Series) -> str:
    """'stage1.conv2 · Conv2d · 32×8×8': what a layer list shows for each option."""
    return f"{row['path']} · {row['type']} · {row['shape']}"


def latency_ms(name: str, num_classes: int, input_shape: tuple[int, int, int], *, batch: int = 32,
               repeats: int = 5) -> float:
    """Milliseconds per image of an eval-mode forward pass on the CPU (median over repeats, after a warm-up)."""
    import torch

    from kdcore.models import build_model

    c, h, w = input_shape
    model = build_model(name, num_classes, c, h).eval()
    x = torch.randn(batch, c, h, w)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0 / batch


def check_hint_pair(teacher_model: str, teacher_layer: str, student_model: str, student_layer: str,
                    num_classes: int, input_shape: tuple[int, int, int], preset: str | None,
                    phi_t: str | None = None, phi_s: str | None = None, distance: str | None = None,
                    student_input_shape: tuple[int, int, int] | None = None) -> tuple[bool, str]:
    """Whether a (hint, guided) pair can be distilled with a preset (or a custom Φ_t, Φ_s, D), and one
    sentence saying why or what to change. Judged on one dry run of each model, the student on its own
    view of the input when it has one (`student_input_shape`)."""
    from kdcore.errors import KDError
    from kdcore.models import build_model
    from kdcore.models.layers import check_layer_pair
    from kdcore.spec import HintSpec
    from kdcore.train.distiller import resolve_hint

    c, h, _ = input_shape
    sc, sh, _ = student_input_shape or input_shape
    try:
        teacher = build_model(teacher_model, num_classes, c, h)
        student = build_model(student_model, num_classes, sc, sh)
        hint = HintSpec(teacher_layer=teacher_layer, student_layer=student_layer, preset=preset,
                        phi_t=phi_t, phi_s=phi_s, distance=distance)
        resolved = resolve_hint(hint, teacher, student)
        result = check_layer_pair(teacher, resolved.teacher_path, student, resolved.student_path, tuple(input_shape),
                                  resolved.phi_t, resolved.phi_s, resolved.distance,
                                  student_input_shape=tuple(student_input_shape or input_shape))
    except KDError as err:
        return False, str(err)
    except ValueError as err:  # pydantic: an incomplete custom pair
        return False, str(err).splitlines()[-1]
    return bool(result.ok), result.reason
