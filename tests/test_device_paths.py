"""The trainer's device paths on the device named by KD_TEST_DEVICE (default cpu).

On a CPU these run as ordinary regression tests; `bench/gpu_check.py` runs the same file with
KD_TEST_DEVICE=cuda on a GPU, where they cover bf16 and fp16 autocast with the gradient scaler,
channels_last, torch.compile, resume, NaN detection, out-of-memory and a worker bound to cuda:0."""
from __future__ import annotations

import os

import pytest
import torch

from kdcore.errors import KDError, OutOfMemoryError, TrainingDivergedError
from kdcore.spec import RunSpec
from kdcore.train import RecordingCallbacks, train
from kdcore.train.checkpoint import load_checkpoint
from kdcore.train.trainer import Trainer

DEVICE = os.environ.get("KD_TEST_DEVICE", "cpu")
ON_CUDA = DEVICE.startswith("cuda")
if ON_CUDA and not torch.cuda.is_available():
    raise RuntimeError(f"KD_TEST_DEVICE={DEVICE} but this machine has no CUDA GPU")


def spec(**over) -> RunSpec:
    base = {"dataset": {"name": "digits", "augment": False}, "student": "cnn_small", "epochs": 2,
            "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "probe_size": 10,
            "device": DEVICE, "precision": "fp32"}
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return RunSpec.from_dict(base)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(spec(epochs=3, precision="fp32"), out)
    return out / "checkpoint.pt"


def kd(teacher_ckpt, **over) -> RunSpec:
    return spec(teacher={"source": "checkpoint", "checkpoint": str(teacher_ckpt)},
                logit={"rho": 4.0, "alpha": 0.5, "beta": 0.5}, **over)


def relative_gap(a: dict, b: dict) -> float:
    """The largest ‖a − b‖ / ‖a‖ over the float tensors of two state dicts."""
    return max(float((a[k].float() - b[k].float()).norm() / a[k].float().norm().clamp_min(1e-12))
               for k in a if a[k].is_floating_point())


class StopAfter(RecordingCallbacks):
    def __init__(self, epochs_done: int):
        super().__init__()
        self.epochs_done = epochs_done

    def should_stop(self) -> bool:
        return len(self.epochs) >= self.epochs_done


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_trains_on_the_device_and_reports_its_memory(tmp_path, teacher_ckpt, precision):
    s = kd(teacher_ckpt, precision=precision)
    if precision == "fp16" and not ON_CUDA:
        with pytest.raises(KDError, match="fp16 with a gradient scaler needs a CUDA device"):
            train(s, tmp_path)
        return
    cb = RecordingCallbacks()
    trainer = Trainer(s, tmp_path, cb)
    result = trainer.run()
    assert result.status == "completed"
    assert torch.device(cb.info["device"]).type == torch.device(DEVICE).type and cb.info["precision"] == precision
    assert cb.info["teacher_cache"] and trainer.teacher_cache.device.type == torch.device(DEVICE).type
    assert (trainer.scaler is not None) == (precision == "fp16")
    assert cb.epochs[-1][2]["test/acc"] > 0.8, cb.epochs[-1][2]  # digits after two epochs
    steps = [m for _, _, m in cb.steps]
    assert all(torch.isfinite(torch.tensor(m["loss/total"])) for m in steps)
    if ON_CUDA:  # the memory curve the dashboard draws
        assert all(m["gpu_mem_mb"] > 0 for m in steps)
    else:
        assert all("gpu_mem_mb" not in m for m in steps)


def test_channels_last_trains_the_same_model_as_contiguous(tmp_path):
    cbs = {}
    for layout in (True, False):
        cbs[layout] = RecordingCallbacks()
        trainer = Trainer(spec(epochs=1, channels_last=layout), tmp_path / str(layout), cbs[layout])
        trainer.run()
        conv = [m for m in trainer.student.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # > 1 input channel
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is layout
        assert cbs[layout].info["channels_last"] is layout
    a = load_checkpoint(tmp_path / "True" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "False" / "checkpoint.pt")["state_dict"]
    assert relative_gap(a, b) < 2e-2  # other kernels, other rounding (TF32 on a GPU); one epoch
    accs = [cbs[k].epochs[-1][2]["test/acc"] for k in (True, False)]
    assert abs(accs[0] - accs[1]) < 0.03, accs


def test_an_interrupted_bf16_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, teacher_ckpt):
    s = kd(teacher_ckpt, epochs=3, precision="bf16", dataset={"name": "digits", "augment": True})
    straight = train(s, tmp_path / "straight")
    first = train(s, tmp_path / "resumed", StopAfter(epochs_done=1))
    assert first.status == "cancelled" and first.epochs_done == 1
    cb = RecordingCallbacks()
    second = train(s, tmp_path / "resumed", cb)
    assert cb.resumed_at == (1, first.step) and second.step == straight.step
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["state_dict"]
    # the same draws replay; a GPU's non-deterministic kernels (atomics) may still differ in the last bits
    assert relative_gap(a, b) < (1e-2 if ON_CUDA else 1e-5)


