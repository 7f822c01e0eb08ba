"""One trainer for every run: scratch baselines, teachers, logit KD, hint methods, two-stage FitNets."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdcore import metrics_csv
from kdcore.errors import KDError, OutOfMemoryError, TrainingDivergedError
from kdcore.methods.api import BuildContext
from kdcore.paths import run_dir
from kdcore.spec import EnsembleSpec, RunSpec, TeacherSpec
from kdcore.train import distributed as dist_run
from kdcore.train.callbacks import NullCallbacks, TrainCallbacks
from kdcore.train.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    load_checkpoint,
    load_model_from_checkpoint,
    model_record,
    save_atomic,
)
from kdcore.train.distiller import Distiller, build_logit_loss_for, build_methods, resolve_hints
from kdcore.train.ensemble import EnsembleTeacher
from kdcore.train.fidelity import accuracy, expected_calibration_error, fidelity_report
from kdcore.train.health import CollapseWatch
from kdcore.train.reporting import REPORT_INTERVAL_S, Reporter, StepInterval, interval_metrics
from kdcore.train.split_logits import cached_split_logits, evaluation_key, teacher_file
from kdcore.train.teacher_cache import TeacherCache
from kdcore.train.transfer import UNLABELLED, TransferSet, build_transfer_set
from kdcore.train.views import InputView

PROBES_NAME = "probes.pt"
SPLIT_SEED = 0  # data splits are fixed across runs so every run is scored on the same validation set
EVAL_BATCH = {"cpu": 128, "default": 1024}  # big CPU batches churn page faults; a GPU wants them big


@dataclass
class TrainResult:
    status: str
    epochs_done: int
    step: int
    final: dict[str, float]
    out_dir: Path
    info: dict[str, Any] = field(default_factory=dict)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise KDError(f"device {requested} was asked for but this machine has no CUDA GPU; use device: auto or cpu")
    if requested.startswith("cuda:") and int(requested.split(":")[1]) >= torch.cuda.device_count():
        raise KDError(f"device {requested} does not exist: this process sees {torch.cuda.device_count()} GPU(s) "
                      f"(cuda:0 … cuda:{torch.cuda.device_count() - 1}); use device: auto")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise KDError("device mps was asked for but this machine has no Apple GPU; use device: auto or cpu")
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise KDError("fp16 with a gradient scaler needs a CUDA device; use bf16 or fp32 here")
    return requested


def autocast_for(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_global_rng(seed: int, device: torch.device) -> None:
    """Seed PyTorch's global generator(s). On a CPU only the CPU one: torch.manual_seed would also queue a seed
    for each lazily started accelerator kind (CUDA, XPU, MTIA), capturing a stack trace for each, every call."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def lr_factor(spec: RunSpec, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at a global step: linear warm-up, then cosine, step or constant."""
    epoch_f = step / steps_per_epoch
    warm = spec.schedule.warmup_epochs
    if warm and epoch_f < warm:
        return (step + 1) / (warm * steps_per_epoch)
    if spec.schedule.name == "cosine":
        progress = (epoch_f - warm) / max(spec.epochs - warm, 1e-9)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if spec.schedule.name == "step":
        return spec.schedule.gamma ** sum(epoch_f >= m for m in spec.schedule.milestones)
    return 1.0


