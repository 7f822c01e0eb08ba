"""Checks a RunSpec needs beyond its own fields: names that exist, layers that exist, a teacher that fits."""
from __future__ import annotations

from pathlib import Path

from kdcore.errors import KDError
from kdcore.paths import run_dir
from kdcore.spec import EnsembleSpec, RunSpec, SpecError, TeacherSpec
from kdcore.train.checkpoint import CHECKPOINT_NAME, FORMAT, load_checkpoint


def teacher_model_record(spec: RunSpec) -> dict | None:
    """The teacher's model record (name, classes, channels, size) when it can be known before training."""
    t = spec.teacher
    if t is None or isinstance(t, EnsembleSpec):
        return None
    return member_model_record(t)


def member_model_record(t: TeacherSpec) -> dict | None:
    """One teacher's model record when it can be known before training."""
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


def _check_ensemble(spec: RunSpec, info, student, problems: list[str]) -> list[str]:
    """Each member must load and fit the dataset; hint pairs are checked against the members' models."""
    from kdcore.models import build_model
    from kdcore.train.checkpoint import load_model_from_checkpoint
    from kdcore.train.ensemble import EnsembleTeacher
    from kdcore.train.trainer import check_model_fits

    c, h, _ = info.input_shape
    names = []
    for i, member in enumerate(spec.teacher.members):
        where = f"teacher.members.{i}"
        try:
            if member.source == "checkpoint":
                load_model_from_checkpoint(member.checkpoint, member.model, num_classes=info.num_classes,
                                           in_channels=c, input_size=h)
            record = member_model_record(member)
            if record:
                check_model_fits(record, info.num_classes, c, h, who=f"teacher{i}")
        except KDError as err:
            problems.append(f"{where}: {err}")
            record = None
        names.append((record or {}).get("name"))
    if (spec.hints or spec.losses) and all(names) and not problems:
        try:
            members = [build_model(n, info.num_classes, c, h) for n in names]
        except KDError as err:
            return problems + [f"teacher.members: {err}"]
        teacher = EnsembleTeacher(members, spec.teacher.normalised_weights, spec.teacher.combine, spec.temperature)
        problems += _method_problems(spec, teacher, student, tuple(info.input_shape), info.num_classes)
        problems += _check_hints(spec, teacher, student, info)
    return problems


def _student_shape(spec: RunSpec, input_shape: tuple) -> tuple:
    """The student's input shape: the dataset's, or its own view's (downscaled, grey, ...)."""
    return spec.student_input.shape_for(tuple(input_shape)) if spec.student_input is not None else tuple(input_shape)


def _check_hints(spec: RunSpec, teacher, student, info) -> list[str]:
    from kdcore.models.layers import check_layer_pair, layer_output_shapes
    from kdcore.train.distiller import resolve_hint

    problems = []
    t_input = info.input_shape
    s_input = _student_shape(spec, t_input)
    for i, hint in enumerate(spec.hints):
        try:
            resolved = resolve_hint(hint, teacher, student)
            phi_s = resolved.phi_s
            if resolved.phi_s_auto:
                t_shape = layer_output_shapes(teacher, t_input, [resolved.teacher_path])[resolved.teacher_path]
                s_shape = layer_output_shapes(student, s_input, [resolved.student_path])[resolved.student_path]
                phi_s = resolved.student_transform(t_shape, s_shape)
            check = check_layer_pair(teacher, resolved.teacher_path, student, resolved.student_path,
                                     t_input, resolved.phi_t, phi_s, resolved.distance, student_input_shape=s_input)
        except KDError as err:
            problems.append(f"hints.{i}: {err}")
            continue
        if not check.ok:
            problems.append(f"hints.{i}: {check.reason}")
    return problems


def check_spec(spec: RunSpec, *, teacher_model: str | None = None) -> list[str]:
    """Every problem as 'field: sentence'. `teacher_model` names the teacher's architecture when the
    caller knows it (e.g. a teacher run not started yet)."""
    from kdcore.data import dataset_info, describe_imagefolder
    from kdcore.models import build_model

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
    sc, sh = c, h
    if spec.student_input is not None:
        sc, sh, _ = spec.student_input.shape_for(info.input_shape)
    try:
        student = build_model(spec.student, info.num_classes, sc, sh)
    except KDError as err:
        return [f"student: {err}"]
    if isinstance(spec.teacher, EnsembleSpec):
        return _check_ensemble(spec, info, student, problems)
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
        problems += _check_hints(spec, teacher, student, info)
    return problems


def _method_problems(spec: RunSpec, teacher, student, input_shape: tuple, num_classes: int) -> list[str]:
    """Each further method built against the two models, as the trainer will, and each layer it reads
    looked up, so a wrong layer is named before the run is queued."""
    from kdcore.methods import BuildContext, build_loss

    problems = []
    for i, params in enumerate(spec.losses):
        # the transfer set's real size is known only in the worker; a stand-in sizes any memory bank
        ctx = BuildContext(student, teacher, input_shape, num_classes, dataset_size=256,
                           student_input_shape=_student_shape(spec, input_shape))
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
