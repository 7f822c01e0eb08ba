"""Model selection on validation: the summary of a run never reads test accuracy to pick its epoch."""
import math

import pytest
from test_trainer import digits_spec

from kdcore.summary import RunSummary, select_epoch, summarize
from kdcore.train import RecordingCallbacks, train

# Test accuracy peaks at epoch 2, validation at epoch 3: selection must say 3.
HISTORY = {
    1: {"val/acc": 0.70, "test/acc": 0.71},
    2: {"val/acc": 0.75, "test/acc": 0.90, "fidelity/agreement": 0.9},
    3: {"val/acc": 0.80, "test/acc": 0.78, "fidelity/agreement": 0.8, "calib/ece_student": 0.05},
    4: {"val/acc": 0.80, "test/acc": 0.85},  # a tie on validation keeps the earlier epoch
    5: {"val/acc": 0.60, "test/acc": 0.60},
}


def test_best_val_selection_ignores_a_better_test_epoch():
    s = summarize(HISTORY, "best-val")
    assert isinstance(s, RunSummary)
    assert s.selection == "best-val" and s.selected_epoch == 3 and s.last_epoch == 5
    assert s.test_acc == 0.78 and s.val_acc == 0.80 and s.test_acc_last == 0.60
    assert s.agreement == 0.8 and s.ece == 0.05 and math.isnan(s.kl_to_teacher)
    best_test_epoch = max(HISTORY, key=lambda e: HISTORY[e]["test/acc"])
    assert best_test_epoch == 2 != s.selected_epoch


def test_selection_is_unchanged_whatever_the_test_numbers_say():
    scrambled = {e: {**m, "test/acc": 1.0 - m["test/acc"]} for e, m in HISTORY.items()}
    assert summarize(scrambled).selected_epoch == summarize(HISTORY).selected_epoch == 3


def test_last_selection_and_runs_without_validation():
    assert summarize(HISTORY, "last").selected_epoch == 5 and summarize(HISTORY, "last").selection == "last"
    no_val = {e: {"test/acc": m["test/acc"]} for e, m in HISTORY.items()}
    s = summarize(no_val, "best-val")
    assert s.selection == "last" and s.selected_epoch == 5 and s.test_acc == 0.60
    assert summarize({}) is None
    with pytest.raises(ValueError, match="best-val, last"):
        select_epoch({1: 0.5}, 1, "best-test")


def test_trainer_reads_test_only_where_validation_improved_and_at_the_end(tmp_path):
    cb = RecordingCallbacks()
    train(digits_spec(epochs=6, optimizer={"lr": 0.05}), tmp_path, cb)
    history = {e: m for e, _, m in cb.epochs}
    best, expected = -1.0, []
    for epoch in sorted(history):
        if history[epoch]["val/acc"] > best:
            best = history[epoch]["val/acc"]
            expected.append(epoch)
    expected = sorted(set(expected) | {6})
    assert [e for e in sorted(history) if "test/acc" in history[e]] == expected
    s = summarize(history)
    assert s.selected_epoch in expected and not math.isnan(s.test_acc) and s.test_acc_last == history[6]["test/acc"]


def test_validation_every_n_epochs_and_a_teaching_test_curve(tmp_path):
    cb = RecordingCallbacks()
    train(digits_spec(epochs=5, evaluation={"val_every": 2, "test": "every_epoch"}), tmp_path, cb)
    history = {e: m for e, _, m in cb.epochs}
    assert [e for e in sorted(history) if "val/acc" in history[e]] == [2, 4, 5]
    assert all("test/acc" in m for m in history.values())
    assert summarize(history).selected_epoch in (2, 4, 5)