def params_of(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def eval_batch_size(spec: RunSpec, device: torch.device) -> int:
    return spec.eval_batch_size or EVAL_BATCH.get(device.type, EVAL_BATCH["default"])


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int, device: torch.device, precision: str,
            channels_last: bool = False) -> Tensor:
    """Logits (float32) for a whole split, in eval mode, restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, precision):
            outs.append(model(xb).float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


@contextlib.contextmanager
def channels_last_for_eval(model: nn.Module, device: torch.device):
    """On a CPU, conv nets infer ~1.5x faster in channels_last: switch the weights for the evaluation only.
    Yields whether the inputs should be channels_last too."""
    switch = device.type == "cpu" and has_conv(model)
    if switch:
        model.to(memory_format=torch.channels_last)
    try:
        yield switch
    finally:
        if switch:
            model.to(memory_format=torch.contiguous_format)


def load_one_teacher(t: TeacherSpec, num_classes: int, in_channels: int, input_size: int,
                     who: str = "teacher") -> tuple[nn.Module, dict]:
    if t.source == "run":
        path = run_dir(t.run_id) / CHECKPOINT_NAME
        if not path.is_file():
            raise KDError(f"{who} run {t.run_id} has no checkpoint yet (it must complete first)")
        model, record = load_model_from_checkpoint(path)
    elif t.source == "checkpoint":
        model, record = load_model_from_checkpoint(t.checkpoint, t.model, num_classes=num_classes,
                                                   in_channels=in_channels, input_size=input_size)
    else:  # torchvision weights (downloaded by torchvision on first use)
        import torchvision

        try:
            model = torchvision.models.get_model(t.model.removeprefix("tv_"), weights=t.weights or "DEFAULT")
        except Exception as err:
            raise KDError(f"could not load torchvision weights {t.weights or 'DEFAULT'} for {t.model} ({err})") from None
        classes = next(m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)).out_features
        record = model_record(t.model, classes, 3, 224)
    check_model_fits(record, num_classes, in_channels, input_size, who=who)
    return model, record


def load_teacher(spec: RunSpec, num_classes: int, in_channels: int, input_size: int) -> tuple[nn.Module, dict]:
    """The run's teacher: one model, or an EnsembleTeacher whose record lists its members' records."""
    t = spec.teacher
    if not isinstance(t, EnsembleSpec):
        return load_one_teacher(t, num_classes, in_channels, input_size)
    loaded = [load_one_teacher(m, num_classes, in_channels, input_size, who=f"teacher{i} (ensemble member)")
              for i, m in enumerate(t.members)]
    model = EnsembleTeacher([m for m, _ in loaded], t.normalised_weights, t.combine, spec.temperature)
    names = ", ".join(r["name"] for _, r in loaded)
    record = {"name": f"{t.combine} ensemble of {names}", "num_classes": num_classes,
              "members": [r for _, r in loaded]}
    return model, record


def _current_form(spec: dict) -> dict:
    """A checkpoint's spec as today's RunSpec writes it (a spec saved in an earlier form still resumes)."""
    try:
        return RunSpec.from_dict(spec).to_dict()
    except KDError:
        return spec


def check_labels(y: Tensor, num_classes: int) -> None:
    """The transfer set's labels name the dataset's classes (or -1, unlabelled); one sentence otherwise."""
    bad = (y != UNLABELLED) & ((y < 0) | (y >= num_classes))
    if bool(bad.any()):
        raise KDError(f"the training labels must lie in 0…{num_classes - 1} (the dataset's {num_classes} classes), "
                      f"but {int(bad.sum())} do not (e.g. {int(y[bad][0])}); check the dataset's labels")


def _resume_key(spec: dict) -> dict:
    """What must match to continue a checkpoint: everything but labels, where it runs and how often it saves."""
    return {k: v for k, v in spec.items()
            if k not in ("name", "tags", "device", "eval_batch_size", "checkpoint_every_s")}


def check_model_fits(record: dict, num_classes: int, in_channels: int, input_size: int, *, who: str) -> None:
    """A saved model must predict the dataset's classes from images of its shape; say which part differs."""
    if record.get("num_classes") not in (None, num_classes):
        raise KDError(f"the {who} predicts {record['num_classes']} classes but the dataset has {num_classes}")
    if record.get("in_channels") not in (None, in_channels):
        raise KDError(f"the {who} takes {record['in_channels']}-channel images but the dataset has {in_channels}")
    if record.get("input_size") not in (None, input_size) and not str(record.get("name", "")).startswith("tv_"):
        raise KDError(f"the {who} was built for {record['input_size']}×{record['input_size']} images but the "
                      f"dataset's are {input_size}×{input_size}")


