"""Hostile and careless input: refused before any work is done, in one sentence, at every entry point
(the CLI commands, the store API, the form's checks), leaving the store untouched."""
from __future__ import annotations

import pytest
import torch

from kdcore.cli import main
from kdcore.errors import KDError, ModelTooLargeError
from kdcore.jobs import RunStore
from kdcore.models import build_model
from kdcore.models.registry import parameter_count
from kdcore.spec import RunSpec, SpecError, expand_sweep, parse_spec_yaml
from kdcore.train.checkpoint import FORMAT, load_checkpoint, model_record, save_atomic
from kdcore.train.checks import check_spec

BOMB = "mlp_200000_200000"  # 40 billion parameters: 160 GB of weights if it were built
TOO_LARGE = "would have 40,015,200,010 parameters, more than the limit"


def spec_file(tmp_path, text: str, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and the error output of one command, checked to be one line without a traceback."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    if code != 0:
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return code, err


@pytest.fixture()
def bomb_checkpoint(tmp_path):
    """A 1 kB weights-only checkpoint that names a model of 40 billion parameters."""
    path = tmp_path / "bomb.pt"
    save_atomic({"format": FORMAT, "model": model_record(BOMB, 10, 1, 8), "state_dict": {}}, path)
    assert path.stat().st_size < 4096
    return path


# ---- models too large to build ----------------------------------------------------------------------

def test_the_parameter_count_is_known_without_building_the_model_at_that_size():
    for name in ("mlp_64", "mlp_800_800", "wrn_16_2", "wrn_10_3", "cnn_small", "resnet8x4", "lenet5", "vgg8"):
        for classes, channels, size in ((7, 1, 8 if name.startswith("mlp") else 32), (100, 3, 32)):
            built = build_model(name, classes, channels, size)
            assert parameter_count(name, classes, channels, size) == sum(p.numel() for p in built.parameters())
    assert parameter_count("wrn_10000_100", 10, 3, 32) > 10**12  # by formula, nothing is built
    # a fixed architecture made huge by the shape a checkpoint claims: counted, refused, never built
    with pytest.raises(ModelTooLargeError, match="resnet8 for 1000000000 classes would have 65,000,077,392"):
        build_model("resnet8", 10**9, 3, 32)
    with pytest.raises(ModelTooLargeError, match="cnn_small for 10 classes would have 28,800,065,546"):
        build_model("cnn_small", 10, 10**8, 32)


def test_a_model_too_large_is_refused_by_every_command_and_the_store(kd_home, tmp_path, capsys, bomb_checkpoint):
    student = spec_file(tmp_path, f"dataset: {{name: digits}}\nstudent: {BOMB}\nepochs: 1\n")
    code, err = cli(capsys, "layers", BOMB, "--dataset", "digits")
    assert code == 2 and TOO_LARGE in err
    code, err = cli(capsys, "submit", student)
    assert code == 2 and TOO_LARGE in err
    code, err = cli(capsys, "train", student, "--out", str(tmp_path / "out"))
    assert code == 2 and TOO_LARGE in err
    code, err = cli(capsys, "eval", str(bomb_checkpoint), "--dataset", "digits")
    assert code == 2 and "would have" in err and "parameters, more than the limit" in err
    store = RunStore()
    with pytest.raises(SpecError, match=f"student: .*{TOO_LARGE}"):
        store.submit({"dataset": {"name": "digits"}, "student": BOMB})
    kd = {"dataset": {"name": "digits"}, "student": "mlp_64",
          "teacher": {"source": "checkpoint", "checkpoint": str(bomb_checkpoint)}}
    with pytest.raises(SpecError, match="teacher.checkpoint: .*parameters, more than the limit"):
        store.submit(kd)
    assert store.list_runs() == []


def test_the_ceiling_is_configurable(monkeypatch):
    monkeypatch.setenv("KD_MAX_MODEL_PARAMS", "1000")
    with pytest.raises(ModelTooLargeError, match="mlp_64 for 10 classes would have 4,810 parameters, more than "
                                                 "the limit of 1,000"):
        build_model("mlp_64", 10, 1, 8)
    monkeypatch.setenv("KD_MAX_MODEL_PARAMS", "5000")
    assert build_model("mlp_64", 10, 1, 8) is not None


def test_an_uploaded_checkpoint_naming_a_huge_model_is_explained_and_blocks_launch(kd_home, bomb_checkpoint):
    from test_app_new_experiment import red_notes
    from test_app_support import app, no_exception

    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("upload").run()
    at.session_state["teacher_checkpoint_path"] = str(bomb_checkpoint)
    at.run()
    no_exception(at)
    assert any("parameters, more than the limit" in n for n in red_notes(at))
    assert at.button(key="launch").disabled


# ---- YAML alias bombs and oversized values ----------------------------------------------------------

ALIAS_BOMB = """\
dataset: {name: digits}
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
sweep: {field: logit.rho, values: [*g, *g, *g]}
"""


def test_a_yaml_alias_bomb_in_a_sweep_is_refused_in_one_short_sentence(kd_home, tmp_path, capsys):
    assert len(ALIAS_BOMB) < 700
    code, err = cli(capsys, "submit", spec_file(tmp_path, ALIAS_BOMB))
    assert code == 2 and "expands to more than 10,000 values" in err and len(err) < 300
    with pytest.raises(SpecError, match="expands to more than"):
        RunStore().submit_yaml(ALIAS_BOMB)
    shared = ["x"] * 100
    with pytest.raises(SpecError, match="expands to more than"):  # the same shape built in Python
        expand_sweep({"sweep": {"field": "tags", "values": [[shared] * 100] * 10}})
    assert RunStore().list_runs() == []


def test_messages_about_huge_values_stay_short(kd_home):
    long_value = "x" * 1_000_000
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({"student": long_value, "name": long_value, "device": long_value})
    assert len(str(err.value)) < 600
    with pytest.raises(SpecError) as err:
        expand_sweep({"sweep": {"field": "logit.rho", "values": [long_value]}})
    assert len(str(err.value)) < 600
    with pytest.raises(SpecError, match="a sweep of at most|at most 1000 items"):
        expand_sweep({"sweep": {"field": "seed", "values": list(range(5000))}})
    with pytest.raises(SpecError, match="characters; a spec has at most"):
        parse_spec_yaml("name: " + "x" * 2_000_000)


# ---- numbers, teacher weights and small things ------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("seed", 10**30, "seed: Input should be less than or equal to 4294967295"),
    ("logit", {"rho": float("inf")}, "logit.rho: Input should be a finite number"),
    ("optimizer", {"lr": float("nan")}, "optimizer.lr: Input should be a finite number"),
    ("transfer", {"kind": "noisy", "noise_std": float("inf")}, "transfer.noise_std: Input should be a finite number"),
    ("name", "a\x00b", "name: must not contain a NUL character"),
    ("tags", ["ok", "b\x00d"], "tags: must not contain a NUL character"),
])
def test_numbers_and_text_that_cannot_run_are_refused_at_submit(kd_home, field, value, message):
    with pytest.raises(SpecError, match=message):
        RunStore().submit({"dataset": {"name": "digits"}, "student": "mlp_64", field: value})


