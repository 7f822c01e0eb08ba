"""`python -m kdcore train SPEC.yaml [--device ...] [--out DIR]`: a progress bar, a line per epoch, a summary."""
from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable
from pathlib import Path

from kdcore.errors import KDError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="YAML run spec (see examples/)")
    p.add_argument("--device", help="override the spec's device: auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--out", help="output folder (default runs_out/<spec name>)")
    p.add_argument("--epochs", type=int, help="override the spec's epochs")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--devices", type=int, help="override the spec's devices: processes (GPUs) per node")
    p.add_argument("--nodes", type=int, help="override the spec's nodes: machines the run spans")
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                   help="with several nodes: where every node's launcher meets (c10d rendezvous)")
    p.add_argument("--rdzv-id", default=None, help="with several nodes: the job's name, the same on every node")


class ConsoleCallbacks:
    """tqdm progress bar over steps, one line per epoch; `on_training_start` is called once the set-up is done."""

    def __init__(self, epochs: int, quiet: bool, on_training_start: Callable[[], None] | None = None):
        self.epochs, self.quiet, self.bar = epochs, quiet, None
        self.on_training_start = on_training_start

    def on_start(self, info: dict) -> None:
        from tqdm import tqdm

        if self.on_training_start is not None:
            self.on_training_start()

        if not self.quiet:
            total = info["steps_per_epoch"] * self.epochs
            self.bar = tqdm(total=total, initial=info["start_step"], unit="step", file=sys.stderr,
                            dynamic_ncols=True, leave=False)

    def on_resume(self, epoch: int, step: int) -> None:
        pass

    def on_step(self, epoch: int, step: int, metrics: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(epoch=epoch, loss=f"{metrics['loss/total']:.4f}", refresh=False)
            self.bar.update(step - self.bar.n)

    def on_epoch(self, epoch: int, step: int, metrics: dict) -> None:
        pass

    def on_log(self, message: str) -> None:
        (self.bar.write if self.bar is not None else print)(message)

    def on_warning(self, message: str) -> None:
        self.on_log(f"warning: {message}")

    def should_stop(self) -> bool:
        return False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary_lines(info: dict, final: dict) -> list[str]:
    lines = [f"student {info['student']}: test acc {final.get('test/acc', float('nan')):.4f}, "
             f"{info['student_params']:,} params, {info['student_flops']:,} FLOPs/image"]
    if "teacher" in info:
        lines.insert(0, f"teacher {info['teacher']}: test acc {info['teacher_test_acc']:.4f}, "
                        f"{info['teacher_params']:,} params, {info['teacher_flops']:,} FLOPs/image")
        for i, member in enumerate(info.get("teacher_members", [])):
            lines.insert(1 + i, f"  member {member['name']} ({member['model']}): test acc {member['test_acc']:.4f}, "
                                f"{member['params']:,} params")
        lines.append(f"agreement with teacher {final.get('fidelity/agreement', float('nan')):.4f}, "
                     f"compression {info['compression']:.1f}x fewer parameters, "
                     f"teacher-logit cache {'used' if info['teacher_cache'] else 'not used'}")
    lines += [f"warning: {w}" for w in info.get("warnings", [])]
    return lines


def _pause_collection_for_start_up() -> bool:
    """When this process is the command's own: the objects imported by now (torch's modules, most of the
    process's objects) live as long as it does, so they are frozen out of every later collection, and collection
    pauses until training starts (the set-up makes little cyclic garbage; the collections its allocations would
    trigger cost ~0.1–0.2 s of start-up here)."""
    gc.freeze()
    if not gc.isenabled():
        return False
    gc.disable()
    return True


def _resume_collection() -> None:
    """Training starts: what the set-up built (models, data, the modules torch.optim's first use imports) lives
    as long as the run, so it is frozen too before collection resumes; otherwise the first collections walk all
    of it, at the first step (bench/startup_bench.py, bench/RESULTS.md)."""
    gc.freeze()
    gc.enable()


def run(args: argparse.Namespace) -> int:
    import kdcore.train  # noqa: F401  (torch and the trainer, imported before they are frozen below)

    own_process = getattr(args, "entry_point", False)
    if own_process:
        from kdcore.train.allocator import hold_freed_memory

        hold_freed_memory()  # the process lives for this run: its steps reuse freed memory
    paused = own_process and _pause_collection_for_start_up()
    try:
        return _train_command(args, on_training_start=_resume_collection if paused else None)
    finally:
        if paused:
            gc.enable()


def _train_command(args: argparse.Namespace, on_training_start: Callable[[], None] | None) -> int:
    from kdcore.spec import load_spec
    from kdcore.train import distributed as dist_run
    from kdcore.train import train

    spec = load_spec(args.spec)
    updates = {k: v for k, v in (("device", args.device), ("epochs", args.epochs), ("devices", args.devices),
                                 ("nodes", args.nodes)) if v is not None}
    if updates:
        spec = type(spec).from_dict({**spec.to_dict(), **updates})
    out = Path(args.out or Path("runs_out") / (spec.name or Path(args.spec).stem))
    if spec.world_size > 1 and not dist_run.launched():
        return _launch(args, spec, out)
    if dist_run.world_from_env().rank != 0:
        args.quiet = True
    cb = ConsoleCallbacks(spec.epochs, args.quiet, on_training_start=on_training_start)
    try:
        result = train(spec, out, cb, resume=not args.fresh)
    finally:
        cb.close()
    if dist_run.world_from_env().rank != 0:
        return 0 if result.status == "completed" else 1
    print("\n".join(["summary:"] + ["  " + line for line in summary_lines(result.info, result.final)]))
    print(f"  wrote {out / 'checkpoint.pt'}, {out / 'metrics.csv'}, {out / 'spec.yaml'}")
    if result.status != "completed":
        raise KDError(f"the run ended as {result.status}")
    return 0


def _launch(args: argparse.Namespace, spec, out: Path) -> int:
    """Start every rank of this node through PyTorch's elastic launcher, each running this same command."""
    from kdcore.train import distributed as dist_run

    script = ["train", str(Path(args.spec).resolve()), "--out", str(out.resolve()),
              "--devices", str(spec.devices), "--nodes", str(spec.nodes)]
    for flag, value in (("--device", args.device), ("--epochs", args.epochs)):
        if value is not None:
            script += [flag, str(value)]
    script += [flag for flag, on in (("--fresh", args.fresh), ("--quiet", args.quiet)) if on]
    cmd = dist_run.launcher_command(script, devices=spec.devices, nodes=spec.nodes, endpoint=args.rdzv_endpoint,
                                    run_id=args.rdzv_id or spec.name or "kdcore")
    code = dist_run.run_launcher(cmd)
    if code != 0:
        raise KDError(f"the run over {spec.world_size} processes failed (the launcher exited with {code}); "
                      f"its last checkpoint in {out} is kept and a rerun resumes from it")
    return 0