def _legacy_probes(path: Path, epoch: int) -> dict[str, Any] | None:
    """probes.pt beside an older checkpoint, cut back to the checkpoint's epoch."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    keep = [i for i, e in enumerate(saved["epochs"]) if e <= epoch]
    return {**saved, "student": [saved["student"][i] for i in keep], "epochs": [saved["epochs"][i] for i in keep]}


def _spread(labels: Tensor, count: int) -> Tensor:
    """Positions of `count` items taking classes in turn (round-robin), so truncation keeps every class."""
    order = torch.argsort(labels.cpu(), stable=True)
    sorted_labels = labels.cpu()[order]
    rank = torch.zeros_like(sorted_labels)
    for c in sorted_labels.unique():
        members = sorted_labels == c
        rank[members] = torch.arange(int(members.sum()))
    picked = order[torch.argsort(rank * (int(sorted_labels.max()) + 1) + sorted_labels, stable=True)][:count]
    return picked.sort().values


class Trainer:
    def __init__(self, spec: RunSpec, out_dir: str | Path, callbacks: TrainCallbacks | None = None):
        self.spec = spec
        self.out_dir = Path(out_dir)
        # every rank runs this trainer; rank 0 alone reports, checkpoints and writes probes
        self.world = dist_run.world_from_env()
        self.cb = (callbacks or NullCallbacks()) if self.world.is_main else NullCallbacks()
        self._owns_group = False

    # ---- setup -----------------------------------------------------------------------------------
    def _setup(self) -> None:
        from kdcore.data import default_augmentation, load_dataset, stratified_subset
        from kdcore.data.augment import Augmentation
        from kdcore.data.batches import num_batches
        from kdcore.models import build_model, count_flops, count_parameters

        spec = self.spec
        if spec.world_size != self.world.size:
            raise KDError(f"the spec asks for {spec.world_size} process(es) ({spec.devices} device(s) × {spec.nodes} "
                          f"node(s)) but this process is one of {self.world.size}; start it with "
                          f"`python -m kdcore train`, which launches every rank")
        self.device = dist_run.rank_device(self.world, resolve_device(spec.device))
        self._owns_group = dist_run.start(self.world, self.device)
        self.precision = resolve_precision(spec.precision, self.device)
        torch.manual_seed(spec.seed)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # a worker's earlier runs must not show here
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.data = load_dataset(spec.dataset.name, val_fraction=spec.dataset.val_fraction, seed=SPLIT_SEED,
                                 device=self.device, path=spec.dataset.path)
        info = self.data.info
        c, h, w = info.input_shape
        self.input_shape = info.input_shape
        if spec.dataset.augment is None:
            self.augment = default_augmentation(spec.dataset.name)
        else:
            self.augment = default_augmentation(spec.dataset.name) if spec.dataset.augment else Augmentation()

        # the student may see its own view of each sample (downscaled, grey, ...); the teacher sees it in full
        view = spec.student_input
        self.student_view = InputView(view) if view is not None and not view.is_identity else None
        self.student_shape = view.shape_for(self.input_shape) if self.student_view is not None else self.input_shape
        self.student = build_model(spec.student, info.num_classes, self.student_shape[0], self.student_shape[1])
        if spec.sync_batchnorm and self.world.distributed:
            if self.device.type != "cuda":
                raise KDError("sync_batchnorm needs CUDA devices; on CPU processes leave it off")
            self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
        self.teacher, self.teacher_record = None, None
        if spec.teacher is not None:
            self.teacher, self.teacher_record = load_teacher(spec, info.num_classes, c, h)
        train = self.data.train
        if spec.dataset.train_limit and spec.dataset.train_limit < len(train):
            keep = stratified_subset(train.y, fraction=spec.dataset.train_limit / len(train), seed=SPLIT_SEED)
            train = train.subset(keep.to(train.y.device))
        self.transfer: TransferSet = build_transfer_set(train.x, train.y, spec.transfer,
                                                        has_teacher=self.teacher is not None, seed=spec.seed)
        if len(self.transfer) == 0:
            raise KDError("the transfer set is empty: no training sample is left after the transfer options")
        check_labels(self.transfer.y, info.num_classes)
        self.transfer_total, self.transfer_labelled = len(self.transfer), self.transfer.labelled
        if self.world.distributed:  # this rank's shard of the (seeded, identical on every rank) transfer set
            mine = dist_run.shard(len(self.transfer), self.world).to(self.transfer.y.device)
            self.transfer = TransferSet(self.transfer.x[mine], self.transfer.y[mine], self.transfer.noise_std)
        hints = resolve_hints(spec.hints, self.teacher, self.student)
        context = BuildContext(self.student, self.teacher, self.input_shape, info.num_classes, len(self.transfer),
                               student_input_shape=self.student_shape)
        self.distiller = Distiller(self.student, self.teacher, build_logit_loss_for(spec), hints, self.input_shape,
                                   methods=build_methods(spec, context), context=context,
                                   student_view=self.student_view)
        self.channels_last = (spec.channels_last if spec.channels_last is not None
                              else self.device.type == "cuda" and has_conv(self.student))
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.distiller.to(self.device, memory_format=fmt)
        if spec.compile:
            self.distiller.use_compiled_student(torch.compile(self.student))
        # DDP averages the ranks' gradients: the student, its transforms and the method heads are one module
        # for it; the teacher (no trainable parameter) stays a frozen copy on every rank
        self.model: nn.Module = self.distiller
        if self.world.distributed:
            import warnings

            from torch.nn.parallel import DistributedDataParallel

            # buffers stay per rank (BatchNorm statistics of each shard; sync_batchnorm shares them); rank 0's
            # are the ones evaluated and checkpointed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.model = DistributedDataParallel(
                    self.distiller, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False, find_unused_parameters=bool(spec.hints or spec.losses))
        self.device_batch = spec.device_batch_size
        # a compiled student sees one batch shape: the last, smaller batch of an epoch is dropped
        self.drop_last = spec.compile and len(self.transfer) >= self.device_batch
        self.micro_batches = num_batches(len(self.transfer), self.device_batch, drop_last=self.drop_last,
                                         merge_single=True)
        self.steps_per_epoch = -(-self.micro_batches // spec.grad_accumulation)
        self.eval_batch = eval_batch_size(spec, self.device)

        params = self.distiller.trainable_parameters()
        o = spec.optimizer
        # one fused kernel for all parameters on a GPU; the CPU keeps PyTorch's default (same numbers as ever)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        if o.name == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                             nesterov=o.nesterov and o.momentum > 0, **fused)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, **fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(spec, s, self.steps_per_epoch))
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.collapse = CollapseWatch(info.num_classes, o.lr)
        self.clip_grad_norm = o.clip_grad_norm
        self.step_log: list[dict] = []  # step metrics as delivered, for metrics.csv (kept in the checkpoint)
        self.best_val: float | None = None  # run() sets it from a resumed history; benches call _epoch alone

        # The cache is faithful only if the student sees exactly the inputs the teacher saw: with augmentation
        # it holds a fixed set of views (parameters and logits), filled during the first epochs.
        self.teacher_cache: TeacherCache | None = None
        if (self.teacher is not None and not self.distiller.needs_teacher_forward and self.transfer.noise_std == 0
                and spec.teacher_cache == "auto"):
            self.teacher_cache = TeacherCache(len(self.transfer), info.num_classes, spec.teacher_cache_views,
                                              self.augment, spec.seed, self.device)
        members = self.teacher.members if isinstance(self.teacher, EnsembleTeacher) else []
        member_specs = spec.teacher.members if members else []
        member_test_logits = [self._teacher_test_logits(m, t) for m, t in zip(members, member_specs)]
        self.teacher_test_logits = None
        self.teacher_ece: float | None = None  # the teacher does not change: its calibration is computed once
        if self.teacher is not None:
            # an ensemble's answer is its members' combined: each member runs over the test set once
            self.teacher_test_logits = (self.teacher.combine(member_test_logits) if members
                                        else self._teacher_test_logits(self.teacher, spec.teacher))
            self.teacher_ece = expected_calibration_error(self.teacher_test_logits, self.data.test.y)

        # class-stratified; with more classes than probe_size, one per class rather than blank classes
        per_class = math.ceil(spec.probe_size / info.num_classes) if spec.probe_size else 0
        probe_count = max(spec.probe_size, info.num_classes) if per_class else 0
        probe_idx = torch.empty(0, dtype=torch.long, device=self.device)
        if probe_count:
            probe_idx = stratified_subset(self.data.test.y, per_class=per_class, seed=SPLIT_SEED)
            probe_idx = probe_idx[_spread(self.data.test.y[probe_idx], probe_count).to(probe_idx.device)]
        self.probe_idx = probe_idx.to(self.device)
        self.probes: dict[str, Any] = {
            "indices": probe_idx.cpu(), "labels": self.data.test.y[self.probe_idx].cpu(),
            "images": (self.data.denormalize(self.data.test.x[self.probe_idx]).clamp(0, 1) * 255).to(torch.uint8).cpu(),
            "class_names": list(info.class_names),
            "teacher": (self.teacher_test_logits[self.probe_idx].cpu() if self.teacher is not None else None),
            **({"teacher_members": [z[self.probe_idx].cpu() for z in member_test_logits],
                "teacher_member_names": [r["name"] for r in self.teacher_record["members"]]} if members else {}),
            "student": [], "epochs": [],
        }
        s_params, s_flops = count_parameters(self.student), count_flops(self.student, self.student_shape)
        self.info: dict[str, Any] = {
            "device": str(self.device), "precision": self.precision, "channels_last": self.channels_last,
            "dataset": info.name, "classes": info.num_classes, "input_shape": list(self.input_shape),
            "train_size": len(self.data.train), "val_size": len(self.data.val), "test_size": len(self.data.test),
            "transfer_size": self.transfer_total, "labelled": self.transfer_labelled,
            "student": spec.student, "student_params": s_params, "student_flops": s_flops,
            "teacher_cache": self.teacher_cache is not None, "augmentation": bool(self.augment),
            "steps_per_epoch": self.steps_per_epoch, "method": spec.method_label,
            "world_size": self.world.size, "devices": spec.devices, "nodes": spec.nodes,
            "device_batch": self.device_batch, "global_batch": spec.batch_size,
            "grad_accumulation": spec.grad_accumulation, "lr_scaling": dist_run.LR_SCALING_RULE,
        }
        if self.world.distributed:
            self.info.update(backend=dist_run.backend_for(self.device), transfer_shard=len(self.transfer))
        if self.teacher_cache is not None:
            self.info.update(self.teacher_cache.describe())
        if self.teacher is not None:
            t_params, t_flops = count_parameters(self.teacher), count_flops(self.teacher, self.input_shape)
            self.info.update({
                "teacher": self.teacher_record["name"], "teacher_params": t_params, "teacher_flops": t_flops,
                "compression": t_params / max(s_params, 1),
                "teacher_test_acc": accuracy(self.teacher_test_logits, self.data.test.y),
            })
            if members:
                self.info["teacher_members"] = [
                    {"name": f"teacher{i}", "model": r["name"], "params": count_parameters(m),
                     "test_acc": accuracy(z, self.data.test.y)}
                    for i, (m, r, z) in enumerate(zip(members, self.teacher_record["members"], member_test_logits))]
            if self.student_view is not None:
                self.info["student_input_shape"] = list(self.student_shape)

    def _predict(self, model: nn.Module, x: Tensor) -> Tensor:
        if self.channels_last or (self.spec.compile and model is self.student):  # a switch would recompile
            return predict(model, x, self.eval_batch, self.device, self.precision, self.channels_last)
        with channels_last_for_eval(model, self.device) as cl:
            return predict(model, x, self.eval_batch, self.device, self.precision, cl)

    def _teacher_test_logits(self, model: nn.Module, source: TeacherSpec | EnsembleSpec) -> Tensor:
        """A teacher's test-set logits; those of a teacher file are kept between runs (kdcore.train.split_logits)."""
        x = self.data.test.x
        if self.world.distributed or not isinstance(source, TeacherSpec):
            return self._predict_sharded(model, x)
        how = evaluation_key(self.device.type, self.precision, self.eval_batch, self.channels_last)
        return cached_split_logits(teacher_file(source), x, how, lambda: self._predict(model, x),
                                   inputs_key=self.data.split_key("test"))

    def _predict_sharded(self, model: nn.Module, x: Tensor) -> Tensor:
        """Logits of a whole split: with several ranks each predicts its block and every rank gets them all."""
        if not self.world.distributed or len(x) < self.world.size:
            return self._predict(model, x)
        start, stop = dist_run.eval_span(len(x), self.world)
        return dist_run.gather_rows(self._predict(model, x[start:stop]), len(x), self.world)

    def _predict_student(self, x: Tensor, *, sharded: bool = True) -> Tensor:
        """The student's logits, from its own view of the inputs (of a whole split: sharded over the ranks)."""
        model = self.student if self.student_view is None else nn.Sequential(self.student_view, self.student)
        return self._predict_sharded(model, x) if sharded else self._predict(model, x)

    # ---- checkpoints -----------------------------------------------------------------------------
    def _checkpoint(self, epoch: int, step: int, history: list[dict]) -> None:
        info = self.data.info
        state = {
            "format": FORMAT,
            "model": model_record(self.spec.student, info.num_classes, self.student_shape[0], self.student_shape[1]),
            "state_dict": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
            **self.distiller.loss_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "epoch": epoch, "step": step,
            "rng_cpu": torch.get_rng_state(),
            "history": history,
            "step_log": list(self.step_log),
            "spec": self.spec.to_dict(),
            # The probes travel inside the checkpoint: one file renamed into place, so a kill at any
            # moment leaves weights, history and probe epochs from the same epoch.
            "probes": self.probes,
        }
        save_atomic(state, self.out_dir / CHECKPOINT_NAME)
        self._write_readable_copies(history)

    def _write_readable_copies(self, history: list[dict]) -> None:
        """probes.pt and metrics.csv for readers (the dashboard, people); the checkpoint is their source."""
        save_atomic(self.probes, self.out_dir / PROBES_NAME)
        self._write_metrics_csv(history)

    def _write_metrics_csv(self, history: list[dict]) -> None:
        metrics_csv.write(self.out_dir / "metrics.csv", metrics_csv.long_rows(self.step_log, history))

    def _restore(self) -> tuple[int, int, list[dict]]:
        ckpt = load_checkpoint(self.out_dir / CHECKPOINT_NAME)
        if _resume_key(_current_form(ckpt.get("spec") or {})) != _resume_key(self.spec.to_dict()):
            raise KDError(f"{self.out_dir} holds a checkpoint of a different spec; use another output folder")
        self.student.load_state_dict(ckpt["state_dict"])
        self.distiller.load_loss_state(ckpt)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt["history"])
        self.step_log = [row for row in ckpt.get("step_log", []) if row["step"] <= ckpt["step"]]
        saved = ckpt.get("probes")
        if saved is None:  # a checkpoint written before probes were part of it
            saved = _legacy_probes(self.out_dir / PROBES_NAME, ckpt["epoch"])
        if saved is not None:
            epochs = [int(h["epoch"]) for h in history]
            if len(self.probe_idx) and (list(saved["epochs"]) != epochs
                                        or not torch.equal(saved["indices"], self.probes["indices"])):
                raise KDError(f"the checkpoint in {self.out_dir} is inconsistent: its probe epochs "
                              f"{list(saved['epochs'])} do not match its history {epochs}; start it afresh")
            self.probes["student"] = list(saved["student"])
            self.probes["epochs"] = list(saved["epochs"])
        if self.world.is_main:
            self._write_readable_copies(history)  # a kill may have left them behind the checkpoint
        return ckpt["epoch"], ckpt["step"], history

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self, resume: bool = True) -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.reporter = Reporter(self.cb)
        try:
            self._setup()
            start_epoch, step, history = 0, 0, []
            if resume and (self.out_dir / CHECKPOINT_NAME).is_file():
                start_epoch, step, history = self._restore()
                self._report(self.cb.on_resume, start_epoch, step)
                self._report(self.cb.on_log, f"resumed after epoch {start_epoch} (step {step})")
            if not dist_run.same_on_every_rank(start_epoch, self.world, self.device):
                raise KDError(f"the processes of this run found different checkpoints in {self.out_dir}: every "
                              "machine of a run over several machines must mount the same KD_HOME (shared storage)")
            if self.world.is_main:
                (self.out_dir / "spec.yaml").write_text(self.spec.to_yaml())  # only once the folder is ours
            self.info.update(start_epoch=start_epoch, start_step=step)
            self.best_val = max((h["val/acc"] for h in history if "val/acc" in h), default=None)
            self._report(self.cb.on_start, dict(self.info))
            self._report(self.cb.on_log, self._start_line())
            saved_epoch, saved_at = start_epoch, time.monotonic()
            for epoch in range(start_epoch + 1, self.spec.epochs + 1):
                result = self._epoch(epoch, step)
                if result is None:
                    self._report(self.cb.on_log, f"cancelled during epoch {epoch}; " + (
                        f"the checkpoint of epoch {saved_epoch} is kept" if saved_epoch
                        else "no checkpoint yet: a resume starts from the beginning"))
                    self.reporter.drain()
                    return TrainResult("cancelled", saved_epoch, step, history[-1] if history else {},
                                       self.out_dir, self.info)
                step, metrics = result
                history.append({"epoch": epoch, "step": step, **metrics})
                # one hand-off: the epoch's metrics and line reach the callbacks, then they are asked about a stop
                self.reporter.raise_if_failed()
                stopping = self.reporter.call_then_poll((self.cb.on_epoch, epoch, step, metrics),
                                                        (self.cb.on_log, self._epoch_line(epoch, metrics)))
                stopping = dist_run.any_rank(stopping, self.world, self.device)  # every rank stops together
                # A checkpoint at most every checkpoint_every_s, at the end and before a stop; a resume replays
                # the epochs after the last one exactly, since every epoch's randomness derives from (seed, epoch).
                if (stopping or epoch == self.spec.epochs
                        or time.monotonic() - saved_at >= self.spec.checkpoint_every_s):
                    # Reported first: a crash before the checkpoint then rolls back to the previous one cleanly,
                    # never leaving a checkpointed epoch whose metrics were not delivered.
                    self.reporter.drain()
                    if self.world.is_main:
                        self._checkpoint(epoch, step, history)
                    saved_epoch, saved_at = epoch, time.monotonic()
                if stopping and epoch < self.spec.epochs:
                    self._report(self.cb.on_log, f"cancelled after epoch {epoch}; its checkpoint is kept")
                    self.reporter.drain()
                    return TrainResult("cancelled", epoch, step, history[-1], self.out_dir, self.info)
            self.reporter.drain()
            return TrainResult("completed", self.spec.epochs, step, history[-1] if history else {}, self.out_dir, self.info)
        except torch.cuda.OutOfMemoryError:
            raise OutOfMemoryError(
                f"the GPU ran out of memory at batch size {self.spec.batch_size}; try a smaller batch size "
                f"(e.g. {max(1, self.spec.batch_size // 2)}) or a smaller model") from None
        finally:
            self.reporter.close()
            self.reporter = None
            if hasattr(self, "distiller"):
                self.distiller.close()
            dist_run.stop(self._owns_group)

    def _reporter(self) -> Reporter:
        """run() starts (and closes) the reporter; a bench calling _epoch alone gets one on first use."""
        if getattr(self, "reporter", None) is None:
            self.reporter = Reporter(self.cb)
        return self.reporter

    def _report(self, fn, *args) -> None:
        """A callback, run on the reporter thread in order; a failure of an earlier one is raised here."""
        self._reporter().raise_if_failed()
        self.reporter.submit(fn, *args)

    def _epoch(self, epoch: int, step: int) -> tuple[int, dict[str, float]] | None:
        from kdcore.data import TensorSplit, iterate_batches

        spec = self.spec
        # Every epoch's randomness derives from (seed, epoch): a resumed run replays exactly.
        epoch_seed = spec.seed * 1_000_003 + epoch
        seed_global_rng(epoch_seed, self.device)
        order_gen = torch.Generator().manual_seed(epoch_seed)
        # each rank augments its shard with its own draws (rank 0's are a single-process run's)
        device_gen = torch.Generator(device=self.device).manual_seed(epoch_seed + 7_919 * self.world.rank)
        hint_only = epoch <= spec.hint_stage_epochs
        cache = self.teacher_cache
        view = cache.view_of(epoch) if cache is not None else 0
        teacher_first = self.teacher is not None and not self.distiller.needs_teacher_forward
        self.distiller.train()
        started = time.perf_counter()
        interval = StepInterval(started)
        # Per-step tensors only (no arithmetic, no host read) until the epoch ends: train loss and accuracy
        # are computed from them once.
        totals: list[Tensor] = []
        sizes: list[int] = []
        preds: list[Tensor] = []
        labels: list[Tensor] = []
        reporter = self._reporter()
        stop = reporter.stop_requested
        split = TensorSplit(self.transfer.x, self.transfer.y)
        # a last batch of one sample would break BatchNorm in training mode: it joins the previous one
        accumulate = spec.grad_accumulation
        for micro, (x, y, idx) in enumerate(iterate_batches(split, self.device_batch, shuffle=True,
                                                            generator=order_gen, drop_last=self.drop_last,
                                                            merge_single=True)):
            # with several ranks a stop waits for the epoch's end, where all ranks agree on it
            if stop.is_set() and not self.world.distributed:
                return None
            if reporter.error is not None:
                reporter.raise_if_failed()
            cached = None
            if cache is not None:
                x = cache.inputs(x, idx, view)
                cached = cache.lookup(idx, view)
            elif self.augment:
                x = self.augment(x, device_gen)
            if self.transfer.noise_std:
                x = x + self.transfer.noise_std * torch.randn(x.shape, device=x.device, generator=device_gen)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            group_start = micro - micro % accumulate
            group_size = min(accumulate, self.micro_batches - group_start)
            steps_now = micro == group_start + group_size - 1  # the group's last micro-batch
            if micro == group_start:
                self.optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients only on a group's last backward; the others accumulate locally
            sync = (self.model.no_sync() if self.model is not self.distiller and not steps_now
                    else contextlib.nullcontext())
            with sync:
                with autocast_for(self.device, self.precision):
                    # The teacher first, while the student's graph is not yet built (a few % faster on a CPU);
                    # on a view's first pass the cache keeps what it said.
                    if cached is None and teacher_first:
                        with torch.no_grad():
                            cached = self.teacher(x)
                        if cache is not None:
                            cache.store(idx, view, cached)
                    z_s, losses = self.model(x, y, epoch=epoch, teacher_logits=cached, hint_only=hint_only,
                                             indices=idx)
                values = iter(losses.values())
                total = next(values).float()
                for v in values:
                    total = total + v.float()
                scaled = total / group_size if group_size > 1 else total
                if self.scaler:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            totals.append(total.detach())
            sizes.append(len(y))
            preds.append(z_s.detach().argmax(1))
            labels.append(y)
            interval.add(losses, total, len(y))
            if not steps_now:
                continue
            if self.clip_grad_norm is not None:
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params_of(self.optimizer), self.clip_grad_norm)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            step += 1
            now = time.perf_counter()
            if now - interval.started >= REPORT_INTERVAL_S:
                self._report_interval(interval, epoch, step, now)
        if interval.steps:
            self._report_interval(interval, epoch, step, time.perf_counter())
        if cache is not None:
            cache.end_epoch(view)
        seen = sum(sizes)
        loss_sum = float(torch.stack([t.float() for t in totals]) @ torch.tensor(sizes, dtype=torch.float32,
                                                                                   device=totals[0].device))
        if not math.isfinite(loss_sum):  # never evaluated: the reporter names the step where the loss diverged
            self.reporter.drain()
            raise TrainingDivergedError(f"the loss became {loss_sum} during epoch {epoch}; "
                                        f"lower the learning rate or the loss weights")
        y_all = torch.cat(labels)
        is_lab = y_all != UNLABELLED
        correct = int(((torch.cat(preds) == y_all) & is_lab).sum())
        labelled = int(is_lab.sum())
        if self.world.distributed:
            loss_sum, seen, correct, labelled = dist_run.sum_over_ranks([loss_sum, seen, correct, labelled],
                                                                        self.world, self.device)
        train_loss, train_acc = loss_sum / max(seen, 1), correct / max(labelled, 1)
        return step, self._evaluate(epoch, train_loss, train_acc, time.perf_counter() - started)

    def _report_interval(self, interval: StepInterval, epoch: int, step: int, now: float) -> None:
        """Hand the interval's device tensors to the reporter thread, which reads them and calls on_step."""
        extra = {"lr": self.optimizer.param_groups[0]["lr"],
                 "throughput": interval.images / max(now - interval.started, 1e-9)}
        if self.device.type == "cuda":
            extra["gpu_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self._report(self._deliver_interval, interval.terms, interval.totals, epoch, step, extra)
        interval.reset(now)

    def _deliver_interval(self, terms, totals, epoch: int, step: int, extra: dict[str, float]) -> None:
        metrics = interval_metrics(terms, totals, epoch=epoch, last_step=step)
        metrics.update(extra)
        self.step_log.append({"epoch": epoch, "step": step, **metrics})
        self.cb.on_step(epoch, step, metrics)

    def _evaluate(self, epoch: int, train_loss: float, train_acc: float, seconds: float) -> dict[str, float]:
        """Validation at validated epochs; the test set only where a summary can select (kdcore.summary):
        when validation accuracy improves on every earlier epoch, and at the last epoch."""
        d, ev = self.data, self.spec.evaluation
        # Every rank evaluates its block of each split and all get every prediction (the metrics, and the
        # decision to evaluate the test set, are the same on all); rank 0 alone reports them.
        dist_run.broadcast_buffers(self.student, self.world)
        last = epoch == self.spec.epochs
        metrics = {"train/loss": train_loss, "train/acc": train_acc, "epoch_time": seconds}
        improved = False
        if len(d.val) and (last or epoch % ev.val_every == 0):
            val_logits = self._predict_student(d.val.x)
            val_acc = accuracy(val_logits, d.val.y)
            metrics["val/acc"] = val_acc
            self._watch_collapse(epoch, val_logits, d.val.y)
            improved = self.best_val is None or val_acc > self.best_val
            self.best_val = val_acc if improved else self.best_val
        student_test = None
        if last or improved or ev.test == "every_epoch":
            student_test = self._predict_student(d.test.x)
            metrics["test/acc"] = accuracy(student_test, d.test.y)
            if not len(d.val):
                self._watch_collapse(epoch, student_test, d.test.y)
            metrics.update(fidelity_report(student_test, self.teacher_test_logits, d.test.y,
                                           self.spec.temperature if self.teacher is not None else 1.0,
                                           teacher_ece=self.teacher_ece))
            if self.teacher is not None:
                metrics["teacher/test_acc"] = self.info["teacher_test_acc"]
        if len(self.probe_idx) and self.world.is_main:
            probe_logits = (student_test[self.probe_idx] if student_test is not None
                            else self._predict_student(d.test.x[self.probe_idx], sharded=False))
            self.probes["student"].append(probe_logits.cpu())
            self.probes["epochs"].append(epoch)
        return metrics

    def _watch_collapse(self, epoch: int, logits: Tensor, labels: Tensor) -> None:
        warning = self.collapse.update(epoch, logits, labels)
        if warning is not None and self.world.is_main:
            self.info.setdefault("warnings", []).append(warning)
            on_warning = getattr(self.cb, "on_warning", None)  # callbacks written before warnings existed log it
            self._report(on_warning or (lambda m: self.cb.on_log(f"warning: {m}")), warning)

    # ---- log lines ---------------------------------------------------------------------------------
    def _start_line(self) -> str:
        i = self.info
        line = (f"{i['method']}: {i['student']} ({i['student_params']:,} params) on {i['dataset']}, "
                f"{i['transfer_size']} transfer samples ({i['labelled']} labelled), {i['device']} {i['precision']}")
        if self.teacher is not None:
            line += (f"; teacher {i['teacher']} ({i['teacher_params']:,} params, test acc "
                     f"{i['teacher_test_acc']:.4f}), teacher-logit cache {'on' if i['teacher_cache'] else 'off'}")
        if i["world_size"] > 1 or i["grad_accumulation"] > 1:
            line += (f"; {i['world_size']} process(es) ({i['devices']} per node × {i['nodes']} node(s)), "
                     f"{i['device_batch']} per device × {i['grad_accumulation']} accumulation step(s) = global "
                     f"batch {i['global_batch']}, lr scaling {i['lr_scaling']}")
        return line

    def _epoch_line(self, epoch: int, m: dict[str, float]) -> str:
        line = f"epoch {epoch}/{self.spec.epochs}: loss {m['train/loss']:.4f}, train acc {m['train/acc']:.4f}"
        if "val/acc" in m:
            line += f", val acc {m['val/acc']:.4f}"
        if "test/acc" in m:
            line += f", test acc {m['test/acc']:.4f}"
        if "fidelity/agreement" in m:
            line += f", agreement {m['fidelity/agreement']:.4f}"
        return line + f" ({m['epoch_time']:.1f}s)"


def train(spec: RunSpec, out_dir: str | Path, callbacks: TrainCallbacks | None = None, *,
          resume: bool = True) -> TrainResult:
    """Run a spec to completion (or cancellation), writing artifacts to out_dir."""
    return Trainer(spec, out_dir, callbacks).run(resume=resume)
