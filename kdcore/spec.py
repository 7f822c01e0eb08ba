"""RunSpec: the one object that describes a run. The dashboard form builds it, the store saves it as
JSON, the worker loads it, the trainer consumes it and `python -m kdcore train spec.yaml` reads it."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SerializeAsAny,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from kdcore.errors import KDError
from kdcore.methods.params import MethodParams


class SpecError(KDError):
    """A spec that cannot run. `problems` lists one sentence per bad field, each naming the field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


MAX_TEXT = 1000  # characters in any text field: names, paths, tags


class _Strict(BaseModel):
    # Unknown keys are refused so a typo in YAML ("rhoo: 4") is reported, not silently ignored.
    # Numbers must be finite (rho: .inf would only fail in the worker) and text bounded.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              str_max_length=MAX_TEXT, defer_build=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL cannot store a NUL character, SQLite can: refused here so both behave the same.
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and "\x00" in v for v in items):
            raise ValueError("must not contain a NUL character")
        return value


class DataSpec(_Strict):
    name: str = "digits"
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    augment: bool | None = Field(None, description="None = the dataset's default augmentation")
    path: str | None = Field(None, description="image folder, relative to the data root")
    train_limit: int | None = Field(None, ge=1, le=10**9, description="use only a class-stratified subset of this many "
                                                            "training samples (quick experiments)")


class TeacherSpec(_Strict):
    """Where the teacher comes from: a zoo model with a checkpoint file, a finished run, or torchvision weights."""

    source: Literal["checkpoint", "run", "torchvision"] = "checkpoint"
    model: str | None = None
    checkpoint: str | None = None
    run_id: str | None = None
    weights: str | None = Field(None, description="torchvision weights name, e.g. DEFAULT")

    @model_validator(mode="after")
    def _source_fields(self) -> "TeacherSpec":
        if self.source == "checkpoint" and not self.checkpoint:
            raise ValueError("a checkpoint teacher needs `checkpoint` (a file path)")
        if self.source == "run" and not self.run_id:
            raise ValueError("a run teacher needs `run_id`")
        if self.source == "torchvision" and not (self.model and self.model.startswith("tv_")):
            raise ValueError("a torchvision teacher needs `model` naming a tv_* model, e.g. tv_resnet18")
        return self


MAX_MEMBERS = 16


class EnsembleSpec(_Strict):
    """Several teachers whose class probabilities are combined at the run's temperature ρ:
    `mean` averages the probabilities, `geometric` averages the log-probabilities and renormalises.
    Members are named teacher0, teacher1, ... so a hint pair reads `teacher1.layer3`."""

    members: list[TeacherSpec] = Field(min_length=2, max_length=MAX_MEMBERS)
    combine: Literal["mean", "geometric"] = "mean"
    weights: list[float] | None = Field(None, description="one non-negative weight per member (default: equal)")

    @model_validator(mode="after")
    def _weights(self) -> "EnsembleSpec":
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError(f"weights must give one weight per member ({len(self.members)})")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative and not all zero")
        return self

    @property
    def source(self) -> str:
        return "ensemble"

    @property
    def member_names(self) -> list[str]:
        return [f"teacher{i}" for i in range(len(self.members))]

    @property
    def normalised_weights(self) -> list[float]:
        w = self.weights or [1.0] * len(self.members)
        return [v / sum(w) for v in w]


def _teacher_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "ensemble" if "members" in value else "single"
    return "ensemble" if isinstance(value, EnsembleSpec) else "single"


AnyTeacher = Annotated[Annotated[TeacherSpec, Tag("single")] | Annotated[EnsembleSpec, Tag("ensemble")],
                       Discriminator(_teacher_kind)]


def teacher_members(teacher: TeacherSpec | EnsembleSpec | None) -> list[TeacherSpec]:
    """The single teachers a run reads: one, the members of an ensemble, or none."""
    if teacher is None:
        return []
    return list(teacher.members) if isinstance(teacher, EnsembleSpec) else [teacher]