def _inject(monkeypatch, at_call: int, what):
    """Wrap the logit loss so that its `at_call`-th call does `what(outputs)`."""
    import kdcore.train.trainer as trainer_mod

    real = trainer_mod.build_logit_loss_for

    class Injecting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, z_s, *args, **kwargs):
            self.calls += 1
            out = self.inner(z_s, *args, **kwargs)
            if self.calls == at_call:
                what(z_s, out)
            return out

    monkeypatch.setattr(trainer_mod, "build_logit_loss_for", lambda s: Injecting(real(s)))


def test_a_nan_loss_under_bf16_stops_the_run_naming_epoch_and_step(tmp_path, monkeypatch):
    _inject(monkeypatch, 7, lambda z, out: out.update(hard=out["hard"] * float("nan")))
    with pytest.raises(TrainingDivergedError, match=r"^the loss became NaN at epoch 1, step 7; lower"):
        train(spec(precision="bf16"), tmp_path)


def test_running_out_of_device_memory_is_one_sentence_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    s = spec(epochs=3)
    assert train(s, tmp_path, StopAfter(epochs_done=1)).status == "cancelled"
    before = load_checkpoint(tmp_path / "checkpoint.pt")

    def allocate_past_the_card(z_s, out):
        if z_s.device.type == "cuda":  # really ask for twice the card
            total = torch.cuda.get_device_properties(z_s.device).total_memory
            torch.empty(2 * total, dtype=torch.uint8, device=z_s.device)
        else:  # what PyTorch raises then
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 280.00 GiB")

    _inject(monkeypatch, 3, allocate_past_the_card)
    with pytest.raises(OutOfMemoryError) as err:
        train(s, tmp_path)
    message = str(err.value)
    assert message.startswith("the GPU ran out of memory at batch size 64; try a smaller batch size (e.g. 32)")
    assert "\n" not in message and "Traceback" not in message
    del err
    after = load_checkpoint(tmp_path / "checkpoint.pt")
    assert after["epoch"] == before["epoch"] == 1
    monkeypatch.undo()
    cb = RecordingCallbacks()
    assert train(s, tmp_path, cb).status == "completed" and cb.resumed_at[0] == 1  # the device is usable again


@pytest.mark.slow
def test_a_worker_bound_to_the_device_completes_the_labs_one_click_experiments(kd_home):
    from kdcore.jobs import RunStatus, RunStore
    from kdcore.jobs.testing import database_url, start_worker, stop_process, wait_until
    from kdcore.lab import experiments as lab

    bound = "cuda:0" if ON_CUDA else "cpu"
    with database_url("sqlite", kd_home) as url:
        store = RunStore(url)
        ids = [lab.submit_omitted_class(store, "digits")]
        if ON_CUDA:  # all ten one-click runs on a GPU; on a CPU the one run keeps the suite short
            ids += [*lab.submit_rho_sweep(store, "digits"), *lab.submit_alpha_comparison(store, "digits")]
        proc = start_worker(kd_home, url, "--device", bound, "--exit-when-idle")
        try:
            def finished():
                runs = [store.get(i) for i in ids]
                return runs if all(r.status.is_terminal for r in runs) else None

            runs = wait_until(finished, 600, "the lab's runs to finish",
                              on_timeout=lambda: (kd_home / "worker.out").read_text(errors="replace")[-4000:])
            assert proc.wait(timeout=60) == 0
        finally:
            stop_process(proc)
        assert [r.status for r in runs] == [RunStatus.COMPLETED] * len(ids), [(r.name, r.error) for r in runs]
        assert {r.info["device"] for r in runs} == {"cuda" if ON_CUDA else "cpu"}
        assert all(r.final["test/acc"] > 0.5 for r in runs), [(r.name, r.final["test/acc"]) for r in runs]
        assert store.workers(alive_only=False)[0].device == bound
        if ON_CUDA:
            frame = lab.rho_sweep_frame(store.list_runs(tag=lab.experiment_tag("rho-sweep", "digits")))
            assert list(frame["status"]) == ["completed"] * len(lab.RHO_SWEEP)


@pytest.mark.slow
def test_a_compiled_student_trains_like_the_eager_one(tmp_path, teacher_ckpt):
    # on a GPU the dashboard's own path (a conv net, channels_last, bf16); on a CPU a small graph, since
    # inductor's C++ build of a conv net takes minutes on two cores
    over = {"student": "cnn_small", "precision": "bf16"} if ON_CUDA else {"student": "mlp_64"}
    results = {}
    for compiled in (False, True):
        cb = RecordingCallbacks()
        train(kd(teacher_ckpt, epochs=1, compile=compiled, **over), tmp_path / str(compiled), cb)
        results[compiled] = (load_checkpoint(tmp_path / str(compiled) / "checkpoint.pt")["state_dict"],
                             cb.epochs[-1][2]["test/acc"])
    assert results[True][0].keys() == results[False][0].keys()  # no _orig_mod. prefix in saved weights
    # rounding differences grow over a run, so compare what it learned rather than the last bits
    assert results[True][1] > 0.6 and abs(results[True][1] - results[False][1]) < 0.05, (results[True][1],
                                                                                           results[False][1])
