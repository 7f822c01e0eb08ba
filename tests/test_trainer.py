"""The trainer on digits, on the CPU: determinism, resume, the teacher cache, failures."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kdcore.errors import KDError, TrainingDivergedError
from kdcore.spec import RunSpec
from kdcore.train import RecordingCallbacks, train
from kdcore.train.checkpoint import load_checkpoint
from kdcore.train.transfer import UNLABELLED, build_transfer_set


def digits_spec(**over) -> RunSpec:
    base = {"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 3, "batch_size": 64,
            "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0005}, "probe_size": 20}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return RunSpec.from_dict(base)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(digits_spec(student="cnn_small", epochs=4), out)
    return out / "checkpoint.pt"


def kd_spec(teacher_ckpt, **over) -> RunSpec:
    return digits_spec(teacher={"source": "checkpoint", "checkpoint": str(teacher_ckpt)},
                       logit={"rho": 4.0, "alpha": 0.5, "beta": 0.5}, **over)


class StopAfter(RecordingCallbacks):
    """Cancels the run once `steps` optimisation steps have been reported done."""

    def __init__(self, epochs_done: int):
        super().__init__()
        self.epochs_done = epochs_done

    def should_stop(self) -> bool:
        return len(self.epochs) >= self.epochs_done


def test_scratch_run_writes_artifacts_and_reports_every_epoch(tmp_path):
    cb = RecordingCallbacks()
    result = train(digits_spec(), tmp_path, cb)
    assert result.status == "completed" and result.epochs_done == 3
    assert [e for e, _, _ in cb.epochs] == [1, 2, 3]
    assert {"train/acc", "val/acc", "test/acc", "calib/ece_student"} <= set(cb.epochs[-1][2])
    assert {"loss/total", "loss/hard", "lr", "throughput"} <= set(cb.steps[-1][2])
    steps = [s for _, s, _ in cb.steps]
    assert steps == sorted(set(steps)) and steps[-1] == result.step
    for name in ("checkpoint.pt", "metrics.csv", "spec.yaml", "probes.pt"):
        assert (tmp_path / name).is_file()
    assert RunSpec.from_yaml((tmp_path / "spec.yaml").read_text()) == digits_spec()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")  # weights_only load
    assert ckpt["epoch"] == 3 and ckpt["model"]["name"] == "mlp_64"
    # metrics.csv holds every series the run view plots: the step series as delivered and the epoch rows
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert list(table.columns) == ["kind", "epoch", "step", "name", "value"]
    step_rows = table[table["kind"] == "step"]
    assert sorted(set(step_rows["step"])) == steps
    assert {"loss/total", "loss/hard", "lr", "throughput"} <= set(step_rows["name"])
    delivered = {(s, n): v for _, s, m in cb.steps for n, v in m.items()}
    assert all(abs(delivered[(r.step, r.name)] - r.value) < 1e-9 for r in step_rows.itertuples())
    epoch_rows = table[table["kind"] == "epoch"]
    assert sorted(set(epoch_rows["epoch"])) == [1, 2, 3] and "val/acc" in set(epoch_rows["name"])
    assert len(load_checkpoint(tmp_path / "checkpoint.pt")["step_log"]) == len(cb.steps)


def test_kd_run_reports_fidelity_and_probe_logits(tmp_path, teacher_ckpt):
    cb = RecordingCallbacks()
    train(kd_spec(teacher_ckpt), tmp_path, cb)
    last = cb.epochs[-1][2]
    assert 0 <= last["fidelity/agreement"] <= 1 and last["fidelity/kl_rho1"] >= 0
    assert {"loss/hard", "loss/soft"} <= set(cb.steps[-1][2])
    assert cb.info["teacher"] == "cnn_small" and cb.info["compression"] > 1
    probes = torch.load(tmp_path / "probes.pt", weights_only=True)
    assert probes["teacher"].shape == (20, 10) and len(probes["student"]) == 3
    assert probes["images"].dtype == torch.uint8 and probes["epochs"] == [1, 2, 3]
    # class-stratified: 20 probes over 10 classes -> 2 per class
    assert torch.bincount(probes["labels"], minlength=10).tolist() == [2] * 10


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, teacher_ckpt):
    # augmentation, shuffling and dropout-free KD: every random draw must replay after resume
    spec = kd_spec(teacher_ckpt, epochs=4, dataset={"name": "digits", "augment": True})
    straight = train(spec, tmp_path / "straight")
    stopper = StopAfter(epochs_done=2)
    first = train(spec, tmp_path / "resumed", stopper)
    assert first.status == "cancelled" and first.epochs_done == 2
    first_csv = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    cb = RecordingCallbacks()
    second = train(spec, tmp_path / "resumed", cb)
    assert cb.resumed_at == (2, first.step) and [e for e, _, _ in cb.epochs] == [3, 4]
    assert second.step == straight.step
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    history = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    # the resumed run's metrics.csv keeps the first attempt's step rows and adds the second's
    resumed_csv = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert resumed_csv[resumed_csv["step"] <= first.step].equals(first_csv)
    step_rows = resumed_csv[resumed_csv["kind"] == "step"]
    assert set(step_rows["epoch"]) == {1, 2, 3, 4} and step_rows["step"].max() == second.step


def test_teacher_weights_and_bn_statistics_are_never_updated(tmp_path, teacher_ckpt):
    before = load_checkpoint(teacher_ckpt)["state_dict"]
    from kdcore.train.trainer import Trainer

    trainer = Trainer(kd_spec(teacher_ckpt, epochs=2), tmp_path)
    trainer.run()
    after = trainer.teacher.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k].cpu()), k
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    assert load_checkpoint(teacher_ckpt)["state_dict"]["fc.weight"].equal(before["fc.weight"])


@pytest.mark.parametrize("over, cached", [
    ({"dataset": {"name": "digits", "augment": False}}, True),
    ({"dataset": {"name": "digits", "augment": True}}, True),  # a fixed set of augmented views
    ({"dataset": {"name": "digits", "augment": True}, "teacher_cache": "off"}, False),
    ({"dataset": {"name": "digits", "augment": False}, "teacher_cache": "off"}, False),
    ({"dataset": {"name": "digits", "augment": False}, "transfer": {"kind": "noisy", "noise_std": 0.1}}, False),
])
def test_teacher_cache_is_used_only_when_the_teacher_sees_the_students_inputs(tmp_path, teacher_ckpt, over, cached):
    cb = RecordingCallbacks()
    train(kd_spec(teacher_ckpt, epochs=1, **over), tmp_path, cb)
    assert cb.info["teacher_cache"] is cached


def test_teacher_cache_does_not_change_the_result(tmp_path, teacher_ckpt):
    fixed = {"dataset": {"name": "digits", "augment": False}, "epochs": 2}
    cb_on, cb_off = RecordingCallbacks(), RecordingCallbacks()
    train(kd_spec(teacher_ckpt, **fixed), tmp_path / "on", cb_on)
    train(kd_spec(teacher_ckpt, teacher_cache="off", **fixed), tmp_path / "off", cb_off)
    assert cb_on.info["teacher_cache"] and not cb_off.info["teacher_cache"]
    a = load_checkpoint(tmp_path / "on" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "off" / "checkpoint.pt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_hint_run_with_a_regressor_trains_student_side_transforms(tmp_path, teacher_ckpt):
    spec = kd_spec(teacher_ckpt, epochs=1, student="lenet5_half",
                   hints=[{"teacher_layer": "stage2", "student_layer": "conv2", "preset": "fitnets"}])
    cb = RecordingCallbacks()
    train(spec, tmp_path, cb)
    assert any(k.startswith("loss/hint0") for k in cb.steps[-1][2])
    assert not cb.info["teacher_cache"]  # hints need the teacher's features every step
    assert load_checkpoint(tmp_path / "checkpoint.pt")["feature_losses"]


def test_nan_loss_stops_the_run_naming_epoch_and_step(tmp_path, monkeypatch):
    import kdcore.train.trainer as trainer_mod

    real = trainer_mod.build_logit_loss_for

    class NanAtStep5(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            out = self.inner(*args, **kwargs)
            if self.calls == 5:
                out["hard"] = out["hard"] * float("nan")
            return out

    monkeypatch.setattr(trainer_mod, "build_logit_loss_for", lambda spec: NanAtStep5(real(spec)))
    with pytest.raises(TrainingDivergedError, match=r"NaN at epoch 1, step 5"):
        train(digits_spec(epochs=2), tmp_path)


def test_omitted_class_is_absent_from_the_transfer_set():
    x, y = torch.randn(100, 1, 8, 8), torch.arange(100) % 10
    from kdcore.spec import TransferSpec

    ts = build_transfer_set(x, y, TransferSpec(kind="omit_classes", omit_classes=[3, 7]), has_teacher=True, seed=0)
    assert len(ts) == 80 and not torch.isin(ts.y, torch.tensor([3, 7])).any()


def test_partial_labels_keep_a_stratified_fraction():
    from kdcore.spec import TransferSpec

    x, y = torch.randn(1000, 4), torch.arange(1000) % 10
    spec = TransferSpec(kind="partial_labels", label_fraction=0.05)
    kd = build_transfer_set(x, y, spec, has_teacher=True, seed=0)
    assert len(kd) == 1000 and kd.labelled == 50
    assert torch.bincount(kd.y[kd.y != UNLABELLED], minlength=10).tolist() == [5] * 10
    scratch = build_transfer_set(x, y, spec, has_teacher=False, seed=0)
    assert len(scratch) == 50 and scratch.labelled == 50


def test_teacher_with_another_class_count_is_refused(tmp_path, teacher_ckpt, monkeypatch):
    from kdcore.train.checkpoint import save_atomic

    data = load_checkpoint(teacher_ckpt)
    data["model"] = {**data["model"], "num_classes": 7}
    data["state_dict"] = {k: (v[:7] if k.startswith("fc.") else v) for k, v in data["state_dict"].items()}
    bad = tmp_path / "seven.pt"
    save_atomic(data, bad)
    with pytest.raises(KDError, match="teacher predicts 7 classes but the dataset has 10"):
        train(kd_spec(bad), tmp_path / "out")
    from kdcore.train.checks import check_spec

    assert any("7 classes" in p for p in check_spec(kd_spec(bad)))


def test_a_missing_teacher_checkpoint_is_one_sentence(tmp_path):
    with pytest.raises(KDError, match="does not exist"):
        train(kd_spec(tmp_path / "missing.pt"), tmp_path / "out")


def test_lr_schedule_warms_up_then_decays():
    from kdcore.train.trainer import lr_factor

    spec = digits_spec(epochs=10, schedule={"name": "cosine", "warmup_epochs": 2})
    factors = [lr_factor(spec, s, 10) for s in range(100)]
    assert factors[0] == pytest.approx(0.05) and factors[19] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[20:], factors[21:])) and factors[-1] < 0.01
    step = digits_spec(epochs=10, schedule={"name": "step", "milestones": [3, 6], "gamma": 0.1})
    assert [lr_factor(step, s * 10, 10) for s in (0, 3, 6)] == pytest.approx([1, 0.1, 0.01])


def test_imagefolder_spec_is_checked_against_its_folder(kd_home, monkeypatch, tmp_path):
    root = tmp_path / "data"
    for cls in ("cat", "dog", "fox"):
        (root / "animals" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "animals" / cls / "a.png")
    monkeypatch.setenv("KD_DATA_DIR", str(root))
    from kdcore.train.checks import check_spec

    ok = RunSpec.from_dict({"dataset": {"name": "imagefolder", "path": "animals"}, "student": "cnn_small"})
    assert check_spec(ok) == []
    outside = RunSpec.from_dict({"dataset": {"name": "imagefolder", "path": "../elsewhere"}, "student": "cnn_small"})
    assert check_spec(outside)[0].startswith("dataset.path:")
    assert check_spec(RunSpec.from_dict({"dataset": {"name": "imagefolder"}}))[0].startswith("dataset.path:")


def test_teacher_for_another_image_size_is_refused_in_one_sentence(tmp_path, teacher_ckpt, monkeypatch):
    from kdcore.train.checkpoint import save_atomic
    from kdcore.train.checks import check_spec

    data = load_checkpoint(teacher_ckpt)
    data["model"] = {**data["model"], "input_size": 28}  # as if trained on 28×28 Fashion-MNIST
    bad = tmp_path / "fmnist_sized.pt"
    save_atomic(data, bad)
    assert any("built for 28×28 images" in p for p in check_spec(kd_spec(bad)))
    with pytest.raises(KDError, match="built for 28×28 images but the dataset's are 8×8"):
        train(kd_spec(bad), tmp_path / "out")


def test_a_folder_holding_another_specs_checkpoint_is_left_intact(tmp_path):
    train(digits_spec(epochs=1), tmp_path)
    before = (tmp_path / "spec.yaml").read_text()
    with pytest.raises(KDError, match="checkpoint of a different spec"):
        train(digits_spec(epochs=2, student="mlp_800_800"), tmp_path)
    assert (tmp_path / "spec.yaml").read_text() == before
    # what a run is called, its tags and where it runs do not make it another spec: it resumes
    cb = RecordingCallbacks()
    result = train(digits_spec(epochs=1, name="renamed", tags=["x"], device="cpu"), tmp_path, cb)
    assert cb.resumed_at is not None and cb.resumed_at[0] == 1 and result.status == "completed"


def test_fewer_probes_than_classes_still_cover_every_class(tmp_path):
    train(digits_spec(epochs=1, probe_size=4), tmp_path)
    probes = torch.load(tmp_path / "probes.pt", weights_only=True)
    assert sorted(probes["labels"].tolist()) == list(range(10))


def test_fidelity_metrics_against_hand_computed_values():
    from kdcore.train.fidelity import agreement, expected_calibration_error, mean_kl

    t = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    assert agreement(s, t) == pytest.approx(1 / 3)
    p_t, p_s = torch.softmax(t, 1), torch.softmax(s, 1)
    expected = sum(float((p_t[i] * (p_t[i] / p_s[i]).log()).sum()) for i in range(3)) / 3
    assert mean_kl(t, s) == pytest.approx(expected, rel=1e-5)
    p_t4, p_s4 = torch.softmax(t / 4, 1), torch.softmax(s / 4, 1)
    assert mean_kl(t, s, 4.0) == pytest.approx(float((p_t4 * (p_t4 / p_s4).log()).sum(1).mean()), rel=1e-5)
    # two samples, both predicted with confidence 0.8 (same bin), one right: |0.5 - 0.8| = 0.3
    logit = float(torch.log(torch.tensor(4.0)))
    z = torch.tensor([[logit, 0.0], [logit, 0.0]])
    assert expected_calibration_error(z, torch.tensor([0, 1])) == pytest.approx(0.3, abs=1e-6)
    # perfectly calibrated: confidence 1.0 and always right
    assert expected_calibration_error(torch.tensor([[50.0, 0.0]]), torch.tensor([0])) == pytest.approx(0, abs=1e-6)


def test_no_probes_when_probe_size_is_zero(tmp_path):
    train(digits_spec(epochs=1, probe_size=0), tmp_path)
    assert torch.load(tmp_path / "probes.pt", weights_only=True)["student"] == []


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the trainer catches it."""