def test_yaml_infinity_and_a_huge_seed_are_refused_by_submit_not_by_the_worker(kd_home, tmp_path, capsys):
    path = spec_file(tmp_path, "dataset: {name: digits}\nseed: 1000000000000000000000000000000\nlogit: {rho: .inf}\n")
    code, err = cli(capsys, "submit", path)
    assert code == 2 and "logit.rho: Input should be a finite number" in err and "seed: " in err


@pytest.fixture(scope="module")
def mlp_weights(tmp_path_factory):
    """A bare state dict of mlp_64 for digits."""
    path = tmp_path_factory.mktemp("weights") / "mlp64.pt"
    torch.save(build_model("mlp_64", 10, 1, 8).state_dict(), path)
    return path


def test_a_teacher_whose_weights_do_not_fit_its_declared_model_is_refused_at_submit(kd_home, tmp_path, mlp_weights):
    kd = {"dataset": {"name": "digits"}, "student": "mlp_64",
          "teacher": {"source": "checkpoint", "checkpoint": str(mlp_weights), "model": "cnn_small"}}
    problems = check_spec(RunSpec.from_dict(kd))  # the form's check
    assert any(p.startswith("teacher.checkpoint: the checkpoint's weights do not fit cnn_small") for p in problems)
    with pytest.raises(SpecError, match="teacher.checkpoint: the checkpoint's weights do not fit cnn_small"):
        RunStore().submit(kd)
    # a KD Studio checkpoint whose weights are another model's
    lying = tmp_path / "lying.pt"
    save_atomic({"format": FORMAT, "model": model_record("cnn_small", 10, 1, 8),
                 "state_dict": torch.load(mlp_weights, weights_only=True)}, lying)
    kd["teacher"] = {"source": "checkpoint", "checkpoint": str(lying)}
    with pytest.raises(SpecError, match="weights do not fit cnn_small"):
        RunStore().submit(kd)
    kd["teacher"] = {"source": "checkpoint", "checkpoint": str(mlp_weights), "model": "mlp_64"}
    assert RunStore().submit(kd)  # the same weights declared as what they are
    assert len(RunStore().list_runs()) == 1


def test_train_says_a_sweep_is_a_sweep(kd_home, tmp_path, capsys):
    path = spec_file(tmp_path, "dataset: {name: digits}\nsweep: {field: logit.rho, values: [1, 2]}\n", "rho.yaml")
    code, err = cli(capsys, "train", path)
    assert code == 2 and "rho.yaml is a sweep" in err and "python -m kdcore submit" in err


def test_layers_with_zero_classes_names_the_option(capsys):
    code, err = cli(capsys, "layers", "cnn_small", "--dataset", "digits", "--num-classes", "0")
    assert code == 2 and err == "error: --num-classes must be at least 1, got 0."


def test_a_device_file_as_checkpoint_or_spec_is_not_read_and_not_called_missing(kd_home, tmp_path, capsys):
    with pytest.raises(KDError, match="checkpoint /dev/zero is not a regular file"):
        load_checkpoint("/dev/zero")
    with pytest.raises(KDError, match=f"checkpoint {tmp_path} is not a regular file"):
        load_checkpoint(tmp_path)
    with pytest.raises(KDError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    code, err = cli(capsys, "eval", "/dev/zero", "--dataset", "digits", "--model", "mlp_64")
    assert code == 2 and "not a regular file" in err
    code, err = cli(capsys, "submit", "/dev/zero")
    assert code == 2 and "spec file /dev/zero is not a regular file" in err
    with pytest.raises(SpecError, match="teacher.checkpoint: checkpoint /dev/zero is not a regular file"):
        RunStore().submit({"dataset": {"name": "digits"}, "student": "mlp_64",
                           "teacher": {"source": "checkpoint", "checkpoint": "/dev/zero", "model": "mlp_64"}})
