"""kdcore.lab.few_labels: a student on a few labelled digits, from scratch against distilled from the shipped
teacher. The slow test trains the real students and states the lab's claim: the teacher helps on every seed."""
from __future__ import annotations

import numpy as np
import pytest

from kdcore.data import num_batches
from kdcore.lab import assets
from kdcore.lab import few_labels as fl


def test_both_students_share_seed_labels_and_steps():
    arms = fl.specs(0.05, seed=1)
    scratch, kd = arms[fl.ARMS[0]], arms[fl.ARMS[1]]
    assert scratch.teacher is None and kd.teacher.checkpoint == str(assets.teacher_path("digits"))
    assert kd.logit.rho == fl.RHO and kd.logit.alpha == fl.ALPHA and kd.logit.beta == fl.BETA
    for spec in (scratch, kd):
        assert spec.seed == 1 and spec.student == kd.student and spec.dataset.name == "digits"
        assert spec.transfer.kind == "partial_labels" and spec.transfer.label_fraction == 0.05
        assert spec.device == "cpu" and spec.evaluation.test == "every_epoch"
    labelled = fl.labelled_count(0.05, seed=1)
    assert labelled == 65  # about 6 per digit, stratified
    kd_steps = kd.epochs * num_batches(1295, kd.batch_size, merge_single=True)
    per_epoch = num_batches(labelled, kd.batch_size, merge_single=True)
    assert (scratch.epochs - 1) * per_epoch < kd_steps <= scratch.epochs * per_epoch  # as many optimiser steps
    assert [fl.labelled_count(f) for f in fl.LABEL_FRACTIONS] == sorted(fl.labelled_count(f) for f in fl.LABEL_FRACTIONS)


@pytest.mark.slow
def test_the_teacher_helps_on_every_seed():
    """65 labelled digits: checked over five seeds (different labelled images each) that the distilled student
    beats the one from scratch on every seed, by several points (measured: +6.7 to +13.4 points)."""
    import threading

    before = {t.ident for t in threading.enumerate()}
    result = fl.run(fl.DEFAULT_FRACTION, seeds=range(5))
    assert not [t.name for t in threading.enumerate() if t.ident not in before]  # nothing left running
    assert (result.labelled, result.unlabelled) == (65, 1230)
    gains = result.gains()
    assert len(gains) == 5 and (gains > 0.03).all(), gains
    summary = result.summary().set_index("arm")
    assert summary.loc[fl.ARMS[1], "mean"] - summary.loc[fl.ARMS[0], "mean"] > 0.05
    assert summary.loc[fl.ARMS[1], "mean"] > 0.9 and list(summary["n"]) == [5, 5]
    steps = result.curves.groupby("arm")["step"].max()
    assert steps[fl.ARMS[0]] >= steps[fl.ARMS[1]] > 0  # the scratch student was not short of steps
    finals = result.final.set_index(["arm", "seed"])["test_acc"]
    last = result.curves.sort_values("step").groupby(["arm", "seed"])["test_acc"].last()
    assert np.allclose(finals.sort_index(), last.sort_index())  # the final accuracy is the curve's last point
    assert 0.9 < result.teacher_test_acc <= 1.0
