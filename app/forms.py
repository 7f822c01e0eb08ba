"""The New-experiment form without Streamlit: form values (a dict keyed by widget key) → RunSpec(s),
every problem mapped to the widget that can fix it, and submission to the store.

The page reads its widgets into a dict, calls `check_form`, writes each problem under its widget
and, on Launch, calls `submit_form`. Tests drive the same functions with plain dicts."""
from __future__ import annotations

import copy
import hashlib
import re
import typing
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from app.form_errors import validate_all
from kdcore.errors import KDError
from kdcore.spec import EnsembleSpec, InputViewSpec, RunSpec, SpecError, teacher_members

GENERAL = "general"  # problems no single widget owns: shown beside the Launch button
PENDING_TEACHER = "new-teacher"  # stands in for the id of a teacher run not submitted yet

TEACHER_SOURCES = {
    "none": "No teacher (train from scratch)",
    "zoo": "Train a new teacher from the zoo",
    "run": "A finished run",
    "upload": "An uploaded checkpoint",
    "torchvision": "torchvision pretrained weights",
}
TRANSFER_KINDS = {"labelled": "All training samples, all labels", "partial_labels": "Only a fraction of the labels",
                  "noisy": "Noisy inputs", "omit_classes": "Some classes left out"}
CUSTOM = "custom"
# Fields a sweep can vary, with how a user would name them.
SWEEP_FIELDS = {
    "logit.rho": "temperature ρ", "logit.alpha": "hard-label weight α", "logit.beta": "soft-label weight β",
    "optimizer.lr": "learning rate", "epochs": "epochs", "batch_size": "batch size",
    "transfer.label_fraction": "label fraction", "transfer.noise_std": "input noise std",
    "seed": "seed", "student": "student model", "optimizer.weight_decay": "weight decay",
}

# What the form shows beyond the spec itself (where the teacher comes from, how many pairs, the sweep).
FORM_ONLY: dict[str, Any] = {
    "teacher_source": "none", "teacher_zoo_model": "cnn_small", "teacher_epochs": 20, "teacher_run": None,
    "teacher_checkpoint_path": "", "teacher_upload_model": None, "teacher_tv_model": "tv_resnet18",
    "teacher_tv_weights": "DEFAULT", "hint_count": 0, "loss_count": 0,
    "teacher_more_runs": [], "member_count": 0,  # further teachers (runs, then others) make an ensemble
    "teacher_weights": "",  # one weight per teacher; empty = equal (the spec's default)
    "teacher_combine": EnsembleSpec.model_fields["combine"].default,
    "sweep_on": False, "sweep_field": "logit.rho", "sweep_values": "1, 2, 4, 8, 16",
    "chain_kind": "none", "chain_assistants": [], "chain_generations": 3,
}
MEMBER_SOURCES = {"upload": "a checkpoint (zoo model + .pt)", "torchvision": "torchvision pretrained weights"}
MEMBER_DEFAULTS: dict[str, Any] = {"source": "upload", "checkpoint": "", "model": None, "tv_model": "tv_resnet18",
                                   "tv_weights": "DEFAULT"}
CHAIN_KINDS = {"none": "One run", "assistants": "Teacher → assistants → student (TAKD)",
               "generations": "Born-again generations"}
HINT_DEFAULTS: dict[str, Any] = {"teacher": None, "student": None, "mode": "fitnets", "phi_t": "identity",
                                 "phi_s": "regressor", "distance": "l2", "weight": None}

# Spec field (dotted, as SpecError names it) -> widget key. Longest matching prefix wins.
FIELD_WIDGETS: dict[str, str] = {
    "name": "name", "tags": "tags",
    "dataset": "dataset", "dataset.name": "dataset", "dataset.path": "data_path",
    "dataset.val_fraction": "val_fraction", "dataset.augment": "augment",
    "student": "student",
    "teacher": "teacher_source", "teacher.source": "teacher_source", "teacher.run_id": "teacher_run",
    "teacher.checkpoint": "teacher_checkpoint_path", "teacher.weights": "teacher_tv_weights",
    "logit": "method", "logit.method": "method",
    "hints": "hint_count", "hint_stage_epochs": "hint_stage_epochs",
    "transfer": "transfer_kind", "transfer.kind": "transfer_kind", "transfer.label_fraction": "label_fraction",
    "transfer.noise_std": "noise_std", "transfer.omit_classes": "omit_classes",
    "optimizer": "optimizer", "optimizer.name": "optimizer", "optimizer.lr": "lr", "optimizer.momentum": "momentum",
    "optimizer.weight_decay": "weight_decay", "optimizer.nesterov": "nesterov",
    "optimizer.clip_grad_norm": "clip_grad_norm",
    "schedule": "schedule", "schedule.name": "schedule", "schedule.warmup_epochs": "warmup_epochs",
    "schedule.milestones": "milestones", "schedule.gamma": "gamma",
    "epochs": "epochs", "batch_size": "batch_size", "device": "device",
    "devices": "devices", "nodes": "nodes", "grad_accumulation": "grad_accumulation",
    "sync_batchnorm": "sync_batchnorm",
    "precision": "precision", "seed": "seed",
    "sweep": "sweep_values", "sweep.field": "sweep_field", "sweep.values": "sweep_values",
    "student_input": "view_size", "student_input.size": "view_size", "student_input.grey": "view_grey",
    "student_input.crop": "view_crop", "student_input.noise_std": "view_noise_std",
    "teacher.combine": "teacher_combine", "teacher.members": "teacher_source",
    "chain": "chain_kind", "chain.students": "chain_assistants", "chain.generations": "chain_generations",
    "depends_on": "teacher_run",
}

# Spec fields the form shows under "Advanced" (dotted paths), with their labels. Each widget's key is
# advanced_key(path); its range, choices, default and help come from the field's definition in the spec.
ADVANCED_FIELDS: dict[str, str] = {
    "eval_batch_size": "Evaluation batch size", "checkpoint_every_s": "Checkpoint every (s)",
    "evaluation.val_every": "Validate every N epochs", "evaluation.test": "Test set",
    "compile": "torch.compile the student", "channels_last": "Channels-last memory",
    "teacher_cache": "Teacher logit cache", "teacher_cache_views": "Cached augmented views",
    "probe_size": "Probe samples", "dataset.train_limit": "Training samples (subset)",
}
# What an empty optional number means, as its placeholder says.
_EMPTY_MEANS = {"eval_batch_size": "per device", "dataset.train_limit": "all samples"}
# An optional on/off field (None = decided at run time) as a choice of three words.
_TRISTATE = {None: "auto", True: "on", False: "off"}


def advanced_key(path: str) -> str:
    return "adv_" + path.replace(".", "_")


FIELD_WIDGETS.update({path: advanced_key(path) for path in ADVANCED_FIELDS})
FIELD_WIDGETS["evaluation"] = advanced_key("evaluation.val_every")

# Whole-spec rules name no field; these words tell which widget can fix them.
_ROOT_RULES = (("hint_stage_epochs", "hint_stage_epochs"), ("need a teacher", "teacher_source"),
               ("must be a multiple of devices", "batch_size"))