class InputViewSpec(_Strict):
    """The student's own view of each sample; the teacher keeps the full input (resolution-based KD).
    Applied in order: grey, centre crop, resize, noise."""

    size: int | None = Field(None, ge=1, le=4096, description="resize the (square) input to size × size")
    grey: bool = Field(False, description="average the colour channels to one")
    crop: int | None = Field(None, ge=1, le=4096, description="centre crop of crop × crop before resizing")
    noise_std: float = Field(0.0, ge=0, le=1000, description="Gaussian noise added to the student's input")

    @property
    def is_identity(self) -> bool:
        return self.size is None and not self.grey and self.crop is None and self.noise_std == 0

    def shape_for(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The student's input shape given the dataset's (C, H, W)."""
        c, h, w = input_shape
        if self.grey:
            c = 1
        if self.crop is not None:
            h, w = min(h, self.crop), min(w, self.crop)
        if self.size is not None:
            h = w = self.size
        return (c, h, w)


# ---- methods: parameter models come from the method registry (kdcore/methods/) -----------------------
# Fields of the logit block before each method had its own parameters model (DKD read `alpha` as its
# cross-entropy weight and kept its own α, β, warm-up in dkd_*). A stored spec always carries dkd_*.
_LEGACY_LOGIT_KEYS = {"dkd_alpha", "dkd_beta", "dkd_warmup_epochs"}
_LEGACY_KEPT = {"kd": ("rho", "alpha", "beta", "soft_loss", "rho_squared"), "logit_matching": ("alpha", "beta")}


def migrate_logit(data: Any) -> Any:
    """A logit block written in the earlier flat form (with dkd_* fields) in today's form; others as given."""
    if not isinstance(data, dict) or not (_LEGACY_LOGIT_KEYS & data.keys()):
        return data
    method = data.get("method", "kd")
    if method == "dkd":
        moved = {"method": "dkd", "alpha": data.get("dkd_alpha", 1.0), "beta": data.get("dkd_beta", 8.0),
                 "warmup_epochs": data.get("dkd_warmup_epochs", 20), "ce_weight": data.get("alpha", 0.1)}
        if "rho" in data:
            moved["rho"] = data["rho"]
        return moved
    kept = _LEGACY_KEPT.get(method)
    if kept is None:
        raise ValueError("dkd_alpha, dkd_beta and dkd_warmup_epochs belong to DKD only; write "
                         "`logit: {method: dkd, alpha: ..., beta: ..., warmup_epochs: ..., ce_weight: ...}`")
    return {"method": method, **{k: data[k] for k in kept if k in data}}


def _loss_method(item: Any) -> Any:
    """One entry of `losses`, validated by its method's parameters model (errors keep the entry's index)."""
    from kdcore.methods import parse_params

    return parse_params(item, slot="losses", where="an entry of losses")


def _default_logit() -> MethodParams:
    from kdcore.methods import get_method

    return get_method("kd").params()


class HintSpec(_Strict):
    """One (hint, guided) pair: L_FB = weight · D(Φ_t(f_t), Φ_s(f_s)). A preset fills Φ, D and weight."""

    teacher_layer: str
    student_layer: str
    preset: str | None = Field(None, description="a registered hint-pair method: fitnets, at, nst, ofd, ...")
    phi_t: Literal["identity", "attention", "margin_relu"] | None = None
    phi_s: Literal["identity", "regressor", "attention"] | None = None
    distance: Literal["l1", "l2", "mmd", "kl", "partial_l2"] | None = None
    weight: float | None = Field(None, ge=0)

    @field_validator("preset")
    @classmethod
    def _registered_preset(cls, v: str | None) -> str | None:
        if v is not None:
            from kdcore.methods import method_names

            presets = method_names(slot="hints")
            if v not in presets:
                raise ValueError(f"unknown hint preset {v!r}; choose one of: {', '.join(presets)}")
        return v

    @model_validator(mode="after")
    def _preset_or_custom(self) -> "HintSpec":
        if self.preset is None and None in (self.phi_t, self.phi_s, self.distance):
            raise ValueError("a hint pair needs a preset or all of phi_t, phi_s and distance")
        return self


class TransferSpec(_Strict):
    """The transfer set (the survey's noisy-data motive)."""

    kind: Literal["labelled", "partial_labels", "noisy", "omit_classes"] = "labelled"
    label_fraction: float = Field(0.05, gt=0, le=1, description="partial_labels: fraction of train labels kept")
    noise_std: float = Field(0.0, ge=0, le=1000, description="noisy: std of Gaussian noise added to the inputs")
    omit_classes: list[int] = Field(default_factory=list, max_length=10_000,
                                    description="omit_classes: classes removed from the transfer set")

    @model_validator(mode="after")
    def _kind_fields(self) -> "TransferSpec":
        if self.kind == "omit_classes" and not self.omit_classes:
            raise ValueError("omit_classes needs at least one class in `omit_classes`")
        if self.kind == "noisy" and self.noise_std <= 0:
            raise ValueError("a noisy transfer set needs noise_std > 0")
        return self


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, le=100)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    nesterov: bool = False
    clip_grad_norm: float | None = Field(None, gt=0, le=10**6, description="clip the gradients' total norm to this "
                                         "before each step (None = no clipping): steadies a small student whose "
                                         "distillation loss makes its first steps too large")