def _writes_of(out_dir, monkeypatch, kill_at: int | None = None) -> list[str]:
    """Run the write calls of the trainer through a recorder (torch.save, os.replace, metrics.csv) and
    raise Killed before the `kill_at`-th write into `out_dir` of the second epoch's checkpoint."""
    import builtins
    import os

    import kdcore.train.checkpoint as checkpoint_module
    import kdcore.train.trainer as trainer_module

    seen: list[str] = []
    epoch = {"n": 0}
    real_save, real_replace, real_open = torch.save, os.replace, builtins.open
    real_checkpoint = trainer_module.Trainer._checkpoint

    def phase(name: str) -> None:
        if epoch["n"] == 2:
            if kill_at is not None and len(seen) == kill_at:
                raise Killed(name)
            seen.append(name)

    def save(obj, path, *a, **k):
        phase(f"save {os.path.basename(path)}")
        return real_save(obj, path, *a, **k)

    def replace(src, dst, *a, **k):
        phase(f"replace {os.path.basename(dst)}")
        return real_replace(src, dst, *a, **k)

    def open_(path, mode="r", *a, **k):
        if "w" in mode and str(path).startswith(str(out_dir)):
            phase(f"write {os.path.basename(path)}")
        return real_open(path, mode, *a, **k)

    def checkpoint(self, ep, step, history):
        epoch["n"] = ep
        real_checkpoint(self, ep, step, history)
        if ep == 2 and kill_at == len(seen):
            raise Killed("after the checkpoint")

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(trainer_module.Trainer, "_checkpoint", checkpoint)
    return seen


