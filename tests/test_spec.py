import pytest
import yaml

from kdcore.spec import RunSpec, SpecError, expand_sweep, load_spec, load_spec_file


def problems_of(data):
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict(data)
    return err.value.problems


def test_defaults_are_valid_and_describe_plain_training():
    spec = RunSpec()
    assert spec.teacher is None and not spec.is_distillation
    assert spec.method_label == "scratch"


@pytest.mark.parametrize("data, field, words", [
    ({"logit": {"rho": 0}}, "logit.rho", "greater than 0"),
    ({"logit": {"rho": -2}}, "logit.rho", "greater than 0"),
    ({"logit": {"alpha": -0.1}}, "logit.alpha", "greater than or equal to 0"),
    ({"logit": {"alpha": 0, "beta": 0}}, "logit", "cannot both be 0"),
    ({"epochs": 0}, "epochs", "greater than or equal to 1"),
    ({"device": "gpu7"}, "device", "auto, cpu, mps, cuda or cuda:N"),
    ({"optimizer": {"name": "lion"}}, "optimizer.name", "'sgd' or 'adamw'"),
    ({"logit": {"rhoo": 4}}, "logit.rhoo", "not a known field"),
    ({"teacher": {"source": "run"}}, "teacher", "needs `run_id`"),
    ({"transfer": {"kind": "omit_classes"}}, "transfer", "at least one class"),
    ({"hints": [{"teacher_layer": "a", "student_layer": "b", "preset": "fitnets"}]}, "spec", "need a teacher"),
])
def test_bad_values_are_refused_naming_field_and_rule(data, field, words):
    problems = problems_of(data)
    assert any(p.startswith(field + ":") and words in p for p in problems), problems


def test_every_problem_is_reported_not_only_the_first():
    problems = problems_of({"logit": {"rho": 0}, "epochs": -1, "batch_size": 0})
    assert {p.split(":")[0] for p in problems} >= {"logit.rho", "epochs", "batch_size"}


def test_yaml_round_trip_is_exact():
    spec = RunSpec.from_dict({
        "name": "fmnist ofd", "dataset": {"name": "fashion-mnist", "augment": True},
        "student": "cnn_small",
        "teacher": {"source": "checkpoint", "checkpoint": "t.pt"},
        "logit": {"rho": 2.5, "alpha": 0.3, "beta": 0.7, "soft_loss": "ce", "rho_squared": False},
        "hints": [{"teacher_layer": "layer2", "student_layer": "stage2", "preset": "ofd"},
                  {"teacher_layer": "layer1", "student_layer": "stage1", "phi_t": "attention",
                   "phi_s": "attention", "distance": "l2", "weight": 1000.0}],
        "transfer": {"kind": "omit_classes", "omit_classes": [1, 3]},
        "schedule": {"name": "step", "milestones": [10, 20]}, "tags": ["a", "b"],
    })
    text = spec.to_yaml()
    again = RunSpec.from_yaml(text)
    assert again == spec
    assert again.to_yaml() == text
    assert yaml.safe_load(text)["logit"]["rho"] == 2.5


def test_invalid_yaml_and_non_mapping_are_one_sentence(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML"):
        RunSpec.from_yaml("logit: {rho: 4")
    with pytest.raises(SpecError, match="mapping"):
        RunSpec.from_yaml("- 1\n- 2\n")
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_sweep_expands_one_field_and_pairs(tmp_path):
    specs, sweep = expand_sweep({"name": "t", "teacher": {"source": "run", "run_id": "x"},
                                 "sweep": {"field": "logit.rho", "values": [1, 2, 4, 8, 16]}})
    assert [s.logit.rho for s in specs] == [1, 2, 4, 8, 16]
    assert sweep.paths == ["logit.rho"] and "logit.rho=4" in specs[2].name
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"teacher": {"source": "run", "run_id": "x"},
                                    "sweep": {"fields": ["logit.alpha", "logit.beta"], "values": [[0, 1], [0.5, 0.5], [1, 0]]}}))
    specs, _ = load_spec_file(path)
    assert [(s.logit.alpha, s.logit.beta) for s in specs] == [(0, 1), (0.5, 0.5), (1, 0)]


def test_sweep_value_that_breaks_the_spec_is_named():
    with pytest.raises(SpecError, match="logit.rho=0"):
        expand_sweep({"sweep": {"field": "logit.rho", "values": [1, 0]}})
