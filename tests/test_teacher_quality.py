"""A teacher's quality before distilling: kdcore scores any teacher kind on the test split, and an
ensemble as its members combined at ρ=1."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdcore.errors import KDError
from kdcore.spec import DataSpec, EnsembleSpec, TeacherSpec
from kdcore.train.fidelity import expected_calibration_error

ASSETS = Path(__file__).resolve().parents[1] / "kdcore" / "assets"
DIGITS_TEACHER = ASSETS / "teacher_digits.pt"
DIGITS = DataSpec(name="digits")


def constant_checkpoint(path: Path, model: str = "mlp_64") -> Path:
    """A bare state dict whose every weight is zero: it predicts one class for every image (chance)."""
    from kdcore.models import build_model

    net = build_model(model, 10, 1, 8)
    torch.save({k: torch.zeros_like(v) for k, v in net.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def digits_test():
    from kdcore.data import load_dataset

    data = load_dataset("digits", seed=0)
    return data.test.x, data.test.y


def test_a_checkpoint_teachers_score_equals_a_direct_evaluation(kd_home, digits_test):
    from kdcore.train import evaluate_teachers
    from kdcore.train.checkpoint import load_model_from_checkpoint

    (score,), ensemble = evaluate_teachers(TeacherSpec(checkpoint=str(DIGITS_TEACHER)), DIGITS)
    x, y = digits_test
    model, _ = load_model_from_checkpoint(DIGITS_TEACHER)
    with torch.no_grad():
        direct = model.eval()(x)
    assert ensemble is None and score.name == "cnn_small"
    assert score.accuracy == pytest.approx((direct.argmax(1) == y).float().mean().item())
    assert score.accuracy > 0.9
    assert score.ece == pytest.approx(expected_calibration_error(direct, y), abs=1e-5)
    assert torch.allclose(score.logits, direct, atol=1e-4)
    # scored once: the test logits are kept in the run's cache, under the key a CPU run reads
    from kdcore import paths

    assert len(list((paths.cache_dir() / "logits").glob("*.pt"))) == 1
    again, _ = evaluate_teachers(TeacherSpec(checkpoint=str(DIGITS_TEACHER)), DIGITS)
    assert torch.equal(again[0].logits, score.logits)


@pytest.mark.parametrize("combine", ["mean", "geometric"])
def test_the_ensembles_score_is_the_reference_combination_at_rho_1(kd_home, tmp_path, digits_test, combine):
    from kdcore.train import evaluate_teachers

    weak = tmp_path / "weak.pt"
    from kdcore.models import build_model

    torch.manual_seed(3)
    torch.save(build_model("mlp_64", 10, 1, 8).state_dict(), weak)  # an untrained, random teacher
    spec = EnsembleSpec(members=[TeacherSpec(checkpoint=str(DIGITS_TEACHER)),
                                 TeacherSpec(checkpoint=str(weak), model="mlp_64")],
                        combine=combine, weights=[3, 1])
    members, ensemble = evaluate_teachers(spec, DIGITS)
    _, y = digits_test
    z1, z2 = (m.logits for m in members)
    if combine == "mean":
        p = 0.75 * F.softmax(z1, 1) + 0.25 * F.softmax(z2, 1)
    else:
        p = F.softmax(0.75 * F.log_softmax(z1, 1) + 0.25 * F.log_softmax(z2, 1), 1)
    assert ensemble.accuracy == pytest.approx((p.argmax(1) == y).float().mean().item())
    assert ensemble.ece == pytest.approx(expected_calibration_error(p.log(), y), abs=1e-5)
    assert torch.allclose(F.softmax(ensemble.logits, 1), p, atol=1e-5)
    assert members[1].accuracy < 0.3 < members[0].accuracy  # the members are scored one by one


def test_a_teacher_for_another_dataset_is_refused_in_one_sentence(kd_home):
    from kdcore.train import evaluate_teachers

    with pytest.raises(KDError, match=r"^the teacher was built for 28×28 images but the dataset's are 8×8$"):
        evaluate_teachers(TeacherSpec(checkpoint=str(ASSETS / "teacher_fashion_mnist.pt")), DIGITS)


def test_a_cpu_run_reads_the_logits_the_quality_check_kept(kd_home, tmp_path, teacher_passes):
    from kdcore.spec import RunSpec
    from kdcore.train import RecordingCallbacks, evaluate_teachers, train

    (score,), _ = evaluate_teachers(TeacherSpec(checkpoint=str(DIGITS_TEACHER)), DIGITS)
    spec = RunSpec.from_dict({"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 1, "device": "cpu",
                              "teacher": {"checkpoint": str(DIGITS_TEACHER)}})
    cb = RecordingCallbacks()
    train(spec, tmp_path / "run", cb)
    assert teacher_passes == [] and cb.info["teacher_test_acc"] == pytest.approx(score.accuracy)


def test_a_member_far_below_the_others_is_warned_about_and_the_table_names_every_row():
    from app.teacher_check import Score, TeacherCheck, quality_table

    teacher = {"members": [{"source": "checkpoint", "checkpoint": "/x/a-0123456789abcdef.pt", "model": "wrn_16_2"},
                           {"source": "checkpoint", "checkpoint": "/x/b.pt", "model": "lenet5"},
                           {"source": "torchvision", "model": "tv_resnet18"}], "combine": "geometric"}
    check = TeacherCheck([Score(0.95, 0.02), Score(0.6, 0.1), None], None)
    table = quality_table(teacher, check, {}, 10, "Fashion-MNIST")
    assert [r["teacher"] for r in table.rows] == ["teacher0 · wrn_16_2 · a.pt", "teacher1 · lenet5 · b.pt",
                                                  "teacher2 · tv_resnet18 (DEFAULT weights)",
                                                  "ensemble (geometric mean, at ρ=1)"]
    assert [r["note"] for r in table.rows] == ["", "far below the others", "not checked yet",
                                               "known once every teacher can be scored"]
    assert table.warnings == ["lenet5 · b.pt (teacher1) is far below the ensemble's best (60.0% against 95.0% for "
                              "wrn_16_2 · a.pt (teacher0)): check it before distilling from it."]
    assert "run" not in table.rows[0]  # no run among the teachers


def test_a_teacher_whose_field_says_what_is_wrong_is_not_warned_about_again():
    from app.forms import teachers_with_notes
    from app.teacher_check import Score, TeacherCheck, quality_table

    teacher = {"source": "checkpoint", "checkpoint": "/x/broken.pt"}
    check = TeacherCheck([Score(problem="broken.pt is not a loadable weights-only checkpoint (UnpicklingError)")])
    values = {"teacher_source": "upload", "teacher_checkpoint_path": "/x/broken.pt"}
    noted = teachers_with_notes(values, {"teacher_checkpoint_path": ["broken.pt is not a loadable ..."]})
    assert noted == {0} and teachers_with_notes(values, {"kd.rho": ["Must be greater than 0."]}) == set()
    table = quality_table(teacher, check, {}, 10, "Digits (8×8)", noted=noted)
    assert table.warnings == [] and table.rows[0]["note"] == "not scored (the note under its field says why)"
    alone = quality_table(teacher, check, {}, 10, "Digits (8×8)")  # nothing beside the field: the table warns
    assert alone.warnings == ["checkpoint · broken.pt cannot teach on Digits (8×8): broken.pt is not a loadable "
                              "weights-only checkpoint (UnpicklingError)."]


def test_a_dataset_that_cannot_be_read_leaves_the_teachers_unchecked_without_an_error(monkeypatch):
    from app import teacher_check
    from kdcore.train import teacher_quality

    def missing(dataset):
        raise KDError("Fashion-MNIST is not on this machine")

    monkeypatch.setattr(teacher_quality, "load_test_split", missing)
    check = teacher_check.check_teachers({"checkpoint": str(DIGITS_TEACHER)}, {"name": "fashion-mnist"}, set())
    assert check.members == [None] and check.ensemble is None