def test_a_kill_at_every_write_phase_of_a_checkpoint_leaves_weights_history_and_probes_agreeing(
        tmp_path, monkeypatch):
    # a checkpoint after every epoch, so epoch 2 has one to interrupt
    spec = digits_spec(epochs=3, probe_size=10, dataset={"name": "digits", "train_limit": 200}, checkpoint_every_s=0)
    with monkeypatch.context() as m:
        phases = _writes_of(tmp_path / "clean", m)
        train(spec, tmp_path / "clean")
    assert len(phases) >= 2, phases
    probe_epochs, stored_epochs = {}, {}
    for kill_at in range(len(phases) + 1):
        out = tmp_path / f"kill{kill_at}"
        with monkeypatch.context() as m:
            _writes_of(out, m, kill_at=kill_at)
            with pytest.raises(Killed):
                train(spec, out)
        assert train(spec, out).status == "completed"
        ckpt = load_checkpoint(out / "checkpoint.pt")
        assert [h["epoch"] for h in ckpt["history"]] == [1, 2, 3]
        where = f"killed before {phases[kill_at]}" if kill_at < len(phases) else "killed after the checkpoint"
        probe_epochs[where] = torch.load(out / "probes.pt", weights_only=True)["epochs"]
        stored_epochs[where] = (ckpt.get("probes") or {}).get("epochs")
    assert probe_epochs == {where: [1, 2, 3] for where in probe_epochs}
    assert stored_epochs == probe_epochs


def test_restore_refuses_a_checkpoint_whose_probes_disagree_with_its_history(tmp_path):
    from kdcore.train.checkpoint import save_atomic

    spec = digits_spec(epochs=2, probe_size=10, dataset={"name": "digits", "train_limit": 200})
    assert train(spec, tmp_path, StopAfter(epochs_done=1)).status == "cancelled"
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    ckpt["probes"]["epochs"], ckpt["probes"]["student"] = [], []
    save_atomic(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(KDError, match=r"probe epochs \[\] do not match its history \[1\]"):
        train(spec, tmp_path)
