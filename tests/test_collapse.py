"""A student that stops learning while its loss stays finite is reported in one sentence; gradient clipping."""
from __future__ import annotations

import torch

from kdcore.commands.train import summary_lines
from kdcore.spec import RunSpec
from kdcore.train import train
from kdcore.train.callbacks import RecordingCallbacks
from kdcore.train.health import CollapseWatch
from kdcore.train.trainer import Trainer

LABELS = torch.arange(100) % 10


def logits_for(pred: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred, 10).float()


def right(fraction: float) -> torch.Tensor:
    """Predictions right on `fraction` of LABELS, the rest spread over the other classes."""
    pred = LABELS.clone()
    wrong = torch.arange(int(len(LABELS) * (1 - fraction)))
    pred[wrong] = (LABELS[wrong] + 1) % 10
    return logits_for(pred)


def test_constant_predictions_warn_once_after_patience():
    watch = CollapseWatch(10, lr=0.05, patience=2)
    constant = logits_for(torch.full((100,), 3))
    assert watch.update(1, right(0.5), LABELS) is None
    assert watch.update(2, constant, LABELS) is None  # one epoch is not yet a collapse
    warning = watch.update(3, constant, LABELS)
    assert warning is not None and "epoch 2" in warning and "one class" in warning
    assert "optimizer.lr: 0.01" in warning and "clip_grad_norm" in warning
    assert watch.update(4, constant, LABELS) is None  # said once


def test_accuracy_back_at_chance_after_learning_warns():
    watch = CollapseWatch(10, lr=0.05)
    assert watch.update(1, right(0.6), LABELS) is None
    assert watch.update(2, right(0.1), LABELS) is None
    assert "back at chance" in watch.update(3, right(0.1), LABELS)


def test_a_learning_student_or_a_slow_start_is_not_a_collapse():
    watch = CollapseWatch(10, lr=0.05)
    for epoch, fraction in enumerate((0.1, 0.12, 0.3, 0.5, 0.45, 0.7), start=1):  # chance first, then learning
        assert watch.update(epoch, right(fraction), LABELS) is None
    recovered = CollapseWatch(10, lr=0.05)
    assert recovered.update(1, logits_for(torch.zeros(100, dtype=torch.long)), LABELS) is None
    assert recovered.update(2, right(0.4), LABELS) is None  # the run of collapsed epochs is broken
    assert recovered.update(3, logits_for(torch.zeros(100, dtype=torch.long)), LABELS) is None


def digits(**over) -> RunSpec:
    base = {"dataset": {"name": "digits", "augment": False}, "student": "mlp_64", "epochs": 4, "batch_size": 64,
            "probe_size": 0, "checkpoint_every_s": 1e6}
    return RunSpec.from_dict({**base, **over})


def test_huge_learning_rate_kills_the_student_and_the_run_says_so(tmp_path):
    cb = RecordingCallbacks()
    result = train(digits(optimizer={"lr": 5.0}), tmp_path / "dead", cb, resume=False)
    assert result.status == "completed" and result.final["val/acc"] < 0.15
    assert len(cb.warnings) == 1 and "stopped learning" in cb.warnings[0]
    assert result.info["warnings"] == cb.warnings
    assert any(line == f"warning: {cb.warnings[0]}" for line in cb.logs)
    assert f"warning: {cb.warnings[0]}" in summary_lines(result.info, result.final)


def test_a_normal_run_gives_no_warning(tmp_path):
    cb = RecordingCallbacks()
    result = train(digits(), tmp_path / "ok", cb, resume=False)
    assert result.final["val/acc"] > 0.5
    assert cb.warnings == [] and "warnings" not in result.info
    assert not any(line.startswith("warning") for line in summary_lines(result.info, result.final))


def test_clip_grad_norm_bounds_every_step(tmp_path):
    """Plain SGD (no momentum, no weight decay): a parameter moves at most lr·max_norm per step."""
    plain = {"momentum": 0.0, "weight_decay": 0.0, "lr": 0.05}
    moved, steps = {}, {}
    for label, clip in (("clipped", 1e-6), ("free", None)):
        spec = digits(epochs=1, schedule={"name": "constant"}, optimizer={**plain, "clip_grad_norm": clip})
        trainer = Trainer(spec, tmp_path / label)
        trainer._setup()
        start = {k: v.clone() for k, v in trainer.student.state_dict().items()}
        steps[label], _ = trainer._epoch(1, 0)
        end = trainer.student.state_dict()
        moved[label] = max(float((end[k] - start[k]).abs().max()) for k in start)
    assert moved["clipped"] <= steps["clipped"] * 0.05 * 1e-6 * 1.01
    assert moved["free"] > 1e-3
    assert RunSpec.from_yaml(digits(optimizer={"clip_grad_norm": 1.0}).to_yaml()).optimizer.clip_grad_norm == 1.0
