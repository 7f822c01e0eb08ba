"""Checks a RunSpec needs beyond its own fields: names that exist, layers that exist, a teacher that fits."""
from __future__ import annotations

from pathlib import Path

from kdcore.errors import KDError
from kdcore.paths import run_dir
from kdcore.spec import RunSpec, SpecError
from kdcore.train.checkpoint import CHECKPOINT_NAME, FORMAT, load_checkpoint


def teacher_model_record(spec: RunSpec) -> dict | None:
    """The teacher's model record (name, classes, channels, size) when it can be known before training."""
    t = spec.teacher
    if t is None:
        return None
    if t.source == "torchvision":
        return None
    path = Path(t.checkpoint) if t.source == "checkpoint" else run_dir(t.run_id) / CHECKPOINT_NAME
    if t.source == "run" and not path.is_file():
        saved_spec = run_dir(t.run_id) / "spec.yaml"
        if saved_spec.is_file():  # the teacher run has started: its spec names the model
            teacher_spec = RunSpec.from_yaml(saved_spec.read_text())
            return {"name": teacher_spec.student, "num_classes": None}
        return None
    data = load_checkpoint(path)
    if data.get("format") == FORMAT:
        return data["model"]
    return {"name": t.model, "num_classes": None} if t.model else None


def check_spec(spec: RunSpec, *, teacher_model: str | None = None) -> list[str]:
    """Every problem as 'field: sentence'. `teacher_model` names the teacher's architecture when the
    caller knows it (e.g. a teacher run not started yet)."""
    from kdcore.data import dataset_info, describe_imagefolder
    from kdcore.models import build_model
    from kdcore.models.layers import check_layer_pair

    problems: list[str] = []
    try:
        info = dataset_info(spec.dataset.name)
        if spec.dataset.name == "imagefolder":  # classes come from the chosen folder's subfolders
            if not spec.dataset.path:
                return ["dataset.path: an image-folder dataset needs a folder under the data root"]
            info = describe_imagefolder(spec.dataset.path)
    except KDError as err:
        field = "dataset.path" if spec.dataset.name == "imagefolder" else "dataset.name"
        return [f"{field}: {err}"]
    c, h, _ = info.input_shape
    try:
        student = build_model(spec.student, info.num_classes, c, h)
    except KDError as err:
        return [f"student: {err}"]
    record = None
    try:
        record = teacher_model_record(spec)
        if spec.teacher is not None and spec.teacher.source == "checkpoint":
            # the weights must load into the declared model, as the worker will load them
            from kdcore.train.checkpoint import load_model_from_checkpoint

            load_model_from_checkpoint(spec.teacher.checkpoint, spec.teacher.model, num_classes=info.num_classes,
                                       in_channels=c, input_size=h)
    except KDError as err:
        problems.append(f"teacher.checkpoint: {err}")
    if record:
        from kdcore.train.trainer import check_model_fits

        try:
            check_model_fits(record, info.num_classes, c, h, who="teacher")
        except KDError as err:
            problems.append(f"teacher: {err}")
    name = teacher_model or (record or {}).get("name")
    if (spec.hints or spec.losses) and name:
        try:
            teacher = build_model(name, info.num_classes, c, h)
        except KDError as err:
            return problems + [f"teacher.model: {err}"]
        problems += _method_problems(spec, teacher, student, tuple(info.input_shape), info.num_classes)
        from kdcore.models.layers import layer_output_shapes
        from kdcore.train.distiller import resolve_hint

        for i, hint in enumerate(spec.hints):
            try:
                resolved = resolve_hint(hint, teacher, student)
                phi_s = resolved.phi_s
                if resolved.phi_s_auto:
                    t_shape = layer_output_shapes(teacher, info.input_shape, [resolved.teacher_path])[resolved.teacher_path]
                    s_shape = layer_output_shapes(student, info.input_shape, [resolved.student_path])[resolved.student_path]
                    phi_s = resolved.student_transform(t_shape, s_shape)
                check = check_layer_pair(teacher, resolved.teacher_path, student, resolved.student_path,
                                         info.input_shape, resolved.phi_t, phi_s, resolved.distance)
            except KDError as err:
                problems.append(f"hints.{i}: {err}")
                continue
            if not check.ok:
                problems.append(f"hints.{i}: {check.reason}")
    return problems


def _method_problems(spec: RunSpec, teacher, student, input_shape: tuple, num_classes: int) -> list[str]:
    """Each further method built against the two models, as the trainer will, and each layer it reads
    looked up, so a wrong layer is named before the run is queued."""
    from kdcore.methods import BuildContext, build_loss

    problems = []
    for i, params in enumerate(spec.losses):
        # the transfer set's real size is known only in the worker; a stand-in sizes any memory bank
        ctx = BuildContext(student, teacher, input_shape, num_classes, dataset_size=256)
        try:
            loss = build_loss(params, ctx)
            for tap in getattr(loss, "taps", ()):
                ctx.shape(tap)
        except KDError as err:
            problems.append(f"losses.{i}: {err}")
    return problems


def validate_spec(spec: RunSpec, *, teacher_model: str | None = None) -> RunSpec:
    problems = check_spec(spec, teacher_model=teacher_model)
    if problems:
        raise SpecError(problems)
    return spec