def hint_key(i: int, part: str) -> str:
    return f"hint_{i}_{part}"


def member_key(i: int, part: str) -> str:
    """A widget of further teacher `i` (a checkpoint or torchvision member of an ensemble)."""
    return f"member_{i}_{part}"


def view_key(name: str) -> str:
    """The widget of one field of the student's view of the input (InputViewSpec)."""
    return f"view_{name}"


def loss_key(i: int) -> str:
    """The widget choosing the method of entry `i` of the spec's `losses`."""
    return f"loss_{i}_method"


def param_key(method: str, name: str, prefix: str = "") -> str:
    """The widget of one method parameter: "kd.rho"; an entry of `losses` is prefixed: "loss_0.rkd.weight"."""
    return f"{prefix}{method}.{name}"


def loss_prefix(i: int) -> str:
    return f"loss_{i}."


# ---- widgets generated from the methods' parameter models -------------------------------------------
@dataclass(frozen=True)
class ParamWidget:
    """One parameter as a widget: ``kind`` is float, int, bool, choice, text, layer or layers (a layer
    picker for ``side``); bounds come from the model's Field constraints, ``help`` from its description."""

    key: str
    name: str
    title: str
    kind: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    side: str | None = None
    choice_labels: tuple = ()  # (value, label) pairs a method gave its choices

    def choice_label(self, value: Any) -> str:
        return dict(self.choice_labels).get(value, str(value))


def param_widgets(method: str, prefix: str = "") -> list[ParamWidget]:
    """The widgets for a registered method's parameters, in the order its model declares them."""
    from kdcore.methods import get_method

    out = []
    for p in get_method(method).parameters():
        kind = {"float": "float", "int": "int", "bool": "bool", "choice": "choice", "str": "text"}.get(p["type"], "text")
        if p.get("layer"):
            kind = "layers" if p["type"].startswith("list") else "layer"
        minimum = p.get("ge", p.get("gt"))
        maximum = p.get("le", p.get("lt"))
        out.append(ParamWidget(param_key(method, p["name"], prefix), p["name"], p["title"], kind, p["default"],
                               p["description"],
                               minimum, maximum, tuple(p.get("choices", ())), p.get("layer"),
                               tuple(p.get("choice_labels", {}).items())))
    return out


def field_bounds(model: type, name: str) -> tuple[Any, Any]:
    """(min, max) a spec field accepts, from its Field constraints (ge/le; gt/lt of an int as the next
    whole number), so a widget's range is the spec's own. None where unbounded."""
    info = model.model_fields[name]
    whole = info.annotation is int or int in typing.get_args(info.annotation)
    lo = hi = None
    for rule in info.metadata:
        if getattr(rule, "ge", None) is not None:
            lo = rule.ge
        elif getattr(rule, "gt", None) is not None and whole:
            lo = rule.gt + 1
        if getattr(rule, "le", None) is not None:
            hi = rule.le
        elif getattr(rule, "lt", None) is not None and whole:
            hi = rule.lt - 1
    return lo, hi


@dataclass(frozen=True)
class AdvancedWidget:
    """How the form draws one spec field of the Advanced section."""

    path: str
    key: str
    label: str
    kind: str  # "number", "choice" or "check"
    help: str
    bounds: tuple[Any, Any] = (None, None)
    whole: bool = True  # a number widget of whole numbers
    optional: bool = False  # empty = None (the spec decides at run time)
    choices: tuple[Any, ...] = ()
    tristate: bool = False  # an optional on/off field shown as auto / on / off
    empty: str = ""  # placeholder of an optional number left empty


def _spec_field(path: str) -> tuple[type, str]:
    """(model, field name) of a dotted RunSpec path."""
    model: type = RunSpec
    *parents, name = path.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    return model, name


def advanced_widgets() -> list[AdvancedWidget]:
    out = []
    for path, label in ADVANCED_FIELDS.items():
        model, name = _spec_field(path)
        info = model.model_fields[name]
        args = set(typing.get_args(info.annotation)) or {info.annotation}
        optional = type(None) in args
        args.discard(type(None))
        common = dict(path=path, key=advanced_key(path), label=label, help=info.description or "")
        if typing.get_origin(info.annotation) is Literal:
            out.append(AdvancedWidget(kind="choice", choices=typing.get_args(info.annotation), **common))
        elif args == {bool} and optional:
            out.append(AdvancedWidget(kind="choice", choices=tuple(_TRISTATE.values()), tristate=True, **common))
        elif args == {bool}:
            out.append(AdvancedWidget(kind="check", **common))
        else:
            out.append(AdvancedWidget(kind="number", bounds=field_bounds(model, name), whole=args == {int},
                                      optional=optional, empty=_EMPTY_MEANS.get(path, "auto"), **common))
    return out


def _advanced_values(spec: RunSpec) -> dict[str, Any]:
    v = {}
    for w in advanced_widgets():
        value: Any = spec
        for part in w.path.split("."):
            value = getattr(value, part)
        v[w.key] = _TRISTATE[value] if w.tristate else value
    return v


def _advanced_spec(v: Mapping[str, Any], data: dict[str, Any]) -> None:
    """Write the Advanced widgets' values into the spec mapping `data`."""
    back = {word: value for value, word in _TRISTATE.items()}
    for w in advanced_widgets():
        value = v[w.key]
        if w.tristate:
            value = back.get(value, value)
        _set_field(data, w.path, value)


def method_choices(slot: str) -> dict[str, str]:
    """{name: title} of the registered methods that go in a spec slot ("logit", "losses", "hints")."""
    from kdcore.methods import all_methods

    return {r.name: r.title for r in all_methods(slot=slot)}


def _method_param_defaults(prefix: str = "", slot: str = "logit") -> dict[str, Any]:
    return {w.key: w.default for name in method_choices(slot) for w in param_widgets(name, prefix)}


def form_defaults() -> dict[str, Any]:
    """Every widget's first value: the RunSpec's defaults (one set of defaults), plus the form's own keys."""
    return {**values_from_spec(RunSpec()), **FORM_ONLY, **_method_param_defaults(), **_view_values(InputViewSpec())}


def _view_values(view: InputViewSpec) -> dict[str, Any]:
    return {view_key(name): getattr(view, name) for name in InputViewSpec.model_fields}


def loss_entry_defaults(i: int) -> dict[str, Any]:
    """The widgets of a new entry of `losses`: the first registered method, every method's defaults."""
    choices = list(method_choices("losses"))
    return {loss_key(i): choices[0] if choices else None, **_method_param_defaults(loss_prefix(i), "losses")}


def _params_from(values: Mapping[str, Any], method: str, prefix: str = "") -> dict[str, Any]:
    out = {}
    for w in param_widgets(method, prefix):
        value = values.get(w.key, w.default)
        out[w.name] = None if value == "" and w.kind == "text" else value
    return out


def teacher_model_widget(source: str) -> str:
    return {"zoo": "teacher_zoo_model", "upload": "teacher_upload_model",
            "torchvision": "teacher_tv_model"}.get(source, "teacher_source")