class ScheduleSpec(_Strict):
    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0, le=10_000)
    milestones: list[int] = Field(default_factory=list, max_length=1000,
                                  description="step: epochs at which lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0, le=1)


class EvaluationSpec(_Strict):
    """When the student is scored. Validation picks the epoch; the test set is read only where a summary can
    select (kdcore.summary): at epochs where validation accuracy improved, and at the last epoch."""

    val_every: int = Field(1, ge=1, description="validate every N epochs (the last epoch always)")
    test: Literal["selected", "every_epoch"] = Field(
        "selected", description="selected: test only when validation improves and at the end; "
                                "every_epoch: a test curve for teaching (never used for selection)")


class RunSpec(_Strict):
    name: str | None = None
    dataset: DataSpec = Field(default_factory=DataSpec)
    student: str = "mlp_64"
    teacher: AnyTeacher | None = Field(None, description="no teacher = plain supervised training; "
                                                         "{members: [...]} = an ensemble")
    student_input: InputViewSpec | None = Field(None, description="the student's view of the input "
                                                                  "(downscaled, grey, cropped, noisy)")
    logit: SerializeAsAny[MethodParams] = Field(
        default_factory=_default_logit,
        description="the logit method and its parameters: {method: kd, rho: 4, ...}; ignored without a teacher")
    hints: list[HintSpec] = Field(default_factory=list, max_length=64)
    losses: list[Annotated[SerializeAsAny[MethodParams], BeforeValidator(_loss_method)]] = Field(
        default_factory=list, max_length=64, description="further feature or relation methods, each {method: name, ...}")
    hint_stage_epochs: int = Field(0, ge=0, le=10_000, description="FitNets two-stage: epochs of hint-only training before KD")
    transfer: TransferSpec = Field(default_factory=TransferSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    eval_batch_size: int | None = Field(None, ge=1, le=1_048_576, description="None = chosen per device (128 on a CPU, 1024 on "
                                                                 "a GPU: large CPU batches churn page faults)")
    checkpoint_every_s: float = Field(60.0, ge=0, le=10**7, description="at most one checkpoint every this many seconds, "
                                                              "and one at the end; 0 = after every epoch")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    devices: int = Field(1, ge=1, le=1024, description="processes per node, one per GPU (CPU processes with gloo); "
                         "batch_size stays the global batch")
    nodes: int = Field(1, ge=1, le=1024, description="machines the run spans (they meet through c10d rendezvous)")
    grad_accumulation: int = Field(1, ge=1, le=4096, description="micro-batches per optimiser step, so a run "
                                   "keeps its global batch on fewer devices")
    sync_batchnorm: bool = Field(False, description="over several GPUs: BatchNorm statistics over the global "
                                 "batch (SyncBatchNorm) rather than each device's share")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    compile: bool = Field(False, description="torch.compile the student (slower start, often faster steps)")
    channels_last: bool | None = Field(None, description="None = on for conv nets on CUDA")
    teacher_cache: Literal["auto", "off"] = Field("auto", description="auto: reuse the teacher's logits where its "
                                                  "inputs repeat; off: a teacher forward on every batch")
    teacher_cache_views: int = Field(8, ge=1, le=256, description="with augmentation: the teacher's logits are "
                                     "cached for this many augmented views of each sample, epoch e showing view "
                                     "(e - 1) mod views")
    probe_size: int = Field(64, ge=0, le=1024, description="fixed test samples whose predictions are kept "
                            "each epoch (one per class at least); 0 = none")
    tags: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError("device must be auto, cpu, mps, cuda or cuda:N")
        return v

    @field_validator("logit", mode="before")
    @classmethod
    def _logit_method(cls, v: Any) -> Any:
        from kdcore.methods import parse_params

        return parse_params(migrate_logit(v), slot="logit", where="logit")

    @model_validator(mode="after")
    def _teacher_needed(self) -> "RunSpec":
        if self.teacher is None and self.hints:
            raise ValueError("hint pairs need a teacher")
        if self.teacher is None and self.losses:
            raise ValueError("losses (feature and relation methods) need a teacher")
        if self.hint_stage_epochs and not self.hints:
            raise ValueError("hint_stage_epochs (FitNets two-stage) needs at least one hint pair")
        if self.hint_stage_epochs >= self.epochs:
            raise ValueError("hint_stage_epochs must be fewer than epochs")
        share = self.world_size * self.grad_accumulation
        if self.batch_size % share:
            raise ValueError(f"batch_size {self.batch_size} (the global batch) must be a multiple of devices × "
                             f"nodes × grad_accumulation = {share}")
        return self

    @property
    def world_size(self) -> int:
        """Processes the run spans: devices per node × nodes."""
        return self.devices * self.nodes

    @property
    def device_batch_size(self) -> int:
        """Samples each process takes per forward pass (a micro-batch)."""
        return self.batch_size // (self.world_size * self.grad_accumulation)

    # ---- derived, read-only views -------------------------------------------------------------
    @property
    def is_distillation(self) -> bool:
        return self.teacher is not None

    @property
    def method_label(self) -> str:
        """Short method name for tables: 'scratch', 'KD ρ=4', 'FitNets + KD', ..."""
        if self.teacher is None:
            return "scratch"
        presets = sorted({h.preset or "custom hint" for h in self.hints})
        others = [params.label() for params in self.losses]
        return " + ".join(presets + others + [self.logit.label()])

    @property
    def temperature(self) -> float:
        """The logit method's temperature ρ (1 for a method without one), for soft-label views."""
        rho = getattr(self.logit, "rho", None)
        return float(rho) if isinstance(rho, (int, float)) else 1.0

    # ---- YAML / JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        # libyaml's emitter when PyYAML has it: the same text, several times faster (every run writes its spec)
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump(self.to_dict(), Dumper=dumper, sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise SpecError(format_validation_error(err)) from None

    @classmethod
    def from_yaml(cls, text: str) -> "RunSpec":
        data = parse_spec_yaml(text)
        data.pop("sweep", None)
        return cls.from_dict(data)


MAX_SPEC_CHARS = 1_000_000  # a spec file's text
MAX_SPEC_VALUES = 10_000  # values in a spec once YAML aliases are expanded (each alias repeats its target)
MAX_SWEEP_RUNS = 1000
MAX_SWEEP_VALUES = 1_000_000  # runs × values per run: what expanding a sweep copies and validates


def parse_spec_yaml(text: str) -> dict[str, Any]:
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError([f"the spec has {len(text):,} characters; a spec has at most {MAX_SPEC_CHARS:,}"])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError([f"the spec is not valid YAML ({err.__class__.__name__}: "
                         f"{_short(str(err).splitlines()[0], 200)})"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(["the spec must be a YAML mapping of fields (name: value)"])
    _check_expanded_size(data)
    return data


def _check_expanded_size(data: Any) -> int:
    """Refuse a structure with more than MAX_SPEC_VALUES values counted as copying would (a YAML alias
    bomb is tiny as text and as loaded objects, and enormous once copied, validated or printed)."""
    seen, stack = 0, [data]
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_SPEC_VALUES:
            raise SpecError([f"the spec expands to more than {MAX_SPEC_VALUES:,} values "
                             "(YAML aliases repeat what they point to); write it out without them"])
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return seen


def _short(value: Any, limit: int = 60) -> str:
    """A value as it appears in a message: never longer than `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _read_spec_text(path: Path) -> str:
    if not path.exists():
        raise SpecError([f"spec file {path} does not exist"])
    if not path.is_file():  # a folder, /dev/zero, a pipe: never read it
        raise SpecError([f"spec file {path} is not a regular file"])
    if path.stat().st_size > MAX_SPEC_CHARS * 4:
        raise SpecError([f"spec file {path} is larger than a spec can be"])
    return path.read_text()


def format_validation_error(err: ValidationError) -> list[str]:
    """One sentence per problem, each starting with the dotted field path."""
    problems = []
    for e in err.errors():
        parts = list(e["loc"])
        if len(parts) > 1 and parts[0] == "teacher" and parts[1] in ("single", "ensemble"):
            del parts[1]  # the union's tag: the user wrote one teacher or an ensemble, never the tag
        loc = ".".join(str(p) for p in parts) or "spec"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            in_method = e["loc"] and e["loc"][0] in ("logit", "losses")
            msg = "is not a known field of this method" if in_method else "is not a known field"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], (dict, list)):
            msg = f"{msg} (got {_short(repr(e['input']))})"
        problems.append(f"{loc}: {msg}")
    return problems


def load_spec(path: str | Path) -> RunSpec:
    """One run's spec from a file; a file holding a sweep is refused (submit queues its runs)."""
    path = Path(path)
    data = parse_spec_yaml(_read_spec_text(path))
    if "sweep" in data:
        raise SpecError([f"sweep: {path.name} is a sweep, and this runs a single spec; queue its runs with "
                         f"`python -m kdcore submit {path}` (or remove the sweep block)"])
    if "chain" in data:
        raise SpecError([f"chain: {path.name} is a chain of runs, and this runs a single spec; queue its links "
                         f"with `python -m kdcore submit {path}` (or remove the chain block)"])
    return RunSpec.from_dict(data)


# ---- sweeps ----------------------------------------------------------------------------------------

class SweepSpec(_Strict):
    """One field swept over values: `sweep: {field: logit.rho, values: [1, 2, 4, 8, 16]}`. A list of
    several fields (`fields: [logit.alpha, logit.beta]`, values as pairs) sweeps them together."""

    field: str | None = None
    fields: list[str] | None = None
    values: list[Any] = Field(min_length=1, max_length=MAX_SWEEP_RUNS)

    @model_validator(mode="after")
    def _one_field_form(self) -> "SweepSpec":
        if (self.field is None) == (self.fields is None):
            raise ValueError("a sweep names either `field` or `fields`")
        return self

    @property
    def paths(self) -> list[str]:
        return [self.field] if self.field else list(self.fields or [])


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {} if node.get(key) is None else node[key]
        if not isinstance(node[key], dict):
            raise SpecError([f"sweep: {dotted} does not name a field"])
        node = node[key]
    node[keys[-1]] = value


def expand_sweep(data: dict[str, Any]) -> tuple[list[RunSpec], SweepSpec | None]:
    """A spec mapping with an optional `sweep:` block becomes one RunSpec per value."""
    _check_expanded_size(data)
    data = copy.deepcopy(data)
    raw = data.pop("sweep", None)
    if raw is None:
        return [RunSpec.from_dict(data)], None
    try:
        sweep = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(["sweep." + p for p in format_validation_error(err)]) from None
    if len(sweep.values) * _check_expanded_size(data) > MAX_SWEEP_VALUES:
        raise SpecError([f"sweep: {len(sweep.values)} runs of a spec this large exceed what one sweep may "
                         f"hold; split it into smaller sweeps"])
    specs = []
    for value in sweep.values:
        values = value if sweep.fields else [value]
        if len(values) != len(sweep.paths):
            raise SpecError([f"sweep.values: {_short(value)} must give one value per field in {sweep.paths}"])
        variant = copy.deepcopy(data)
        for path, v in zip(sweep.paths, values):
            _set_path(variant, path, v)
        label = ", ".join(f"{p}={_short(v, 40)}" for p, v in zip(sweep.paths, values))
        variant["name"] = f"{data.get('name') or 'sweep'} [{label}]"
        try:
            specs.append(RunSpec.from_dict(variant))
        except SpecError as err:
            raise SpecError([f"sweep value {label}: {p}" for p in err.problems]) from None
    return specs, sweep


def load_spec_file(path: str | Path) -> tuple[list[RunSpec], SweepSpec | None]:
    """Read a YAML spec that may hold a sweep."""
    return expand_sweep(parse_spec_yaml(_read_spec_text(Path(path))))
