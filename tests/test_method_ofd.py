"""OFD as Heo et al. define it: pre-ReLU features on both sides and stage weights 1/2^(n−i−1)."""
import pytest
import torch

from kdcore.errors import IncompatibleLayersError
from kdcore.models.registry import build_model
from kdcore.spec import HintSpec, RunSpec
from kdcore.train import RecordingCallbacks, train
from kdcore.train.distiller import resolve_hints

TEACHER_CKPT = "kdcore/assets/teacher_digits.pt"


def ofd_pairs(*layers):
    return [HintSpec(teacher_layer=t, student_layer=s, preset="ofd") for t, s in layers]


def test_ofd_reads_the_students_pre_relu_feature_and_weights_stages_by_halves():
    teacher, student = build_model("resnet8", 10, 1, 28), build_model("cnn_small", 10, 1, 28)
    resolved = resolve_hints(ofd_pairs(("layer2", "stage1"), ("layer3", "stage2")), teacher, student)
    assert [r.student_path for r in resolved] == ["stage1.preact", "stage2.preact"]  # before the ReLU
    assert [r.teacher_path for r in resolved] == ["layer2.0.preact", "layer3.0.preact"]
    assert [r.weight for r in resolved] == pytest.approx([1e-3 / 2, 1e-3])  # the deepest pair counts most
    three = resolve_hints(ofd_pairs(("layer1", "stage1"), ("layer2", "stage1"), ("layer3", "stage2")),
                          teacher, student)
    assert [r.weight for r in three] == pytest.approx([1e-3 / 4, 1e-3 / 2, 1e-3])
    # other presets in the same spec keep their own weight
    mixed = resolve_hints([HintSpec(teacher_layer="layer2", student_layer="stage1", preset="at")]
                          + ofd_pairs(("layer3", "stage2")), teacher, student)
    assert [r.weight for r in mixed] == pytest.approx([1000.0, 1e-3])


def test_ofd_refuses_a_student_layer_without_a_pre_relu_feature():
    teacher, student = build_model("resnet8", 10, 1, 28), build_model("lenet5_half", 10, 1, 28)
    with pytest.raises(IncompatibleLayersError, match="student layer relu2 has no pre-ReLU feature"):
        resolve_hints(ofd_pairs(("layer3", "relu2")), teacher, student)


def test_an_ofd_run_distils_pre_relu_student_features(tmp_path):
    spec = RunSpec.from_dict({
        "dataset": {"name": "digits", "train_limit": 200}, "student": "cnn_small", "epochs": 1, "batch_size": 100,
        "teacher": {"source": "checkpoint", "checkpoint": TEACHER_CKPT}, "probe_size": 0, "device": "cpu",
        "hints": [h.model_dump() for h in ofd_pairs(("stage1", "stage1"), ("stage2", "stage2"))]})
    cb = RecordingCallbacks()
    train(spec, tmp_path, cb)
    terms = [k for k in cb.steps[-1][2] if k.startswith("loss/hint")]
    assert len(terms) == 2 and all(torch.isfinite(torch.tensor(cb.steps[-1][2][k])) for k in terms)