def widget_for(field_path: str, values: Mapping[str, Any] | None = None) -> str:
    """The widget that owns a dotted spec field ("logit.rho" -> "kd.rho", "hints.1.student_layer" -> "hint_1_student")."""
    path = field_path.strip()
    if m := re.fullmatch(r"hints\.(\d+)(?:\.(\w+))?", path):
        part = {"teacher_layer": "teacher", "student_layer": "student", "phi_t": "phi_t", "phi_s": "phi_s",
                "distance": "distance", "weight": "weight", "preset": "mode"}.get(m.group(2) or "", "student")
        return hint_key(int(m.group(1)), part)
    values = values or {}
    if m := re.fullmatch(r"teacher\.members\.(\d+)(?:\..*)?", path):
        return member_widget(values, int(m.group(1)))
    if path in ("teacher", "teacher.weights") and ensemble_size(values) > 1:
        return "teacher_weights"  # the ensemble's own rule: one weight per member
    if path == "teacher.model":
        return teacher_model_widget(values.get("teacher_source", "none"))
    if m := re.fullmatch(r"logit\.(\w+)", path):
        return "method" if m.group(1) == "method" else param_key(values.get("method") or "kd", m.group(1))
    if m := re.fullmatch(r"losses(?:\.(\d+))?(?:\.(\w+))?", path):
        if m.group(1) is None:
            return "loss_count"
        i = int(m.group(1))
        method = values.get(loss_key(i))
        if m.group(2) in (None, "method") or not method:
            return loss_key(i)
        return param_key(method, m.group(2), loss_prefix(i))
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in FIELD_WIDGETS:
            return FIELD_WIDGETS[key]
    return GENERAL


def split_problem(problem: str) -> tuple[str, str]:
    """'logit.rho: Input should be greater than 0 (got -1.0)' -> ('logit.rho', 'Input should be ...')."""
    head, sep, tail = problem.partition(": ")
    if sep and re.fullmatch(r"[\w.\-\[\]]+", head):
        return head, tail
    return "", problem


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    if not re.search(r"[./]\w", text.split(maxsplit=1)[0]):  # a file name or path keeps its spelling: broken.pt
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def plain_sentence(text: str) -> str:
    """A message from kdcore as a sentence beside a widget: capitalised, ended, no code quotes."""
    return _sentence(text.replace("`", ""))


