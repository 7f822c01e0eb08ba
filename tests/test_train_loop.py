"""The step loop: the same weights as a plain loop, checkpoints by time that still resume exactly, and the
teacher-logit cache over augmented views (CPU, digits)."""
from __future__ import annotations

import types

import pytest
import torch

from kdcore.spec import RunSpec
from kdcore.train import RecordingCallbacks, Trainer, train
from kdcore.train.checkpoint import load_checkpoint
from kdcore.train.trainer import autocast_for


def spec_of(teacher_ckpt=None, **over) -> RunSpec:
    base = {"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 3, "batch_size": 64, "probe_size": 10,
            "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0005}, "device": "cpu"}
    if teacher_ckpt is not None:
        base.update(teacher={"source": "checkpoint", "checkpoint": str(teacher_ckpt)},
                    logit={"rho": 4.0, "alpha": 0.5, "beta": 0.5},
                    transfer={"kind": "partial_labels", "label_fraction": 0.2})
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return RunSpec.from_dict(base)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(spec_of(student="cnn_small", epochs=3, probe_size=0), out)
    return out / "checkpoint.pt"


def plain_loop(trainer: Trainer, epochs: int) -> list[float]:
    """The loop as written before it became sync-free: host reads every step, a fresh augmentation drawn per
    batch from the epoch's generator, the teacher run on every batch. Returns each step's total loss."""
    from kdcore.data import TensorSplit, iterate_batches

    spec, losses = trainer.spec, []
    for epoch in range(1, epochs + 1):
        epoch_seed = spec.seed * 1_000_003 + epoch
        torch.manual_seed(epoch_seed)
        order_gen = torch.Generator().manual_seed(epoch_seed)
        device_gen = torch.Generator(device=trainer.device).manual_seed(epoch_seed)
        trainer.distiller.train()
        split = TensorSplit(trainer.transfer.x, trainer.transfer.y)
        for x, y, _ in iterate_batches(split, spec.batch_size, shuffle=True, generator=order_gen):
            if trainer.augment:
                x = trainer.augment(x, device_gen)
            with autocast_for(trainer.device, trainer.precision):
                _, terms = trainer.distiller(x, y, epoch=epoch)
            total = sum(v.float() for v in terms.values())
            trainer.optimizer.zero_grad(set_to_none=True)
            total.backward()
            trainer.optimizer.step()
            trainer.scheduler.step()
            losses.append(float(total.detach()))
    return losses



@pytest.mark.parametrize("augment", [False, True])
def test_the_sync_free_loop_gives_the_plain_loops_weights_and_losses(tmp_path, teacher_ckpt, augment):
    spec = spec_of(teacher_ckpt, dataset={"name": "digits", "augment": augment}, teacher_cache="off")
    cb = RecordingCallbacks()
    result = train(spec, tmp_path / "trainer", cb)
    reference = Trainer(spec, tmp_path / "plain")
    reference._setup()
    losses = plain_loop(reference, spec.epochs)
    ours = load_checkpoint(tmp_path / "trainer" / "checkpoint.pt")["state_dict"]
    for name, value in reference.student.state_dict().items():
        assert torch.equal(ours[name], value), name
    assert result.step == len(losses)
    # every reported interval's mean loss is the mean of the plain loop's per-step losses over that interval
    first = 0
    for _, step, metrics in cb.steps:
        chunk = losses[first:step]
        assert metrics["loss/total"] == pytest.approx(sum(chunk) / len(chunk), rel=1e-5)
        first = step
    steps_per_epoch = result.step // spec.epochs
    for epoch, step, _metrics in cb.epochs:
        assert step == epoch * steps_per_epoch


class CrashOnEpoch(RecordingCallbacks):
    """A process dying at the end of an epoch, before its checkpoint."""

    def __init__(self, epoch: int):
        super().__init__()
        self.crash_epoch = epoch

    def on_epoch(self, epoch, step, metrics):
        super().on_epoch(epoch, step, metrics)
        if epoch == self.crash_epoch:
            raise RuntimeError("power cut")


def test_checkpoints_by_time_and_at_the_end_still_resume_exactly(tmp_path, teacher_ckpt, monkeypatch):
    import kdcore.train.trainer as trainer_module

    spec = spec_of(teacher_ckpt, epochs=4, checkpoint_every_s=10.0, dataset={"name": "digits", "augment": True})
    straight = train(spec, tmp_path / "straight")
    cb = CrashOnEpoch(4)
    # a clock where each finished epoch takes 6 s: only epoch 2 is more than 10 s after the start
    fake_time = types.SimpleNamespace(perf_counter=trainer_module.time.perf_counter,
                                      monotonic=lambda: 6.0 * len(cb.epochs))
    saved = []
    real_checkpoint = Trainer._checkpoint
    monkeypatch.setattr(trainer_module, "time", fake_time)
    monkeypatch.setattr(Trainer, "_checkpoint", lambda self, e, s, h: (saved.append(e), real_checkpoint(self, e, s, h)))
    with pytest.raises(RuntimeError, match="power cut"):
        train(spec, tmp_path / "resumed", cb)
    assert saved == [2]  # not after epochs 1 and 3 (within 10 s of the last), and the crash came before 4's
    monkeypatch.undo()
    again = RecordingCallbacks()
    second = train(spec, tmp_path / "resumed", again)
    assert again.resumed_at == (2, 2 * straight.step // 4) and [e for e, _, _ in again.epochs] == [3, 4]
    assert second.step == straight.step
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3, 4]
    probes = torch.load(tmp_path / "resumed" / "probes.pt", weights_only=True)
    assert probes["epochs"] == [1, 2, 3, 4]


def test_a_stop_between_checkpoints_writes_the_finished_epoch_first(tmp_path):
    class StopAfterTwo(RecordingCallbacks):
        def should_stop(self):
            return len(self.epochs) >= 2

    cb = StopAfterTwo()
    result = train(spec_of(epochs=5, checkpoint_every_s=3600), tmp_path, cb)
    assert result.status == "cancelled" and result.epochs_done == 2
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2


def test_the_augmented_cache_serves_the_teachers_logits_for_the_stored_views(tmp_path, teacher_ckpt):
    spec = spec_of(teacher_ckpt, epochs=3, teacher_cache_views=2, dataset={"name": "digits", "augment": True})
    cb = RecordingCallbacks()
    trainer = Trainer(spec, tmp_path, cb)
    trainer.run()
    cache = trainer.teacher_cache
    assert cb.info["teacher_cache"] and cb.info["teacher_cache_views"] == 2
    assert cache.filled == [True, True]
    x_all, y_all = trainer.transfer.x, trainer.transfer.y
    index = torch.arange(0, len(y_all), 7)
    for view in range(2):
        images = cache.inputs(x_all[index], index, view)
        assert not torch.equal(images, x_all[index])  # the views are augmented ...
        assert torch.equal(images, cache.inputs(x_all[index], index, view))  # ... the same way each time
        with torch.no_grad():
            fresh = trainer.teacher(images)
        stored = cache.lookup(index, view)
        torch.testing.assert_close(stored, fresh, rtol=1e-5, atol=1e-5)
        _, cached_loss = trainer.distiller(images, y_all[index], teacher_logits=stored)
        _, fresh_loss = trainer.distiller(images, y_all[index])
        for term in fresh_loss:
            torch.testing.assert_close(cached_loss[term], fresh_loss[term], rtol=1e-5, atol=1e-6)
    # the views differ from each other
    assert not torch.equal(cache.view_params(0), cache.view_params(1))


def test_a_cache_draws_a_views_augmentation_when_an_epoch_first_shows_it(monkeypatch):
    from kdcore.data import Augmentation
    from kdcore.train.teacher_cache import _VIEW_SEED_STRIDE, TeacherCache

    real_draw, draws = Augmentation.draw, []
    monkeypatch.setattr(Augmentation, "draw", lambda self, n, *args: draws.append(n) or real_draw(self, n, *args))
    augment = Augmentation(crop_padding=2, hflip=True)
    cache = TeacherCache(50, 10, 4, augment, seed=3, device=torch.device("cpu"))
    assert draws == []  # nothing drawn at start-up
    x, index = torch.randn(50, 1, 8, 8), torch.arange(0, 50, 3)
    shown = cache.inputs(x[index], index, 2)
    assert torch.equal(cache.inputs(x[index], index, 2), shown) and draws == [50]  # drawn once, then kept
    expected = real_draw(augment, 50, torch.Generator().manual_seed(3 * _VIEW_SEED_STRIDE + 2))
    assert torch.equal(cache.view_params(2), expected) and torch.equal(shown, augment.apply(x[index], expected[index]))


def test_a_cached_run_trains_like_the_uncached_run_of_the_same_views(tmp_path, teacher_ckpt, monkeypatch):
    from kdcore.train.teacher_cache import TeacherCache

    spec = spec_of(teacher_ckpt, epochs=3, teacher_cache_views=2, dataset={"name": "digits", "augment": True})
    train(spec, tmp_path / "cached")
    monkeypatch.setattr(TeacherCache, "lookup", lambda self, index, view: None)  # the teacher on every batch
    train(spec, tmp_path / "uncached")
    a = load_checkpoint(tmp_path / "cached" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "uncached" / "checkpoint.pt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_labels_are_checked_once_before_the_first_step_and_never_per_step(tmp_path, monkeypatch):
    import kdcore.losses.logits as logits
    import kdcore.train.trainer as trainer_mod
    from kdcore.errors import KDError
    from kdcore.train.transfer import TransferSet

    per_step_checks = []
    real_check = logits.check_labels
    monkeypatch.setattr(logits, "check_labels", lambda y, n: per_step_checks.append(len(y)) or real_check(y, n))
    cb = RecordingCallbacks()
    train(spec_of(epochs=1), tmp_path / "good", cb)
    assert cb.steps and per_step_checks == []  # good labels: no step paid for a check

    real_build = trainer_mod.build_transfer_set

    def with_a_bad_label(*args, **kwargs):
        good = real_build(*args, **kwargs)
        return TransferSet(good.x, good.y.clone().index_fill_(0, torch.tensor([3]), 12), good.noise_std)

    monkeypatch.setattr(trainer_mod, "build_transfer_set", with_a_bad_label)
    cb = RecordingCallbacks()
    with pytest.raises(KDError, match=r"must lie in 0…9 .* but 1 do not \(e\.g\. 12\)"):
        train(spec_of(epochs=1), tmp_path / "bad", cb)
    assert cb.steps == [] and not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_a_teachers_test_logits_are_kept_between_runs_of_the_same_teacher_file(tmp_path, teacher_ckpt, kd_home,
                                                                                teacher_passes):
    import os

    from kdcore import paths

    spec = spec_of(teacher_ckpt, epochs=1)
    first, second = RecordingCallbacks(), RecordingCallbacks()
    train(spec, tmp_path / "first", first)
    assert len(teacher_passes) == 1 and len(list((paths.cache_dir() / "logits").glob("*.pt"))) == 1
    train(spec, tmp_path / "second", second)
    assert len(teacher_passes) == 1  # the second run from the same teacher file reads them back
    assert second.info["teacher_test_acc"] == first.info["teacher_test_acc"]
    probes = [torch.load(tmp_path / run / "probes.pt", weights_only=True)["teacher"] for run in ("first", "second")]
    assert torch.equal(probes[0], probes[1])

    stat = os.stat(teacher_ckpt)  # a teacher file written again (a retrained teacher) is scored again
    os.utime(teacher_ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    train(spec, tmp_path / "third")
    assert len(teacher_passes) == 2


def test_teacher_logits_on_kept_splits_are_named_by_the_split_and_shared_with_the_quality_check(
        tmp_path, kd_home, monkeypatch, teacher_passes, small_fashion_mnist):
    import numpy as np

    from kdcore import paths
    from kdcore.data import clear_cache, write_idx
    from kdcore.lab.assets import teacher_path
    from kdcore.train import split_logits
    from kdcore.train.teacher_quality import evaluate_teachers

    folder = small_fashion_mnist  # its splits are kept, and named
    named = []
    real_key = split_logits._key
    monkeypatch.setattr(split_logits, "_key", lambda *args: named.append(args[-1]) or real_key(*args))

    spec = RunSpec.from_dict({"dataset": {"name": "fashion-mnist"}, "student": "mlp_64", "epochs": 1, "device": "cpu",
                              "batch_size": 16, "probe_size": 10,
                              "teacher": {"source": "checkpoint", "checkpoint": str(teacher_path("fashion-mnist"))}})
    trainers = [Trainer(spec, tmp_path / run) for run in ("first", "second")]
    for trainer in trainers:
        trainer._setup()
    (score,), _ = evaluate_teachers(spec.teacher, spec.dataset)
    assert len(teacher_passes) == 1 and len(list((paths.cache_dir() / "logits").glob("*.pt"))) == 1
    assert torch.equal(trainers[1].teacher_test_logits, trainers[0].teacher_test_logits)
    assert torch.equal(score.logits, trainers[0].teacher_test_logits)  # the quality check reads the same
    assert named and all(key == f"{trainers[0].data.key}/test" for key in named)  # named, not hashed

    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((20, 28, 28), dtype=np.uint8))  # other test images
    clear_cache()
    Trainer(spec, tmp_path / "third")._setup()
    assert len(teacher_passes) == 2 and len(list((paths.cache_dir() / "logits").glob("*.pt"))) == 2


def test_kept_split_logits_belong_to_the_exact_inputs_and_evaluation(tmp_path, kd_home):
    from kdcore.train.split_logits import cached_split_logits

    source = tmp_path / "teacher.pt"
    source.write_bytes(b"weights")
    computed = []

    def compute(x):
        computed.append(x)
        return x.sum(dim=(1, 2, 3)).unsqueeze(1).repeat(1, 10)

    x = torch.randn(6, 1, 8, 8)
    y = x.clone()
    y[5, 0, 7, 7] += 1e-3  # one pixel differs
    first = cached_split_logits(source, x, "cpu|fp32", lambda: compute(x))
    assert torch.equal(cached_split_logits(source, x.clone(), "cpu|fp32", lambda: compute(x)), first)
    assert len(computed) == 1
    cached_split_logits(source, y, "cpu|fp32", lambda: compute(y))
    cached_split_logits(source, x, "cpu|bf16", lambda: compute(x))
    cached_split_logits(None, x, "cpu|fp32", lambda: compute(x))  # no file (torchvision weights): never kept
    assert len(computed) == 4


def test_the_teacher_stays_in_eval_mode_through_every_switch_of_the_distiller(tmp_path, teacher_ckpt):
    trainer = Trainer(spec_of(teacher_ckpt, student="cnn_small"), tmp_path)
    trainer._setup()
    distiller = trainer.distiller

    def modes(model):
        return {m.training for m in model.modules()}

    distiller.train()
    assert modes(distiller.student) == {True} and modes(distiller.teacher) == {False}
    distiller.eval()
    assert modes(distiller.student) == {False} and modes(distiller.teacher) == {False}
    distiller.teacher.train()  # something switched it: the next switch of the distiller puts it back
    distiller.train()
    assert modes(distiller.student) == {True} and modes(distiller.teacher) == {False} and distiller.training
