"""The method registry: built-ins, the spec's method union, the distiller's batch interface, method state
in checkpoints, the CLI listing, and the defects found on the way."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field

from kdcore.errors import KDError
from kdcore.methods import (
    EMBEDDING,
    Batch,
    BuildContext,
    MethodLoss,
    MethodParams,
    Needs,
    Tap,
    all_methods,
    get_method,
    register_method,
    registry,
)
from kdcore.spec import RunSpec, SpecError
from kdcore.train import RecordingCallbacks, train
from kdcore.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
BUILT_INS = {"kd": "logit", "logit_matching": "logit", "dkd": "logit", "fitnets": "feature", "at": "feature",
             "nst": "feature", "ofd": "feature", "internal_kl": "feature"}


# ---- the registry --------------------------------------------------------------------------------------
def test_every_built_in_is_registered_with_family_paper_and_parameters():
    records = {r.name: r for r in all_methods()}
    for name, family in BUILT_INS.items():
        record = records[name]
        assert record.family == family and record.paper and record.description and record.origin == "kdcore"
        assert record.params().method == name
        assert all(p["description"] for p in record.parameters()), name


def test_defaults_are_the_authors_settings():
    dkd = get_method("dkd").params()
    assert (dkd.alpha, dkd.beta, dkd.rho, dkd.ce_weight, dkd.warmup_epochs) == (1.0, 8.0, 4.0, 1.0, 20)
    kd = get_method("kd").params()
    assert (kd.rho, kd.alpha, kd.beta, kd.rho_squared) == (4.0, 0.1, 0.9, True)
    assert get_method("fitnets").params().weight == 100.0 and get_method("at").params().weight == 1000.0


def test_a_params_model_must_name_its_method():
    class Wrong(MethodParams):
        method: Literal["other"] = "other"

    with pytest.raises(KDError, match="must declare method"):
        register_method("mine", family="relation", params=Wrong, title="t", paper="p", description="d")
    with pytest.raises(KDError, match="family"):
        register_method("other", family="magic", params=Wrong, title="t", paper="p", description="d")


# ---- the spec's method union ----------------------------------------------------------------------------
TEACHER = {"source": "run", "run_id": "abcd1234"}


def test_dkd_has_its_own_alpha_beta_and_other_methods_fields_are_refused():
    spec = RunSpec.from_dict({"teacher": TEACHER, "logit": {"method": "dkd", "alpha": 2.0, "beta": 6.0}})
    assert (spec.logit.alpha, spec.logit.beta, spec.logit.ce_weight) == (2.0, 6.0, 1.0)
    assert set(spec.to_dict()["logit"]) == {"method", "alpha", "beta", "rho", "ce_weight", "warmup_epochs"}
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({"teacher": TEACHER, "logit": {"method": "logit_matching", "rho": 4}})
    assert err.value.problems == ["logit.rho: is not a known field of this method"]
    with pytest.raises(SpecError, match="unknown method 'crd2'; choose one of: .*kd"):
        RunSpec.from_dict({"logit": {"method": "crd2"}})
    with pytest.raises(SpecError, match="at is a feature method: give it as a hint pair's `preset`"):
        RunSpec.from_dict({"logit": {"method": "at"}})


def test_a_stored_spec_in_the_earlier_flat_form_still_loads():
    flat = {"method": "dkd", "rho": 4.0, "alpha": 0.1, "beta": 0.9, "soft_loss": "kl", "rho_squared": True,
            "dkd_alpha": 1.0, "dkd_beta": 8.0, "dkd_warmup_epochs": 20}
    spec = RunSpec.from_dict({"teacher": TEACHER, "logit": flat})
    # the earlier form's alpha was DKD's cross-entropy weight: a stored run keeps its meaning
    assert (spec.logit.alpha, spec.logit.beta, spec.logit.ce_weight, spec.logit.warmup_epochs) == (1.0, 8.0, 0.1, 20)
    for method in ("kd", "logit_matching"):
        old = RunSpec.from_dict({"teacher": TEACHER, "logit": {**flat, "method": method, "alpha": 0.3}})
        assert old.logit.method == method and old.logit.alpha == 0.3
    assert RunSpec.from_dict({"teacher": TEACHER, "logit": {**flat, "method": "kd"}}).method_label == "KD ρ=4"


def test_every_example_spec_loads():
    from kdcore.spec import load_spec_file

    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        specs, _ = load_spec_file(path)
        assert specs and specs[0].method_label


def test_method_label_names_every_method():
    spec = RunSpec.from_dict({"teacher": TEACHER, "logit": {"method": "dkd"},
                              "hints": [{"teacher_layer": "a", "student_layer": "b", "preset": "at"}]})
    assert spec.method_label == "at + DKD"
    assert RunSpec().method_label == "scratch"


# ---- a method outside the Φ/D shape, through the trainer ---------------------------------------------------
class ProbeParams(MethodParams):
    method: Literal["probe_relation"] = "probe_relation"
    weight: float = Field(0.5, ge=0, description="weight of the embedding-similarity term")


@pytest.fixture()
def probe_method():
    """A relation method that reads both embeddings, the indices and the epoch, and keeps a memory bank."""
    seen: dict[str, list] = {"indices": [], "epochs": [], "shapes": set()}

    class ProbeRelation(MethodLoss):
        def __init__(self, p: ProbeParams, ctx: BuildContext):
            super().__init__()
            self.p = p
            self.taps = (Tap("teacher", EMBEDDING), Tap("student", EMBEDDING), Tap("student", "fc1", "input"))
            self.dataset_size = ctx.dataset_size
            width = ctx.shape(Tap("student", EMBEDDING))[0]
            self.register_buffer("bank", torch.zeros(ctx.dataset_size, width))
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))

        def forward(self, batch: Batch):
            t, s = batch.teacher(EMBEDDING), batch.student(EMBEDDING)
            seen["indices"].append(batch.indices.clone())
            seen["epochs"].append(batch.epoch)
            seen["shapes"].add((tuple(t.shape[1:]), tuple(s.shape[1:]), tuple(batch.student("fc1", "input").shape[1:])))
            with torch.no_grad():
                self.bank[batch.indices] = s.detach()
                self.steps += 1
            gram = lambda e: F.normalize(e, dim=1) @ F.normalize(e, dim=1).t()  # noqa: E731
            return {"similarity": self.p.weight * (gram(s) - gram(t)).pow(2).mean()}

    register_method("probe_relation", family="relation", params=ProbeParams, title="Probe", paper="none",
                    description="test method", needs=Needs(embedding=True, indices=True, epoch=True))(ProbeRelation)
    yield seen
    registry._records.pop("probe_relation", None)


def digits_spec(**over) -> RunSpec:
    base = {"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 2, "batch_size": 128,
            "optimizer": {"name": "adamw", "lr": 0.003}, "probe_size": 0}
    return RunSpec.from_dict({**base, **over})


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(digits_spec(student="cnn_small", epochs=1), out)
    return out / "checkpoint.pt"


class StopAfter(RecordingCallbacks):
    def __init__(self, epochs_done: int):
        super().__init__()
        self.epochs_done = epochs_done

    def should_stop(self) -> bool:
        return len(self.epochs) >= self.epochs_done


def test_a_relation_method_gets_embeddings_indices_and_epoch_and_its_state_is_checkpointed(
        tmp_path, teacher_ckpt, probe_method):
    spec = digits_spec(teacher={"source": "checkpoint", "checkpoint": str(teacher_ckpt)},
                       losses=[{"method": "probe_relation", "weight": 2.0}])
    assert spec.method_label == "Probe + KD ρ=4"
    cb = StopAfter(1)
    first = train(spec, tmp_path, cb)
    assert first.status == "cancelled" and first.epochs_done == 1
    assert "loss/probe_relation_similarity" in cb.steps[-1][2]
    # the teacher's embedding (cnn_small: 64) and the student's (mlp_64: 64), and fc1's input (64 pixels)
    assert probe_method["shapes"] == {((64,), (64,), (64,))}
    indices = torch.cat(probe_method["indices"])
    size = first.info["transfer_size"]
    assert sorted(indices.tolist()) == list(range(size))  # each sample once per epoch, by its index
    assert set(probe_method["epochs"]) == {1}
    state = load_checkpoint(tmp_path / "checkpoint.pt")["methods"]
    steps_after_one = int(state["0.steps"])
    assert steps_after_one == first.step and state["0.bank"].abs().sum(1).gt(0).all()

    probe_method["epochs"].clear()
    second = train(spec, tmp_path, RecordingCallbacks())  # resumes: the bank and the step count come back
    assert second.status == "completed" and set(probe_method["epochs"]) == {2}
    assert int(load_checkpoint(tmp_path / "checkpoint.pt")["methods"]["0.steps"]) == second.step


def test_losses_need_a_teacher_and_a_registered_method(probe_method):
    with pytest.raises(SpecError, match="need a teacher"):
        digits_spec(losses=[{"method": "probe_relation"}])
    with pytest.raises(SpecError, match="kd is a logit method"):
        digits_spec(teacher=TEACHER, losses=[{"method": "kd"}])


def test_a_method_reading_a_layer_the_model_lacks_is_named_before_the_run_is_queued():
    from app import forms
    from kdcore.train.checks import check_spec

    spec = RunSpec.from_dict({"student": "mlp_64", "teacher": TEACHER,
                              "losses": [{"method": "rkd"}, {"method": "rkd", "student_layer": "no_such_layer"}]})
    problems = check_spec(spec, teacher_model="cnn_small")
    assert len(problems) == 1 and problems[0].startswith("losses.1: ") and "no_such_layer" in problems[0]
    assert forms.map_problems(problems, {"loss_1_method": "rkd"}) == {"loss_1_method": [forms._sentence(
        problems[0].removeprefix("losses.1: "))]}


# ---- the CLI listing -------------------------------------------------------------------------------------
def test_cli_lists_every_method_with_family_paper_and_parameters():
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "kdcore", "methods", "--json"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = {m["name"]: m for m in json.loads(out.stdout)["methods"]}
    for name, family in BUILT_INS.items():
        assert listed[name]["family"] == family and listed[name]["paper"]
    assert {p["name"]: p["default"] for p in listed["dkd"]["parameters"]}["ce_weight"] == 1.0
    text = subprocess.run([sys.executable, "-m", "kdcore", "methods"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120).stdout
    assert "dkd  (logit) Decoupled KD" in text and "Zhao et al." in text and "warmup_epochs = 20" in text


# ---- defects found against the references ------------------------------------------------------------------
def test_attention_map_uses_the_absolute_value_for_odd_p():
    from kdcore.losses import attention_map

    f = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = F.normalize(f.abs().pow(3).mean(1).flatten(1), dim=1)
    torch.testing.assert_close(attention_map(f, 3), expected)
    torch.testing.assert_close(attention_map(-f, 3), attention_map(f, 3))


def test_attention_of_large_half_precision_features_is_finite_and_matches_float32():
    from kdcore.losses import FeatureKD

    g = torch.Generator().manual_seed(1)
    f_t = torch.rand(2, 4, 4, 4, generator=g) * 600  # 300² overflows fp16
    f_s = torch.rand(2, 8, 4, 4, generator=g) * 600
    loss = FeatureKD((4, 4, 4), (8, 4, 4), phi_t="attention", phi_s="attention", distance="l2")
    half = loss(f_t.half(), f_s.half())
    assert torch.isfinite(half)
    torch.testing.assert_close(half, loss(f_t.half().float(), f_s.half().float()), rtol=1e-4, atol=1e-6)


def test_labels_outside_the_class_range_are_one_sentence():
    from kdcore.losses import build_logit_loss

    z = torch.randn(3, 10)
    with pytest.raises(KDError, match=r"class indices in 0…9 \(or -1 for unlabelled\), got 12"):
        build_logit_loss("kd")(z, z, torch.tensor([0, 12, -1]))
    with pytest.raises(KDError, match="got -3"):
        build_logit_loss("none")(z, None, torch.tensor([0, -3, 1]))


def test_the_trainer_refuses_labels_outside_the_dataset_classes_in_one_sentence():
    from kdcore.train.trainer import check_labels

    check_labels(torch.tensor([0, 9, -1]), 10)
    with pytest.raises(KDError, match=r"0…9 .* but 2 do not \(e.g. 10\)"):
        check_labels(torch.tensor([0, 10, 11, -1]), 10)


def test_a_last_batch_of_one_sample_joins_the_previous_one():
    from kdcore.data import TensorSplit, iterate_batches
    from kdcore.data.batches import num_batches

    split = TensorSplit(torch.arange(9.0).view(9, 1), torch.zeros(9, dtype=torch.long))
    sizes = [len(y) for _, y, _ in iterate_batches(split, 4, shuffle=True, generator=torch.Generator(),
                                                   merge_single=True)]
    assert sizes == [4, 5] and num_batches(9, 4, merge_single=True) == 2
    assert [len(y) for _, y, _ in iterate_batches(split, 4, shuffle=False)] == [4, 4, 1]


def test_a_run_whose_last_batch_has_one_sample_trains_a_bn1d_regressor(tmp_path, teacher_ckpt):
    from kdcore.data import load_dataset

    n = len(load_dataset("digits", val_fraction=0.1, seed=0).train)
    spec = digits_spec(teacher={"source": "checkpoint", "checkpoint": str(teacher_ckpt)}, epochs=1,
                       batch_size=n - 1, hints=[{"teacher_layer": "flatten", "student_layer": "fc1",
                                                 "preset": "fitnets"}])
    result = train(spec, tmp_path)
    assert result.status == "completed" and result.step == 1