def map_problems(problems: list[str], values: Mapping[str, Any] | None = None,
                 rename: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """SpecError problems -> {widget key: [sentences]}. `rename` redirects widgets (teacher spec errors)."""
    out: dict[str, list[str]] = {}
    for problem in problems:
        path, message = split_problem(problem)
        if path in ("", "spec"):
            widget = next((w for word, w in _ROOT_RULES if word in message), GENERAL)
        else:
            widget = widget_for(path, values)
        if rename and widget in rename:
            widget = rename[widget]
        out.setdefault(widget, [])
        sentence = _sentence(message)
        if sentence not in out[widget]:
            out[widget].append(sentence)
    return out


# ----------------------------------------------------------------------------------------- parsing
def parse_number_list(text: str, *, integers: bool = False) -> list:
    """'1, 2, 4' -> [1, 2, 4]; raises ValueError with a sentence when it is not a list of numbers."""
    text = (text or "").strip().strip("[]")
    if not text:
        return []
    out = []
    for part in re.split(r"[,\s;]+", text):
        if not part:
            continue
        try:
            number = float(part)
        except ValueError:
            raise ValueError(f"'{part}' is not a number") from None
        if integers:
            if number != int(number):
                raise ValueError(f"'{part}' is not a whole number")
            number = int(number)
        out.append(number)
    return out


def parse_sweep_values(text: str) -> list:
    """Comma-separated values: numbers stay numbers ('1, 2.5' -> [1, 2.5]), anything else is a string."""
    items = [p.strip() for p in (text or "").strip().strip("[]").split(",") if p.strip()]
    values = []
    for item in items:
        try:
            value = yaml.safe_load(item)
        except yaml.YAMLError:
            value = item
        values.append(value if isinstance(value, (int, float, str, bool)) else item)
    return values


def parse_tags(text: str) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


# ------------------------------------------------------------------------------------ form -> spec
def hint_values(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    pairs = []
    for i in range(int(values.get("hint_count") or 0)):
        pairs.append({part: values.get(hint_key(i, part), default) for part, default in HINT_DEFAULTS.items()})
    return pairs


def spec_dict(values: Mapping[str, Any], problems: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The RunSpec mapping the form describes (not yet validated). Text fields that do not parse add a
    problem under their widget and are left out."""
    v = {**form_defaults(), **values}
    problems = problems if problems is not None else {}
    source = v["teacher_source"]
    data: dict[str, Any] = {
        "dataset": {"name": v["dataset"], "val_fraction": v["val_fraction"],
                    "augment": {"default": None, "on": True, "off": False}.get(v["augment"])},
        "student": v["student"],
        "epochs": v["epochs"], "batch_size": v["batch_size"], "device": v["device"],
        "devices": v["devices"], "nodes": v["nodes"], "grad_accumulation": v["grad_accumulation"],
        "sync_batchnorm": v["sync_batchnorm"],
        "precision": v["precision"], "seed": v["seed"],
        "tags": parse_tags(v["tags"]),
        "optimizer": {"name": v["optimizer"], "lr": v["lr"], "weight_decay": v["weight_decay"]},
        "schedule": {"name": v["schedule"], "warmup_epochs": v["warmup_epochs"]},
    }
    if (v.get("name") or "").strip():
        data["name"] = v["name"].strip()
    if v["dataset"] == "imagefolder":
        data["dataset"]["path"] = (v.get("data_path") or "").strip() or None
    if v["optimizer"] == "sgd":
        data["optimizer"].update(momentum=v["momentum"], nesterov=v["nesterov"])
    if v["clip_grad_norm"] is not None:  # empty = the spec's default (no clipping)
        data["optimizer"]["clip_grad_norm"] = v["clip_grad_norm"]
    if v["schedule"] == "step":
        try:
            data["schedule"]["milestones"] = parse_number_list(v["milestones"], integers=True)
        except ValueError as err:
            problems.setdefault("milestones", []).append(_sentence(f"{err}; give epochs like 10, 20"))
        data["schedule"]["gamma"] = v["gamma"]
    kind = v["transfer_kind"]
    data["transfer"] = {"kind": kind}
    if kind == "partial_labels":
        data["transfer"]["label_fraction"] = v["label_fraction"]
    elif kind == "noisy":
        data["transfer"]["noise_std"] = v["noise_std"]
    elif kind == "omit_classes":
        data["transfer"]["omit_classes"] = [int(c) for c in (v["omit_classes"] or [])]

    view = {name: v[view_key(name)] for name in InputViewSpec.model_fields}
    if any(view[name] != getattr(_NO_VIEW, name) for name in view):
        data["student_input"] = view
    if source != "none":
        members = [_primary_teacher(v)] + [{"source": "run", "run_id": r} for r in further_runs(v)]
        members += [member_teacher(v, i) for i in range(int(v.get("member_count") or 0))]
        data["teacher"] = members[0]
        if len(members) > 1:  # an ensemble: the teachers' probabilities combined at the run's ρ
            data["teacher"] = {"members": members, "combine": v.get("teacher_combine")}
            try:
                weights = parse_number_list(v.get("teacher_weights") or "")
            except ValueError as err:
                problems.setdefault("teacher_weights", []).append(_sentence(f"{err}; give one number per teacher"))
            else:
                if weights:
                    data["teacher"]["weights"] = weights
    if source != "none" or v.get("chain_kind") == "generations":  # later generations distil
        data["logit"] = {"method": v["method"], **_params_from(v, v["method"])}
    if source != "none":
        losses = []
        for i in range(int(v.get("loss_count") or 0)):
            method = v.get(loss_key(i))
            losses.append({"method": method, **(_params_from(v, method, loss_prefix(i)) if method else {})})
        if losses:
            data["losses"] = losses
        hints = []
        for i, h in enumerate(hint_values(v)):
            if not h["teacher"] or not h["student"]:
                problems.setdefault(hint_key(i, "teacher" if not h["teacher"] else "student"), []).append(
                    "Pick a layer for both sides of the pair, or remove the pair.")
                continue
            hint: dict[str, Any] = {"teacher_layer": h["teacher"], "student_layer": h["student"]}
            if h["mode"] == CUSTOM:
                hint.update(phi_t=h["phi_t"], phi_s=h["phi_s"], distance=h["distance"])
            else:
                hint["preset"] = h["mode"]
            if h["weight"] is not None:
                hint["weight"] = h["weight"]
            hints.append(hint)
        data["hints"] = hints
        if hints:
            data["hint_stage_epochs"] = v["hint_stage_epochs"]
    _advanced_spec(v, data)
    return data


_NO_VIEW = InputViewSpec()


def _primary_teacher(v: Mapping[str, Any]) -> dict[str, Any]:
    """The teacher chosen at the top of the teacher section, as a spec's teacher mapping."""
    source = v["teacher_source"]
    if source in ("zoo", "run"):
        return {"source": "run", "run_id": PENDING_TEACHER if source == "zoo" else v.get("teacher_run")}
    if source == "upload":
        return {"source": "checkpoint", "checkpoint": (v.get("teacher_checkpoint_path") or None),
                "model": v.get("teacher_upload_model") or None}
    return {"source": "torchvision", "model": v.get("teacher_tv_model"),
            "weights": (v.get("teacher_tv_weights") or "").strip() or None}


def further_runs(v: Mapping[str, Any]) -> list[str]:
    """The finished (or queued) runs added to the chosen teacher, in order, without repeats."""
    first = v.get("teacher_run") if v.get("teacher_source") == "run" else None
    return [r for r in dict.fromkeys(v.get("teacher_more_runs") or []) if r and r != first]


def member_teacher(v: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Further teacher `i` (a checkpoint or torchvision weights) as a spec's teacher mapping."""
    def get(part: str) -> Any:
        return v.get(member_key(i, part), MEMBER_DEFAULTS[part])

    if get("source") == "torchvision":
        return {"source": "torchvision", "model": get("tv_model"), "weights": (get("tv_weights") or "").strip() or None}
    return {"source": "checkpoint", "checkpoint": (get("checkpoint") or "").strip() or None,
            "model": get("model") or None}


def ensemble_size(v: Mapping[str, Any]) -> int:
    """How many teachers the form describes (1: a single teacher; 0: none)."""
    if v.get("teacher_source", "none") == "none":
        return 0
    return 1 + len(further_runs(v)) + int(v.get("member_count") or 0)


def member_widget(v: Mapping[str, Any], index: int) -> str:
    """The widget that owns ensemble member `index` (0: the teacher chosen first)."""
    if index == 0:
        return teacher_model_widget(v.get("teacher_source", "none")) if v.get("teacher_source") != "run" \
            else "teacher_run"
    runs = further_runs(v)
    if index <= len(runs):
        return "teacher_more_runs"
    i = index - 1 - len(runs)
    return member_key(i, "tv_model" if v.get(member_key(i, "source")) == "torchvision" else "checkpoint")


def teachers_with_notes(values: Mapping[str, Any], problems: Mapping[str, list[str]]) -> set[int]:
    """The teachers (by index: 0 alone, or an ensemble's members in the spec's order) whose own widgets carry a
    note: what the quality check finds wrong with such a teacher (a file that does not load, a model that
    does not fit the data) is said there already."""
    v = {**form_defaults(), **values}
    count = ensemble_size(v)
    if count <= 1:
        return {0} if any(problems.get(w) for w in TEACHER_WIDGETS) else set()
    return {i for i in range(count) if problems.get(member_widget(v, i))}


def chain_block(v: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec's `chain:` block the form describes (kdcore.chains), or None for one run."""
    kind = v.get("chain_kind", "none")
    if kind == "assistants":
        return {"students": [*(v.get("chain_assistants") or []), v.get("student")]}
    if kind == "generations":
        return {"generations": v.get("chain_generations")}
    return None


def teacher_spec_dict(values: Mapping[str, Any], student_data: Mapping[str, Any]) -> dict[str, Any]:
    """The run that trains a new zoo teacher: same dataset and optimiser, all labels, the full input, its
    own epochs."""
    v = {**form_defaults(), **values}
    data = copy.deepcopy(dict(student_data))
    for key in ("teacher", "logit", "hints", "losses", "hint_stage_epochs", "transfer", "name", "student_input"):
        data.pop(key, None)
    data["student"] = v["teacher_zoo_model"]
    data["epochs"] = v["teacher_epochs"]
    data["name"] = f"{v['teacher_zoo_model']} teacher on {v['dataset']}"
    return data


@dataclass(frozen=True)
class TeacherRun:
    """What the form needs to know about a teacher run from the store."""

    id: str
    dataset: str
    model: str
    status: str


@dataclass
class FormCheck:
    spec: RunSpec | None = None
    teacher_spec: RunSpec | None = None  # a new zoo teacher, submitted first
    sweep: tuple[str, list] | None = None
    chain: dict[str, Any] | None = None  # the `chain:` block: the spec queued as dependent links
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.spec is not None and not self.problems

    def count(self) -> int:
        return sum(len(m) for m in self.problems.values())


DeepCheck = Callable[[RunSpec, str | None], list[str]]


def default_deep_check(spec: RunSpec, teacher_model: str | None) -> list[str]:
    """kdcore's checks that build models: names, layers, teacher fit (import deferred: it loads torch)."""
    from kdcore.train.checks import check_spec

    return check_spec(spec, teacher_model=teacher_model)


# Widgets that choose the teacher: when the form has said what is missing there, the spec's own
# sentence about the teacher ("a run teacher needs run_id") would only repeat it.
TEACHER_WIDGETS = ("teacher_source", "teacher_run", "teacher_more_runs", "teacher_checkpoint_path",
                   "teacher_upload_model", "teacher_tv_model", "teacher_tv_weights")
def _teacher_stand_in(teacher: Any) -> Any:
    """What stands in for a teacher the spec refuses while the rest is checked: an ensemble without its
    weights first (the ensemble's own rule is about them), else a teacher run not queued yet."""
    if isinstance(teacher, dict) and "weights" in teacher and "members" in teacher:
        return {k: v for k, v in teacher.items() if k != "weights"}
    return {"source": "run", "run_id": PENDING_TEACHER}


_STAND_IN = {"teacher": _teacher_stand_in}


def _spec_problems(data: Mapping[str, Any], values: Mapping[str, Any], problems: dict[str, list[str]],
                   own: Mapping[str, list[str]], rename: Mapping[str, str] | None = None
                   ) -> tuple[RunSpec | None, RunSpec | None]:
    """Validate `data` in one pass (form_errors.validate_all) and add each problem under its widget,
    unless the form's own check (`own`) already explains that widget or the teacher."""
    spec, stand_in, found = validate_all(data, placeholders=_STAND_IN)
    # one teacher: the form's sentence about it replaces the spec's; an ensemble's members are each
    # mapped to their own widget, where the same rule applies
    teacher_explained = any(w in own for w in TEACHER_WIDGETS) and ensemble_size(values) <= 1
    for path, message, n in found:
        if teacher_explained and (path == "teacher" or path.startswith("teacher.")):
            continue
        widget = _widget_of(path, message, values)
        if rename and widget in rename:
            widget = rename[widget]
        if widget in own or (n > 0 and widget in problems):
            continue  # said already, or a consequence of a value set aside
        if path in ("", "spec"):
            message = in_words(message)
        bucket = problems.setdefault(widget, [])
        if message not in bucket:
            bucket.append(message)
    return spec, stand_in


# Field names that rules across fields speak of, in the words of the form's labels.
FIELD_WORDS = {"hint_stage_epochs": "the hint-only epochs", "batch_size": "the batch size",
               "grad_accumulation": "accumulation steps", "devices": "devices per node", "epochs": "the epochs",
               "hint pairs": "Hint pairs"}


def in_words(message: str) -> str:
    """A rule's sentence with the spec's field names in the form's words."""
    names = "|".join(re.escape(n) for n in FIELD_WORDS)
    message = re.sub(rf"\b({names})\b", lambda m: FIELD_WORDS[m.group(1).lower()], message, flags=re.IGNORECASE)
    return _sentence(message)


def _widget_of(path: str, message: str, values: Mapping[str, Any]) -> str:
    if path in ("", "spec"):
        low = message.lower()
        return next((w for word, w in _ROOT_RULES if word in low), GENERAL)
    return widget_for(path, values)


def _add(problems: dict[str, list[str]], more: Mapping[str, list[str]], *, skip_flagged: bool = False) -> None:
    """Add problems; with skip_flagged, a widget that has problems already gets none of these."""
    for key, msgs in more.items():
        if skip_flagged and problems.get(key):
            continue
        bucket = problems.setdefault(key, [])
        bucket += [m for m in msgs if m not in bucket]


def check_form(values: Mapping[str, Any], *, teacher_run: TeacherRun | None = None,
               deep_check: DeepCheck | None = default_deep_check,
               dataset_classes: int | None = None) -> FormCheck:
    """Validate the form in one pass: the form's own checks, every field rule of the spec (bad values
    set aside so the rules across fields still speak), the sweep's values and the deep checks, all
    mapped to widgets. Nothing waits for another problem to be fixed first."""
    v = {**form_defaults(), **values}
    result = FormCheck()
    own: dict[str, list[str]] = {}  # the form's own sentences: they speak first for their widget
    data = spec_dict(v, own)
    source = v["teacher_source"]

    if v["dataset"] == "imagefolder" and not (v.get("data_path") or "").strip():
        own.setdefault("data_path", []).append("Name the image folder (one subfolder per class).")
    if source == "run":
        _add(own, _teacher_run_problems(v, teacher_run))
    if source == "upload" and not (v.get("teacher_checkpoint_path") or "").strip():
        own.setdefault("teacher_checkpoint_path", []).append("Upload the teacher's checkpoint (.pt).")
    if source == "torchvision" and dataset_classes not in (None, 1000):
        own.setdefault("teacher_tv_model", []).append(_sentence(
            f"torchvision weights predict the 1000 ImageNet classes but this dataset has {dataset_classes}; "
            "use them with a 1000-class image folder, or pick another teacher"))

    for i in range(int(v.get("member_count") or 0)):
        member = member_teacher(v, i)
        if member["source"] == "checkpoint" and not member["checkpoint"]:
            own.setdefault(member_key(i, "checkpoint"), []).append("Upload this teacher's checkpoint (.pt).")
        elif member["source"] == "torchvision" and dataset_classes not in (None, 1000):
            own.setdefault(member_key(i, "tv_model"), []).append(
                f"Torchvision weights predict 1000 classes; this dataset has {dataset_classes}.")
    chain = chain_block(v)
    if chain is not None and v.get("sweep_on"):
        own.setdefault("chain_kind", []).append("A chain and a sweep cannot go together: turn the sweep off "
                                                "or queue one run.")
    if v.get("chain_kind") == "assistants" and not v.get("chain_assistants"):
        own.setdefault("chain_assistants", []).append("Pick at least one assistant model (larger than the "
                                                      "student, smaller than the teacher).")

    problems: dict[str, list[str]] = {k: list(m) for k, m in own.items()}
    spec, stand_in = _spec_problems(data, v, problems, own)
    pending = {"source": "run", "run_id": PENDING_TEACHER}
    if stand_in is not None and data.get("teacher") not in (None, pending) and \
            getattr(stand_in.teacher, "run_id", None) == PENDING_TEACHER:
        # the teacher itself was set aside: its layers cannot be checked against a stand-in
        stand_in = stand_in.model_copy(update={"hints": [], "losses": [], "hint_stage_epochs": 0})

    teacher_spec = None
    if source == "zoo":
        teacher_spec, _ = _spec_problems(teacher_spec_dict(v, data), v, problems, own,
                                         rename={"student": "teacher_zoo_model", "epochs": "teacher_epochs"})

    sweep = None
    if v.get("sweep_on"):
        field_name = v.get("sweep_field")
        raw = parse_sweep_values(v.get("sweep_values", ""))
        base = stand_in.to_dict() if stand_in is not None else data
        sweep_problems = sweep_value_problems(field_name, raw, base)
        if sweep_problems:
            problems.setdefault("sweep_values", []).extend(sweep_problems)
        else:
            sweep = (field_name, raw)

    teacher_model = {"zoo": v["teacher_zoo_model"], "run": teacher_run.model if teacher_run else None}.get(source)
    links: list[RunSpec] = []
    if chain is not None and stand_in is not None and not any(k.startswith("chain") for k in own):
        links = _chain_problems(stand_in, chain, v, problems, deep_check, teacher_model)
    if stand_in is not None and deep_check is not None and not links:
        try:
            deep = list(deep_check(stand_in, teacher_model))
            if teacher_spec is not None:  # the teacher run's own "student" is the teacher model
                for problem in deep_check(teacher_spec, None):
                    path, message = split_problem(problem)
                    deep.append(f"teacher.model: {message}" if path == "student" else problem)
        except KDError as err:
            deep = [str(err)]
        # a widget already explained keeps that one sentence (a stand-in value may have caused this one)
        _add(problems, map_problems(deep, v), skip_flagged=True)

    result.problems = problems
    result.spec = spec if not problems else None
    result.teacher_spec = teacher_spec
    result.sweep = sweep
    result.chain = chain if chain is not None and not problems else None
    return result


def _chain_problems(base: RunSpec, chain: dict[str, Any], v: Mapping[str, Any], problems: dict[str, list[str]],
                    deep_check: DeepCheck | None, teacher_model: str | None) -> list[RunSpec]:
    """Each link of the chain checked as the store will queue it: its fields, then the deep checks with
    the link before it as its teacher. Problems go under the chain's widgets, naming the link."""
    from kdcore.chains import parse_chain

    try:
        parsed, link_data = parse_chain({**base.to_dict(), "chain": chain})
    except SpecError as err:
        for problem in err.problems:
            path, message = split_problem(problem)
            if m := re.match(r"chain (?:link|generation) (\d+): (.*)", problem):
                where = "chain_kind"
                message = f"Link {m.group(1)}: {split_problem(m.group(2))[1] or m.group(2)}"
            else:
                where = widget_for(path, v) if path.startswith("chain") else "chain_kind"
            problems.setdefault(where, []).append(plain_sentence(message))
        return []
    links = [RunSpec.from_dict(link) for link in link_data]
    if deep_check is None:
        return links
    for k, link in enumerate(links):
        try:
            found = deep_check(link, links[k - 1].student if k else teacher_model)
        except KDError as err:
            found = [str(err)]
        for problem in found:
            message = split_problem(problem)[1] or problem
            text = plain_sentence(f"{parsed.kind} {k + 1} ({link.student}): {message}")
            bucket = problems.setdefault("chain_kind", [])
            if text not in bucket:
                bucket.append(text)
    return links


def sweep_value_problems(field_name: str, raw: list, base: Mapping[str, Any]) -> list[str]:
    """Every problem of a sweep's values at once: too few, repeated, or a value the field refuses (each
    value checked on its own against the rest of the form)."""
    if len(raw) < 2:
        return ["Give at least two values, separated by commas."]
    problems = []
    seen: list[Any] = []
    for value in raw:
        if any(value == s and type(value) is type(s) or (_is_number(value) and _is_number(s) and value == s)
               for s in seen):
            msg = f"{_shown(value)} is given twice: each value makes one run, so give each once."
            if msg not in problems:
                problems.append(msg)
        seen.append(value)
    for value in dict.fromkeys(map(_hashable, raw)):
        variant = copy.deepcopy(dict(base))
        variant.pop("name", None)
        _set_field(variant, field_name, _unhashable(value))
        _, _, found = validate_all(variant)
        for _path, message, n in found:
            if n:
                continue
            shown = _shown(_unhashable(value))
            message = re.sub(r" \(it is [^)]*\)", "", message)
            problems.append(message if message.startswith(shown) else
                            f"Value {shown}: {message[0].lower()}{message[1:]}")
    if field_name == "student":
        from kdcore.models import model_entry

        for name in dict.fromkeys(raw):
            try:
                model_entry(str(name))
            except KDError as err:
                problems.append(f"Value {_shown(name)}: {plain_sentence(str(err))}")
    return problems


def _set_field(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _hashable(value: Any) -> Any:
    return (type(value).__name__, value) if isinstance(value, bool) else value


def _unhashable(value: Any) -> Any:
    return value[1] if isinstance(value, tuple) else value


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value if len(value) <= 40 else value[:39] + '…'}'"
    return f"{value:g}" if _is_number(value) else str(value)


def _teacher_run_problems(v: Mapping[str, Any], teacher_run: TeacherRun | None) -> dict[str, list[str]]:
    if not v.get("teacher_run"):
        return {"teacher_run": ["Pick the run whose model is the teacher (runs appear here once submitted)."]}
    if teacher_run is None:
        return {"teacher_run": [f"There is no run {v['teacher_run']} in the store."]}
    if teacher_run.status in ("failed", "cancelled"):
        return {"teacher_run": [f"Run {teacher_run.id} {teacher_run.status}: it has no trained model to learn from."]}
    if teacher_run.dataset != v["dataset"]:
        return {"teacher_run": [f"Run {teacher_run.id} was trained on {teacher_run.dataset}, not {v['dataset']}."]}
    return {}


# ---- what the page reads from the store and session -------------------------------------------------
def form_values(session: Mapping[str, Any]) -> dict[str, Any]:
    """The form's current values (every default key, each hint pair's parts and each further method's
    parameters) out of the session."""
    values = {k: session.get(k, default) for k, default in form_defaults().items()}
    values.update({hint_key(i, p): session.get(hint_key(i, p))
                   for i in range(int(session.get("hint_count") or 0)) for p in HINT_DEFAULTS})
    for i in range(int(session.get("loss_count") or 0)):
        values.update({k: session.get(k, default) for k, default in loss_entry_defaults(i).items()})
    values.update(member_values(session))
    return values


def _final_accuracy(record: Any) -> float:
    acc = record.final.get("test/acc")
    return acc if acc is not None and acc == acc else 0.0  # NaN (no test set) counts as nothing


def teacher_candidates(records: Iterable[Any], dataset: str) -> list[Any]:
    """Runs that can teach on `dataset` (not failed or cancelled): finished runs first, the most accurate
    on top, since those are the likeliest teachers."""
    runs = [r for r in records if r.status.value not in ("failed", "cancelled") and r.dataset == dataset]
    runs.sort(key=lambda r: (r.status.value != "completed", -_final_accuracy(r)))
    return runs


def teacher_run_of(record: Any) -> TeacherRun:
    return TeacherRun(record.id, record.dataset, record.student, record.status.value)


def teacher_run_label(record: Any) -> str:
    """"name · model · status · accuracy · id" for the teacher-run picker (no accuracy while unknown)."""
    acc = record.final.get("test/acc")
    shown = f" · {acc:.1%}" if acc is not None and acc == acc else ""
    return f"{record.name} · {record.student} · {record.status.value}{shown} · {record.id}"


def find_teacher_run(store: Any, run_id: str | None, candidates: Sequence[Any]) -> tuple[Any | None, TeacherRun | None]:
    """The chosen teacher run as (record, TeacherRun). The record only when it is a candidate; a run on
    another dataset or a failed one still gives a TeacherRun so the check can explain; (None, None) when
    nothing is chosen or the store has no such run."""
    record = next((r for r in candidates if r.id == run_id), None) if run_id else None
    if record is not None:
        return record, teacher_run_of(record)
    if not run_id:
        return None, None
    try:
        return None, teacher_run_of(store.get(run_id))
    except KDError:
        return None, None


def teacher_model_name(values: Mapping[str, Any], teacher_run: TeacherRun | None,
                       checkpoint_model: Callable[[str], str | None]) -> str | None:
    """The teacher's architecture for the chosen source; an uploaded checkpoint's comes from the
    "architecture" picker, else from the checkpoint itself (`checkpoint_model(path)`)."""
    source = values.get("teacher_source")
    if source == "zoo":
        return values.get("teacher_zoo_model")
    if source == "run":
        return teacher_run.model if teacher_run else None
    if source == "upload":
        path = (values.get("teacher_checkpoint_path") or "").strip()
        return values.get("teacher_upload_model") or (checkpoint_model(path) if path else None)
    if source == "torchvision":
        return values.get("teacher_tv_model")
    return None


def add_hint_pair(session: MutableMapping[str, Any]) -> None:
    """Append a hint pair with default parts."""
    n = int(session["hint_count"])
    for part, v in HINT_DEFAULTS.items():
        session[hint_key(n, part)] = v
    session["hint_count"] = n + 1


def add_member(session: MutableMapping[str, Any]) -> None:
    """Append a further teacher (a checkpoint by default) to the ensemble."""
    n = int(session.get("member_count") or 0)
    session.update({member_key(n, part): v for part, v in MEMBER_DEFAULTS.items()})
    session["member_count"] = n + 1


def remove_member(session: MutableMapping[str, Any], i: int) -> None:
    """Remove further teacher `i`; the later ones move up one place and keep their values."""
    n = int(session.get("member_count") or 0)
    for j in range(i, n - 1):
        for part in MEMBER_DEFAULTS:
            session[member_key(j, part)] = session.get(member_key(j + 1, part), MEMBER_DEFAULTS[part])
    for part in MEMBER_DEFAULTS:
        session.pop(member_key(n - 1, part), None)
    session["member_count"] = n - 1


def member_values(session: Mapping[str, Any]) -> dict[str, Any]:
    """The further teachers' widget values out of the session (defaults where a widget is not drawn)."""
    return {member_key(i, p): session.get(member_key(i, p), d)
            for i in range(int(session.get("member_count") or 0)) for p, d in MEMBER_DEFAULTS.items()}


def teacher_models(values: Mapping[str, Any], first: str | None, run_models: Mapping[str, str],
                   checkpoint_model: Callable[[str], str | None]) -> list[str | None]:
    """Each teacher's architecture in the form's order (None where it is not known yet): `first` for the
    teacher chosen first, the runs' models, then each further checkpoint or torchvision teacher."""
    if values.get("teacher_source", "none") == "none":
        return []
    models: list[str | None] = [first, *(run_models.get(r) for r in further_runs(values))]
    for i in range(int(values.get("member_count") or 0)):
        member = member_teacher(values, i)
        if member["source"] == "torchvision":
            models.append(member["model"])
        else:
            models.append(member["model"] or (checkpoint_model(member["checkpoint"]) if member["checkpoint"] else None))
    return models


def student_shape(values: Mapping[str, Any], input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The student's input shape: the dataset's, through the view the form describes (when it is valid)."""
    try:
        view = InputViewSpec(**{name: values.get(view_key(name), getattr(_NO_VIEW, name))
                                for name in InputViewSpec.model_fields})
    except ValueError:
        return tuple(input_shape)
    return view.shape_for(tuple(input_shape))


def add_loss_entry(session: MutableMapping[str, Any]) -> None:
    """Append a further (feature or relation) method with its defaults."""
    n = int(session.get("loss_count") or 0)
    session.update(loss_entry_defaults(n))
    session["loss_count"] = n + 1


def remove_loss_entry(session: MutableMapping[str, Any], i: int) -> None:
    """Remove entry `i`; the later entries move up one place so their widgets keep their values."""
    n = int(session.get("loss_count") or 0)
    for j in range(i, n - 1):
        later = loss_entry_defaults(j + 1)
        for key in later:
            session[key.replace(f"loss_{j + 1}", f"loss_{j}", 1)] = session.get(key, later[key])
    for key in loss_entry_defaults(n - 1):
        session.pop(key, None)
    session["loss_count"] = n - 1


def remove_hint_pair(session: MutableMapping[str, Any], i: int) -> None:
    """Remove pair `i`; the later pairs move up one place so their widgets keep their values."""
    n = int(session["hint_count"])
    for j in range(i, n - 1):
        for part in HINT_DEFAULTS:
            session[hint_key(j, part)] = session.get(hint_key(j + 1, part))
    for part in HINT_DEFAULTS:
        session.pop(hint_key(n - 1, part), None)
    session["hint_count"] = n - 1


def _teacher_queued(data: dict[str, Any], teacher_id: str) -> dict[str, Any]:
    """The spec with the new teacher's run id where the form held its place (alone or in an ensemble)."""
    teacher = copy.deepcopy(data["teacher"])
    for member in teacher.get("members", [teacher]):
        if member.get("run_id") == PENDING_TEACHER:
            member["run_id"] = teacher_id
    return {**data, "teacher": teacher}


def submit_form(store: Any, check: FormCheck, *, owner: str | None = None) -> list[str]:
    """Queue what the form describes and return the new run ids, the one to open first:
    the new teacher (if any) is queued first and the student waits for it."""
    if not check.ok:
        raise SpecError([p for msgs in check.problems.values() for p in msgs] or ["the form is not complete"])
    spec = check.spec
    ids: list[str] = []
    if check.teacher_spec is not None:
        teacher_id = store.submit(check.teacher_spec, owner=owner)
        spec = RunSpec.from_dict(_teacher_queued(spec.to_dict(), teacher_id))
        ids.append(teacher_id)
    if check.chain is not None:  # dependent links, each waiting for the one before
        return store.submit_chain({**spec.to_dict(), "chain": check.chain}, owner=owner) + ids
    if check.sweep is not None:
        field_name, sweep_values = check.sweep
        student_ids = store.submit_sweep(spec, field_name, sweep_values, owner=owner)
    else:
        student_ids = [store.submit(spec, owner=owner)]
    return student_ids + ids


# ------------------------------------------------------------------------------------ spec -> form
def values_from_spec(spec: RunSpec) -> dict[str, Any]:
    """Form values that rebuild `spec` (Duplicate opens the form prefilled with these)."""
    v: dict[str, Any] = {**FORM_ONLY, **_method_param_defaults()}
    v.update(
        name=spec.name or "", tags=", ".join(spec.tags), dataset=spec.dataset.name, data_path=spec.dataset.path or "",
        val_fraction=spec.dataset.val_fraction,
        augment={None: "default", True: "on", False: "off"}[spec.dataset.augment],
        student=spec.student, epochs=spec.epochs, batch_size=spec.batch_size, device=spec.device,
        devices=spec.devices, nodes=spec.nodes, grad_accumulation=spec.grad_accumulation,
        sync_batchnorm=spec.sync_batchnorm,
        precision=spec.precision, seed=spec.seed,
        optimizer=spec.optimizer.name, lr=spec.optimizer.lr, momentum=spec.optimizer.momentum,
        weight_decay=spec.optimizer.weight_decay, nesterov=spec.optimizer.nesterov,
        clip_grad_norm=spec.optimizer.clip_grad_norm,
        schedule=spec.schedule.name, warmup_epochs=spec.schedule.warmup_epochs,
        milestones=", ".join(map(str, spec.schedule.milestones)), gamma=spec.schedule.gamma,
        transfer_kind=spec.transfer.kind, label_fraction=spec.transfer.label_fraction,
        noise_std=spec.transfer.noise_std, omit_classes=list(spec.transfer.omit_classes),
        method=spec.logit.method, hint_stage_epochs=spec.hint_stage_epochs, hint_count=len(spec.hints),
        loss_count=len(spec.losses),
    )
    v.update({param_key(spec.logit.method, k): val for k, val in spec.logit.model_dump().items() if k != "method"})
    for i, params in enumerate(spec.losses):
        v.update(loss_entry_defaults(i))
        v[loss_key(i)] = params.method
        v.update({param_key(params.method, k, loss_prefix(i)): val
                  for k, val in params.model_dump().items() if k != "method"})
    v.update(_view_values(spec.student_input or _NO_VIEW))
    v.update(_advanced_values(spec))
    order = _teacher_values(spec, v)  # form order of the ensemble's members (the form lists runs first)
    for i, h in enumerate(spec.hints):
        v[hint_key(i, "teacher")] = _renumber_member(h.teacher_layer, order)
        v[hint_key(i, "student")] = h.student_layer
        v[hint_key(i, "mode")] = h.preset or CUSTOM
        v[hint_key(i, "phi_t")] = h.phi_t or HINT_DEFAULTS["phi_t"]
        v[hint_key(i, "phi_s")] = h.phi_s or HINT_DEFAULTS["phi_s"]
        v[hint_key(i, "distance")] = h.distance or HINT_DEFAULTS["distance"]
        v[hint_key(i, "weight")] = h.weight
    return v


def _teacher_values(spec: RunSpec, v: dict[str, Any]) -> list[int]:
    """Fill the teacher widgets from the spec; returns the spec's member indices in the form's order
    (the first teacher, further runs, then checkpoints and torchvision members)."""
    members = teacher_members(spec.teacher)
    if not members:
        v["teacher_source"] = "none"
        return []
    first = members[0]
    if first.source == "run":
        v.update(teacher_source="run", teacher_run=first.run_id)
    elif first.source == "checkpoint":
        v.update(teacher_source="upload", teacher_checkpoint_path=first.checkpoint or "", teacher_upload_model=first.model)
    else:
        v.update(teacher_source="torchvision", teacher_tv_model=first.model, teacher_tv_weights=first.weights or "")
    runs = [i for i, m in enumerate(members) if i and m.source == "run"]
    others = [i for i, m in enumerate(members) if i and m.source != "run"]
    v["teacher_more_runs"] = [members[i].run_id for i in runs]
    v["member_count"] = len(others)
    for n, i in enumerate(others):
        m = members[i]
        if m.source == "checkpoint":
            v.update({member_key(n, "source"): "upload", member_key(n, "checkpoint"): m.checkpoint or "",
                      member_key(n, "model"): m.model})
        else:
            v.update({member_key(n, "source"): "torchvision", member_key(n, "tv_model"): m.model,
                      member_key(n, "tv_weights"): m.weights or ""})
    order = [0, *runs, *others]
    if isinstance(spec.teacher, EnsembleSpec):
        v["teacher_combine"] = spec.teacher.combine
        if spec.teacher.weights is not None:
            v["teacher_weights"] = ", ".join(f"{spec.teacher.weights[i]:g}" for i in order)
    return order


def _renumber_member(layer: str, order: list[int]) -> str:
    """'teacher2.layer3' in the spec's member numbering -> the same member in the form's numbering."""
    m = re.fullmatch(r"teacher(\d+)\.(.+)", layer or "")
    if not m or len(order) < 2 or int(m.group(1)) not in order:
        return layer
    return f"teacher{order.index(int(m.group(1)))}.{m.group(2)}"


def member_layer(layer: str) -> tuple[int, str]:
    """'teacher1.stage2' -> (1, 'stage2'); a layer of a single teacher -> (0, layer)."""
    m = re.fullmatch(r"teacher(\d+)\.(.+)", layer or "")
    return (int(m.group(1)), m.group(2)) if m else (0, layer)


# ------------------------------------------------------------------------------------ devices
def batch_sentence(batch_size: int, devices: int, nodes: int, grad_accumulation: int) -> str:
    """How the global batch is shared: the spec's batch_size is the global batch, each device takes
    batch_size / (devices × nodes × accumulation) per forward pass."""
    share = devices * nodes * grad_accumulation
    if share <= 0 or batch_size % share:
        return f"The batch size {batch_size} must divide evenly over {share} micro-batches."
    parts = [f"{batch_size // share} per device", f"{devices} device{'s' if devices > 1 else ''}",
             f"{nodes} machine{'s' if nodes > 1 else ''}",
             f"{grad_accumulation} accumulation step{'s' if grad_accumulation > 1 else ''}"]
    return f"Global batch {batch_size} = " + " × ".join(parts) + " (each optimiser step sees all of it)."


def device_capacity_note(devices: int, nodes: int, workers: Sequence[tuple[str, str, int]]) -> str | None:
    """A plain sentence when the registered workers (name, machine, devices it owns) cannot take this
    run, None when they can: one worker with `devices` for one node, or such workers on `nodes` different
    machines (one node each). The run is queued either way and waits for workers that fit."""
    wanted = f"{devices} device{'s' if devices > 1 else ''}"
    if not workers:
        return f"No worker is running: the run waits in the queue for {'a worker' if nodes == 1 else nodes} " \
               f"{'with' if nodes == 1 else 'machines with a worker owning'} {wanted}."
    if nodes > 1:
        machines = sorted({host for _, host, n in workers if n >= devices})
        if len(machines) >= nodes:
            return None
        return (f"This run spans {nodes} machines with {wanted} each, and {len(machines)} machine"
                f"{' has' if len(machines) == 1 else 's have'} a registered worker owning that many: it waits in "
                f"the queue until workers on {nodes} machines can take it (`python -m kdcore worker "
                f"--devices {devices}` on each).")
    name, _, most = max(workers, key=lambda w: w[2])
    if devices > most:
        return (f"This run asks for {wanted} but the largest registered worker ({name}) owns {most}: it waits "
                f"in the queue until a worker with {devices} starts (`python -m kdcore worker --devices {devices}`).")
    return None


# ------------------------------------------------------------------------------------ uploads
def save_upload(data: bytes, filename: str, folder: Path) -> Path:
    """Keep an uploaded checkpoint under KD_HOME/uploads, named by its content so re-uploads are free.
    It is only ever read with torch.load(weights_only=True)."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(filename).stem)[:40] or "checkpoint"
    path = folder / f"{stem}-{digest}.pt"
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path
